// The errors of the OPA REST client. Callers decide by class, never by message: an `OpaHttpError` is
// OPA refusing the request (a compile error, a bad path, a wrong token) and the same request will be
// refused again; an `OpaUnavailableError` is OPA unreachable, slow or failing on its side, worth a retry.
// OPA's own error JSON is kept as OPA sent it, because the status annotation shows it to users verbatim.
import type { RetryableCode } from '../util/error-codes.js';
import { PermanentError, RetryableError } from '../util/errors.js';

/** OPA's error JSON (`{"code":…,"message":…,"errors":[…]}`), kept as OPA sent it. */
export interface OpaErrorBody {
  code: string;
  message: string;
  errors?: unknown[];
}

/** Stable codes of `OpaUnavailableError`. */
export type OpaUnavailableCode = Extract<
  RetryableCode,
  'opa_unreachable' | 'opa_timeout' | 'opa_server_error' | 'opa_bad_response'
>;

/**
 * Parses an error answer into OPA's error JSON. A body that is not OPA's JSON (a proxy's HTML page,
 * plain text) becomes `{ code: 'opa_http_<status>', message: <the text> }`, so callers always get one shape.
 */
export function parseOpaErrorBody(status: number, text: string): OpaErrorBody {
  try {
    const parsed: unknown = JSON.parse(text);
    if (
      typeof parsed === 'object' &&
      parsed !== null &&
      typeof (parsed as Record<string, unknown>)['code'] === 'string' &&
      typeof (parsed as Record<string, unknown>)['message'] === 'string'
    ) {
      const body = parsed as OpaErrorBody;
      // `errors` is only kept when it has the documented shape; anything else would mislead readers.
      if (body.errors !== undefined && !Array.isArray(body.errors)) delete body.errors;
      return body;
    }
  } catch {
    // Not JSON: fall through to the plain-text shape below.
  }
  const trimmed = text.trim();
  return { code: `opa_http_${status}`, message: trimmed === '' ? `HTTP ${status}` : trimmed };
}

// Fields of OPA's errors[] are shown only when they are plain values; anything else is left out.
function plain(value: unknown, fallback: string): string {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : fallback;
}

// One line per compile error is what an operator needs in a log; the full list stays in `body.errors`.
function describeBody(body: OpaErrorBody): string {
  let text = `${body.code}: ${body.message}`;
  const errors = body.errors ?? [];
  const first: unknown = errors[0];
  if (typeof first === 'object' && first !== null) {
    const e = first as { code?: unknown; message?: unknown; location?: unknown };
    const loc = e.location as { file?: unknown; row?: unknown; col?: unknown } | undefined;
    const where =
      typeof loc === 'object' && loc !== null
        ? `${plain(loc.file, '')}:${plain(loc.row, '?')}:${plain(loc.col, '?')}: `
        : '';
    text += ` (${where}${plain(e.code, '')}: ${plain(e.message, '')}`;
    text += errors.length > 1 ? `, and ${errors.length - 1} more)` : ')';
  }
  return text;
}

/**
 * OPA refused the request with a 4xx answer (or another non-2xx, non-5xx status). `code` is OPA's own
 * code (`invalid_parameter` for compile errors, `unauthorized`, `resource_not_found`…), or
 * `opa_http_<status>` when the answer was not OPA's JSON.
 */
export class OpaHttpError extends PermanentError {
  declare readonly status: number;
  readonly body: OpaErrorBody;
  readonly method: string;
  /** The request path as sent (URL-encoded), e.g. `/v1/policies/ns/name/key.rego`. */
  readonly path: string;

  constructor(method: string, url: string, path: string, status: number, body: OpaErrorBody) {
    // OPA's own code is OPA's (body.code); ours says only that OPA refused.
    super('opa_refused', `${method} ${url}: OPA answered ${status} ${describeBody(body)}`, { status });
    this.body = body;
    this.method = method;
    this.path = path;
  }
}

/** OPA could not be reached, did not answer in time, or failed on its side (5xx). Worth a retry. */
export class OpaUnavailableError extends RetryableError {
  declare readonly code: OpaUnavailableCode;
  readonly method: string;
  /** The full URL of the request (without credentials). */
  readonly url: string;
  /** OPA's error JSON for a 5xx answer; undefined when there was no answer. */
  readonly body: OpaErrorBody | undefined;

  constructor(
    code: OpaUnavailableCode,
    method: string,
    url: string,
    reason: string,
    options: { cause?: unknown; status?: number; body?: OpaErrorBody } = {},
  ) {
    super(code, `${method} ${url} failed: ${reason}`, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      ...(options.status === undefined ? {} : { status: options.status }),
    });
    this.method = method;
    this.url = url;
    this.body = options.body;
  }
}

/**
 * The bearer token file could not be used (missing, unreadable, empty). Retryable: a secret volume can
 * appear or be repaired while we run, and the next call reads the file again.
 */
export class OpaTokenFileError extends RetryableError {
  readonly file: string;

  constructor(file: string, reason: string, cause?: unknown) {
    super('opa_token_file', `OPA bearer token file ${file}: ${reason}`, cause === undefined ? {} : { cause });
    this.file = file;
  }
}
