// opa-sync's error types: each has a stable `code` from the one table (error-codes.ts), an HTTP status
// where one applies (the table's, unless the error carries the status of an answer it got), and a
// `cause`. Retryable errors (transport failures, 5xx, timeouts) and permanent ones (OPA's 400 compile
// errors, bad input) are different classes, each taking only codes of its kind, so callers decide by
// type, never by message.
import { statusOf, type ErrorCode, type PermanentCode, type RetryableCode } from './error-codes.js';

export type { ErrorCode } from './error-codes.js';

export interface ErrorOptions {
  cause?: unknown;
  /** Overrides the table's status, e.g. with the status an upstream server answered. */
  status?: number;
}

/** Base class of every error opa-sync raises on purpose. */
export class OpaSyncError extends Error {
  readonly code: ErrorCode;
  readonly status: number | undefined;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = options.status ?? statusOf(code);
  }
}

/** Worth trying again later: the target was unreachable, timed out or failed on its side. */
export class RetryableError extends OpaSyncError {
  constructor(code: RetryableCode, message: string, options: ErrorOptions = {}) {
    super(code, message, options);
  }
}

/** Trying again with the same input gives the same answer: the input must change first. */
export class PermanentError extends OpaSyncError {
  constructor(code: PermanentCode, message: string, options: ErrorOptions = {}) {
    super(code, message, options);
  }
}

/** The configuration is unusable; `problems` lists every problem found, not only the first. */
export class ConfigError extends PermanentError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super('invalid_config', `invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = problems;
  }
}

/** Input from outside (a ConfigMap key, a file) that cannot be used as it is. */
export class InvalidInputError extends PermanentError {}

/** An error of the operating system (ENOENT, EACCES, ENOSPC, …), as Node reports failed system calls. */
export function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && 'syscall' in err;
}

export function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError');
}

/** A readable one-line message for any thrown value. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}
