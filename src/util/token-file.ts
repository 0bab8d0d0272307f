// Token files: a secret kept in a file and read again when the file changes, so that it can be rotated
// without a restart: rewritten in place, replaced atomically (write + rename), or swapped the way
// Kubernetes updates a Secret volume (a symlink swap of `..data`). This is the one reader behind the
// bundle server's bearer tokens (bundles/tokens.ts: every listed token, checked in constant time) and
// the OPA client's --opa-auth-token-file (opa/client.ts: the first line). It owns what they share:
// stat-based change detection (inode, size, mtime and ctime, so an atomic replace is seen even when
// size and mtime match), a size cap, splitting into trimmed lines, and errors that name the file.
// What a line means, and what a failure means, is each user's own.
import { readFileSync, statSync, type BigIntStats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { OpaSyncError, messageOf } from './errors.js';

/** A token file is a handful of lines; anything bigger is a wrong path, not a token list. */
export const MAX_TOKEN_FILE_BYTES = 1024 * 1024;
// How often a file is stat'ed at most, unless a read is forced: rotation is rare, checks are many.
const DEFAULT_RECHECK_MS = 1000;

/**
 * A token file that cannot be read or used. `reason` says why without the file, for callers that wrap
 * this in an error of their own that names it; the message names it.
 */
export class TokenFileError extends OpaSyncError {
  constructor(
    readonly file: string,
    readonly reason: string,
    cause?: unknown,
  ) {
    super('token_file_unreadable', `token file ${file}: ${reason}`, cause === undefined ? {} : { cause });
  }
}

/** What a read gives: the file's lines, and whether they differ from the previous read's. */
export interface TokenFileRead {
  /** Every line of the file, trimmed (so CRLF line ends and stray spaces never count); blank ones too. */
  readonly lines: readonly string[];
  /** True on the first read, and when the lines differ from those of the previous read. */
  readonly changed: boolean;
}

/** The lines of a token file's text, each trimmed. */
export function tokenFileLines(text: string): string[] {
  return text.split('\n').map((line) => line.trim());
}

function fingerprintOf(info: BigIntStats): string {
  return `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
}

function sameLines(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((line, i) => line === b[i]);
}

/**
 * Reads a token file, and again when it changes.
 *
 * @example
 * const reader = new TokenFileReader('/var/run/secrets/opa/token');
 * const first = reader.readSync().lines[0]; // at start: a bad path fails before anything runs
 * const { lines, changed } = await reader.read(); // later: read again only if the file changed
 * const fresh = await reader.read(true); // after a 401: read now, whatever the stat says
 */
export class TokenFileReader {
  /** The file, resolved to an absolute path: what every message names. */
  readonly file: string;
  private readonly recheckMs: number;
  private lines: readonly string[] | undefined;
  private fingerprint: string | undefined;
  /** performance.now() of the last attempt to stat or read the file. */
  private checkedAt = Number.NEGATIVE_INFINITY;
  /** The last attempt's error, when it failed. */
  private failure: TokenFileError | undefined;
  private pending: Promise<TokenFileRead> | undefined;
  private forcedNext: Promise<TokenFileRead> | undefined;

  /** `recheckMs`: the least time between two stats of the file by unforced reads (default 1 s). */
  constructor(file: string, options: { recheckMs?: number } = {}) {
    this.file = path.resolve(file);
    this.recheckMs = options.recheckMs ?? DEFAULT_RECHECK_MS;
  }

  /** Reads the file now, synchronously (for a check at start). Throws TokenFileError. */
  readSync(): TokenFileRead {
    try {
      const info = statSync(this.file, { bigint: true });
      this.checkSize(info.size);
      return this.succeed(this.accept(info, readFileSync(this.file)));
    } catch (err) {
      throw this.fail(err);
    }
  }

  /**
   * The file's lines as they are now. An unforced read stats the file at most once per `recheckMs`
   * (in between, it gives the last lines, or throws the last error again) and reads the file only when
   * its stat fingerprint changed; a forced read (after a 401, or a watch event) reads it whatever the
   * fingerprint and the time. Concurrent reads share one; a forced read asked for while another is under
   * way (it may have started before the change) runs once more after it, one for all such asks.
   * Rejects with TokenFileError.
   */
  read(force = false): Promise<TokenFileRead> {
    if (this.pending !== undefined) {
      if (!force) return this.pending;
      this.forcedNext ??= this.pending
        .catch(() => undefined)
        .then(() => {
          this.forcedNext = undefined;
          return this.read(true);
        });
      return this.forcedNext;
    }
    if (!force && performance.now() - this.checkedAt < this.recheckMs) {
      if (this.failure !== undefined) return Promise.reject(this.failure);
      if (this.lines !== undefined) return Promise.resolve({ lines: this.lines, changed: false });
    }
    this.pending = this.attempt(force).finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async attempt(force: boolean): Promise<TokenFileRead> {
    try {
      const info = await stat(this.file, { bigint: true });
      this.checkSize(info.size);
      if (!force && this.lines !== undefined && fingerprintOf(info) === this.fingerprint) {
        return this.succeed({ lines: this.lines, changed: false });
      }
      return this.succeed(this.accept(info, await readFile(this.file)));
    } catch (err) {
      throw this.fail(err);
    }
  }

  private succeed(result: TokenFileRead): TokenFileRead {
    this.checkedAt = performance.now();
    this.failure = undefined;
    return result;
  }

  /** Remembers the failure (given again by unforced reads until the next attempt) and returns it. */
  private fail(err: unknown): TokenFileError {
    this.checkedAt = performance.now();
    this.failure =
      err instanceof TokenFileError
        ? err
        : new TokenFileError(this.file, `cannot be read: ${messageOf(err)}`, err);
    return this.failure;
  }

  private checkSize(size: number | bigint): void {
    if (size > MAX_TOKEN_FILE_BYTES) {
      throw new TokenFileError(this.file, `is larger than ${MAX_TOKEN_FILE_BYTES} bytes: not a token file`);
    }
  }

  private accept(info: BigIntStats, bytes: Buffer): TokenFileRead {
    this.checkSize(bytes.length); // it may have grown between the stat and the read
    const lines = tokenFileLines(bytes.toString('utf8'));
    const changed = this.lines === undefined || !sameLines(this.lines, lines);
    this.lines = lines;
    this.fingerprint = fingerprintOf(info);
    return { lines, changed };
  }
}
