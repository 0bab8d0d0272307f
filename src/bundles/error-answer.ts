// How the bundle server answers an error, in one place for express's routes and the fast path: what a
// thrown error becomes (status, code, message) and how that is written — JSON `{code, message}` with
// the headers express's res.json() gave it, and WWW-Authenticate on a 401.
import type { ServerResponse } from 'node:http';
import { InvalidInputError, OpaSyncError, type ErrorCode } from '../util/errors.js';

const JSON_TYPE = 'application/json; charset=utf-8';

export interface ErrorAnswer {
  status: number;
  code: ErrorCode;
  message: string;
}

function isHttpError(
  err: unknown,
): err is { status: number; expose: boolean; type?: unknown; message: string } {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { status?: unknown; expose?: unknown };
  return typeof e.status === 'number' && e.status >= 400 && e.status < 500 && e.expose === true;
}

// body-parser's error types, as codes of our own.
const BODY_ERROR_CODES: Readonly<Record<string, ErrorCode>> = {
  'entity.too.large': 'request_too_large',
  'entity.parse.failed': 'invalid_json',
  'encoding.unsupported': 'unsupported_encoding',
  'charset.unsupported': 'unsupported_charset',
  'request.aborted': 'request_aborted',
};

/** The answer to a thrown error: its own status and code when it has them, a bare 500 otherwise. */
export function answerFor(err: unknown): ErrorAnswer {
  if (err instanceof OpaSyncError) {
    const status = err.status ?? (err instanceof InvalidInputError ? 400 : 500);
    // Our own errors with a deliberate status say what the client needs; an unexpected 500 says nothing.
    return status === 500 && err.status === undefined
      ? { status, code: 'internal_error', message: 'internal error' }
      : { status, code: err.code, message: err.message };
  }
  if (isHttpError(err)) {
    const code = typeof err.type === 'string' ? (BODY_ERROR_CODES[err.type] ?? 'bad_request') : 'bad_request';
    return { status: err.status, code, message: err.message };
  }
  return { status: 500, code: 'internal_error', message: 'internal error' };
}

/** Writes `answer` as JSON (headers only for HEAD); `close` adds Connection: close. */
export function writeErrorAnswer(
  res: ServerResponse,
  head: boolean,
  answer: ErrorAnswer,
  close: boolean,
): void {
  const body = JSON.stringify({ code: answer.code, message: answer.message });
  const headers = ['Content-Type', JSON_TYPE, 'Content-Length', String(Buffer.byteLength(body))];
  if (answer.status === 401) headers.push('WWW-Authenticate', 'Bearer realm="opa-sync"');
  if (close) headers.push('Connection', 'close');
  res.writeHead(answer.status, headers);
  if (head) res.end();
  else res.end(body);
}
