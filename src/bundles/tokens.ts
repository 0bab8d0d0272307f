// Bearer tokens that the bundle server accepts, from a file with one token a line (blank lines and
// lines starting with '#' are ignored). The file is re-read when it changes, so tokens can be rotated
// without a restart, including by atomic replace (write + rename) and by Kubernetes Secret volumes
// (a symlink swap of `..data`). Tokens are compared in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

// A token file is a handful of lines; anything bigger is a wrong path, not a token list.
const MAX_FILE_BYTES = 1024 * 1024;
// fs.watch can miss events (network file systems, some containers): a stat check catches up.
const STAT_INTERVAL_MS = 1000;

/** The tokens of a file's text, as SHA-256 digests. */
export function parseTokens(text: string): Buffer[] {
  const digests: Buffer[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    digests.push(digest(line));
  }
  return digests;
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function fingerprint(s: Stats): string {
  return `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
}

export class TokenFile {
  private readonly file: string;
  private readonly logger: Logger;
  private digests: Buffer[];
  private seen: string;
  private lastStatCheck = Date.now();
  private watcher: FSWatcher | undefined;
  private reloading: Promise<void> | undefined;
  private reloadAgain = false;
  private closed = false;

  /** Reads the file at once; throws InvalidInputError when it cannot be read, so a bad path fails at start. */
  constructor(file: string, logger: Logger) {
    this.file = path.resolve(file);
    this.logger = logger;
    try {
      const info = statSync(this.file);
      if (info.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
      this.digests = parseTokens(readFileSync(this.file, 'utf8'));
      this.seen = fingerprint(info);
    } catch (err) {
      throw new InvalidInputError(
        'token_file_unreadable',
        `cannot read the token file ${this.file}: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
    if (this.digests.length === 0) {
      this.logger.warn({ file: this.file }, 'the token file holds no token: every request will be refused');
    }
    this.startWatching();
  }

  /** Whether `Authorization: Bearer <token>` names one of the file's tokens. */
  check(authorizationHeader: string | undefined): boolean {
    this.maybeStatCheck();
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
    const base = path.basename(this.file);
    try {
      // The folder, not the file: a watch on the file follows the old inode after an atomic replace.
      this.watcher = watch(path.dirname(this.file), { persistent: false }, (_event, name) => {
        // `..data` and friends are how Kubernetes swaps a Secret volume's content.
        if (name === null || name === base || name.startsWith('..')) this.reload();
      });
      this.watcher.on('error', (err) => {
        this.logger.warn(
          { err, file: this.file },
          'watching the token file failed; falling back to stat checks',
        );
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      this.logger.warn({ err, file: this.file }, 'cannot watch the token file; falling back to stat checks');
    }
  }

  private maybeStatCheck(): void {
    const now = Date.now();
    if (this.closed || now - this.lastStatCheck < STAT_INTERVAL_MS) return;
    this.lastStatCheck = now;
    stat(this.file).then(
      (info) => {
        if (fingerprint(info) !== this.seen) this.reload();
      },
      (err: unknown) => {
        // A missing file during a replace is normal; the last good tokens stay in force.
        this.logger.debug({ err, file: this.file }, 'stat of the token file failed');
      },
    );
  }

  /** Re-reads the file; bursts of events coalesce into one read in flight plus at most one more. */
  private reload(): void {
    if (this.closed) return;
    if (this.reloading !== undefined) {
      this.reloadAgain = true;
      return;
    }
    this.reloading = this.read().finally(() => {
      this.reloading = undefined;
      if (this.reloadAgain) {
        this.reloadAgain = false;
        this.reload();
      }
    });
  }

  private async read(): Promise<void> {
    try {
      const info = await stat(this.file);
      if (info.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
      const text = await readFile(this.file, 'utf8');
      if (this.closed) return;
      const before = this.digests.length;
      this.digests = parseTokens(text);
      this.seen = fingerprint(info);
      this.logger.info({ file: this.file, tokens: this.digests.length, before }, 'token file reloaded');
    } catch (err) {
      // Keep the last good tokens: locking every OPA out because of a half-done rotation is worse.
      this.logger.warn(
        { err, file: this.file },
        'cannot re-read the token file; keeping the previous tokens',
      );
    }
  }
}
