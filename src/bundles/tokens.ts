// Bearer tokens that the bundle server accepts, from a file with one token a line (blank lines and
// lines starting with '#' are ignored). The file is read by util/token-file.ts, which re-reads it when
// it changes; this module adds what only the server needs: a watch on the file's folder, so that a
// rotation (in place, by atomic replace, or by a Kubernetes Secret volume's symlink swap of `..data`)
// is seen at once rather than on the next stat check, keeping the last good tokens when a re-read
// fails, and the check itself, in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { InvalidInputError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { TokenFileError, TokenFileReader, tokenFileLines } from '../util/token-file.js';

/** The tokens listed in a file's lines (blank lines and '#' comments left out), as SHA-256 digests. */
function digestsOf(lines: readonly string[]): Buffer[] {
  return lines.filter((line) => line !== '' && !line.startsWith('#')).map(digest);
}

/** The tokens of a file's text, as SHA-256 digests. */
export function parseTokens(text: string): Buffer[] {
  return digestsOf(tokenFileLines(text));
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export class TokenFile {
  private readonly reader: TokenFileReader;
  private readonly logger: Logger;
  private digests: Buffer[];
  private watcher: FSWatcher | undefined;
  /** The last error of a check made on a request, so that one failure is logged once. */
  private lastCheckError: unknown;
  private closed = false;

  /** Reads the file at once; throws InvalidInputError when it cannot be read, so a bad path fails at start. */
  constructor(file: string, logger: Logger) {
    this.reader = new TokenFileReader(file);
    this.logger = logger;
    try {
      this.digests = digestsOf(this.reader.readSync().lines);
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

  /** Whether `Authorization: Bearer <token>` names one of the file's tokens. */
  check(authorizationHeader: string | undefined): boolean {
    // The stat check catches up when the watch misses events (network file systems, some containers).
    this.refresh(false);
    if (authorizationHeader === undefined) return false;
    const match = /^\s*bearer\s+(\S+)\s*$/i.exec(authorizationHeader);
    if (match?.[1] === undefined) return false;
    const presented = digest(match[1]);
    // Every stored digest is compared, so the time taken says nothing about which one matched; the
    // digests all have one length, so the length of the presented token does not show either.
    let ok = false;
    for (const known of this.digests) {
      if (timingSafeEqual(presented, known)) ok = true;
    }
    return ok;
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
        this.digests = digestsOf(lines);
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
