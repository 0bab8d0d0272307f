// A TLS certificate and key kept in files and given again to a running HTTPS server when the files
// change (`setSecureContext`), so that a rotated certificate (cert-manager, a Secret volume's symlink
// swap) is served without a restart. Change detection is stat-based, as for token files: inode, size,
// mtime and ctime of both files (following symlinks), checked every `recheckMs`. A pair that cannot be
// read or does not fit together is logged and the last good one kept. The bundle server reads its pair
// with `readTlsPair` too (once, at start).
import { statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { Server } from 'node:https';
import { createSecureContext } from 'node:tls';
import { InvalidInputError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export interface TlsFilePair {
  certFile: string;
  keyFile: string;
}

async function readTls(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new InvalidInputError('tls_file_unreadable', `cannot read ${file}: ${messageOf(err)}`, {
      cause: err,
    });
  }
}

/** The certificate and key, read now; throws `tls_file_unreadable` naming the file. */
export async function readTlsPair(pair: TlsFilePair): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = await Promise.all([readTls(pair.certFile), readTls(pair.keyFile)]);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new InvalidInputError(
      'tls_file_unreadable',
      `${pair.certFile} and ${pair.keyFile} are not a PEM certificate and its key: ${messageOf(err)}`,
      { cause: err },
    );
  }
  return { cert, key };
}

async function fingerprint(pair: TlsFilePair): Promise<string> {
  const parts = await Promise.all(
    [pair.certFile, pair.keyFile].map(async (file) => {
      const info = await stat(file, { bigint: true });
      return `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
    }),
  );
  return parts.join('|');
}

function fingerprintNow(pair: TlsFilePair): string {
  return [pair.certFile, pair.keyFile]
    .map((file) => {
      const info = statSync(file, { bigint: true, throwIfNoEntry: false });
      return info === undefined ? 'missing' : `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
    })
    .join('|');
}

/**
 * Watches the pair for `server` until the returned function is called.
 *
 * @example
 * const stop = reloadOnChange(server, { certFile, keyFile }, logger);
 * // … later
 * stop();
 */
export function reloadOnChange(
  server: Server,
  pair: TlsFilePair,
  logger: Logger,
  { recheckMs = 2000, onReload }: { recheckMs?: number; onReload?: () => void } = {},
): () => void {
  let last = fingerprintNow(pair);
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      try {
        const now = await fingerprint(pair);
        if (now === last) return;
        const { cert, key } = await readTlsPair(pair);
        server.setSecureContext({ cert, key });
        last = now;
        logger.info({ certFile: pair.certFile }, 'admission webhook certificate reloaded');
        onReload?.();
      } catch (err) {
        // Mid-rotation (one file new, the other not yet) or broken: the last good pair keeps serving.
        logger.warn(
          { err: messageOf(err), certFile: pair.certFile },
          'admission webhook certificate not reloaded',
        );
      } finally {
        busy = false;
      }
    })();
  }, recheckMs);
  timer.unref();
  return () => clearInterval(timer);
}
