// The error the Kubernetes adapters raise for an answer that trying again will not change (a 4xx other
// than 429), with the HTTP status. Transport failures, timeouts, 5xx and 429 are RetryableError instead.
import { PermanentError } from '../util/errors.js';

export class KubeApiError extends PermanentError {}
