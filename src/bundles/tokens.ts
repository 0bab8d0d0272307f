// Bearer tokens that the bundle server accepts, from a file with one token a line (blank lines and
// lines starting with '#' are ignored). The file is read by util/token-file.ts, which re-reads it when
// it changes; this module adds what only the server needs: a watch on the file's folder, so that a
// rotation (in place, by atomic replace, or by a Kubernetes Secret volume's symlink swap of `..data`)
// is seen at once rather than on the next stat check, keeping the last good tokens when a re-read
// fails, and the check itself: on every bundle request, so it parses the header in place (no regex
// match, no promise) and compares with util/secret-compare.ts (timingSafeEqual over digests, the known
// tokens digested once per read of the file), which takes a time that says nothing about the tokens.
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { InvalidInputError, messageOf } from '../util/errors.js';
import { matchesAnySecret, secretDigest } from '../util/secret-compare.js';
import type { Logger } from '../util/logger.js';
import { TokenFileError, TokenFileReader, tokenFileLines } from '../util/token-file.js';

// As often as the reader stats the file at most: a check only asks it when that could find something.
const RECHECK_MS = 1000;

/** The tokens listed in a file's lines (blank lines and '#' comments left out). */
function tokensOf(lines: readonly string[]): string[] {
  return lines.filter((line) => line !== '' && !line.startsWith('#'));
}

/** The tokens of a file's text. */
export function parseTokens(text: string): string[] {
  return tokensOf(tokenFileLines(text));
}

/** `\s` of a JavaScript RegExp, as a char code test (the rule `^\s*bearer\s+(\S+)\s*$` had). */
function isSpace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d);
  if (c < 0xa0) return false;
  return (
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

const BEARER = 'bearer';

/**
 * Whether `header` is `Bearer <a token whose digest is in known>`: optional spaces, the scheme in any
 * case, spaces, one run of non-spaces, optional spaces. Reads the header in place; the token is compared
 * with matchesAnySecret (timingSafeEqual over SHA-256 digests, every known token visited), so its time
 * depends on the number of tokens, not on any token's content or length.
 */
export function bearerMatches(header: string, known: readonly Buffer[]): boolean {
  const n = header.length;
  let i = 0;
  while (i < n && isSpace(header.charCodeAt(i))) i += 1;
  if (n - i < BEARER.length) return false;
  for (let k = 0; k < BEARER.length; k += 1) {
    // ASCII letters only: `| 0x20` lower-cases them, and maps nothing else onto a lower-case letter.
    if ((header.charCodeAt(i + k) | 0x20) !== BEARER.charCodeAt(k)) return false;
  }
  i += BEARER.length;
  if (i >= n || !isSpace(header.charCodeAt(i))) return false;
  while (i < n && isSpace(header.charCodeAt(i))) i += 1;
  const start = i;
  while (i < n && !isSpace(header.charCodeAt(i))) i += 1;
  const end = i;
  while (i < n && isSpace(header.charCodeAt(i))) i += 1;
  if (i !== n || end === start) return false;
  return matchesAnySecret(header.slice(start, end), known);
}

export class TokenFile {
  private readonly reader: TokenFileReader;
  private readonly logger: Logger;
  /** The tokens' digests, what a check compares with (util/secret-compare.ts); the tokens are not kept. */
  private digests: Buffer[];
  /** performance.now() after which a check asks the reader whether the file changed. */
  private recheckAt = 0;
  private watcher: FSWatcher | undefined;
  /** The last error of a check made on a request, so that one failure is logged once. */
  private lastCheckError: unknown;
  private closed = false;

  /** Reads the file at once; throws InvalidInputError when it cannot be read, so a bad path fails at start. */
  constructor(file: string, logger: Logger) {
    this.reader = new TokenFileReader(file);
    this.logger = logger;
    try {
      this.digests = tokensOf(this.reader.readSync().lines).map(secretDigest);
    } catch (err) {
      const reason = err instanceof TokenFileError ? err.reason : messageOf(err);
      throw new InvalidInputError(
        'token_file_unreadable',
        `cannot read the token file ${this.reader.file}: ${reason}`,
        { cause: err },
      );
    }
    if (this.digests.length === 0) {
      this.logger.warn(
        { file: this.reader.file },
        'the token file holds no token: every request will be refused',
      );
    }
    this.startWatching();
  }

  /** Whether `Authorization: Bearer <token>` names one of the file's tokens, in constant time. */
  check(authorizationHeader: string | undefined): boolean {
    // The stat check catches up when the watch misses events (network file systems, some containers);
    // asked at most as often as the reader would stat, so that most checks start no read at all.
    const now = performance.now();
    if (now >= this.recheckAt) {
      this.recheckAt = now + RECHECK_MS;
      this.refresh(false);
    }
    if (authorizationHeader === undefined) return false;
    return bearerMatches(authorizationHeader, this.digests);
  }

  /** How many tokens are loaded (never the tokens themselves); for logs and tests. */
  count(): number {
    return this.digests.length;
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
  }

  private startWatching(): void {
    const file = this.reader.file;
    const base = path.basename(file);
    try {
      // The folder, not the file: a watch on the file follows the old inode after an atomic replace.
      this.watcher = watch(path.dirname(file), { persistent: false }, (_event, name) => {
        // `..data` and friends are how Kubernetes swaps a Secret volume's content.
        if (name === null || name === base || name.startsWith('..')) this.refresh(true);
      });
      this.watcher.on('error', (err) => {
        this.logger.warn({ err, file }, 'watching the token file failed; falling back to stat checks');
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      this.logger.warn({ err, file }, 'cannot watch the token file; falling back to stat checks');
    }
  }

  /**
   * Reads the file again in the background: `force` after a watch event; otherwise (on a request) only
   * if its stat changed, at most once a second (the reader's own limit). A failure keeps the last good
   * tokens: locking every OPA out because of a half-done rotation is worse.
   */
  private refresh(force: boolean): void {
    if (this.closed) return;
    const file = this.reader.file;
    this.reader.read(force).then(
      ({ lines, changed }) => {
        this.lastCheckError = undefined;
        if (this.closed || !changed) return;
        const before = this.digests.length;
        this.digests = tokensOf(lines).map(secretDigest);
        this.logger.info({ file, tokens: this.digests.length, before }, 'token file reloaded');
      },
      (err: unknown) => {
        if (this.closed) return;
        if (force) {
          this.logger.warn({ err, file }, 'cannot re-read the token file; keeping the previous tokens');
        } else if (err !== this.lastCheckError) {
          // A missing file during a replace is normal, and the watch reports the rest.
          this.lastCheckError = err;
          this.logger.debug({ err, file }, 'stat of the token file failed; keeping the previous tokens');
        }
      },
    );
  }
}
