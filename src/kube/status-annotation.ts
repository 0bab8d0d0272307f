// The one place that renders an outcome into the policy-status annotation's value, byte-exact and with
// a fixed key order: `{"status":"ok"}`, or `{"status":"error","error":E}` where E is one error object
// (OPA's body, or our {code, message}) or an array of them when several keys failed.
import type { LoadError } from '../model/outcome.js';

export const DEFAULT_STATUS_ANNOTATION = 'openpolicyagent.org/policy-status';
/** kube-mgmt 7.0.3+'s status key; with it, opa-sync also writes kube-mgmt's retries key beside it. */
export const KUBE_MGMT_STATUS = 'openpolicyagent.org/kube-mgmt-status';
export const KUBE_MGMT_RETRIES = 'openpolicyagent.org/kube-mgmt-retries';

function ordered(error: LoadError): LoadError {
  return error.errors === undefined
    ? { code: error.code, message: error.message }
    : { code: error.code, message: error.message, errors: error.errors };
}

export function renderStatus(errors: readonly LoadError[]): string {
  const [only] = errors;
  if (only === undefined) return '{"status":"ok"}';
  const error = errors.length === 1 ? ordered(only) : errors.map(ordered);
  return JSON.stringify({ status: 'error', error });
}
