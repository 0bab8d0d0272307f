// The result of making one target (OPA, a bundle) match an origin's desired state: ok, or the errors,
// each either OPA's own error body or one of ours in the same {code, message} shape.
import type { ErrorCode } from '../util/error-codes.js';
import type { Origin } from './origin.js';

export interface LoadError {
  code: string;
  message: string;
  /** OPA's detailed errors (parse/compile errors with their location), exactly as OPA sent them. */
  errors?: unknown[];
}

/** One of opa-sync's own errors, in the shape of OPA's, with its code from the one table. */
export function ownError(code: ErrorCode, message: string): LoadError {
  return { code, message };
}

export interface Outcome {
  origin: Origin;
  /** Empty when everything of the origin is loaded. */
  errors: readonly LoadError[];
}
