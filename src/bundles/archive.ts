// The bundle archive: a tar of regular files, written with tar-stream, then gzip. Every field that could
// carry the host or the clock is fixed (mode 0644, uid/gid 0, empty user and group names, mtime 0; gzip
// without a name or timestamp and with a fixed OS byte), so the same files in the same order give the
// same bytes on every replica (DESIGN.md habit 10), for a given tar-stream version and zlib build.
import { promisify } from 'node:util';
import { constants as zlibConstants, gzip } from 'node:zlib';
import tar from 'tar-stream';
import { compareUtf8 } from '../util/utf8.js';

export interface ArchiveFile {
  /** The entry name, written as is (bundle entries start with '/'). */
  name: string;
  content: Buffer;
}

const gzipAsync = promisify(gzip);

/**
 * Whether a name fits the ustar name field as it is: printable ASCII, at most 100 bytes. tar-stream
 * would put a longer ASCII name into the ustar prefix field, split at a '/', and drop the leading '/'
 * doing so (OPA would still find the file, but the entry would not be named as `BuiltBundle.files`
 * says); a PAX `path` record keeps the name whole, and Go's archive/tar, OPA's reader, reads it.
 * Non-ASCII names get a PAX record from tar-stream anyway.
 */
function fitsUstarName(name: string): boolean {
  return /^[\x20-\x7e]{1,100}$/.test(name);
}

/**
 * A tar archive of regular files, in the given order, with fixed metadata (mode 0644, uid/gid 0, empty
 * user/group names, mtime 0). Names that do not fit the ustar name field get a PAX `path` record.
 *
 * @example
 * const tarBytes = await packTar([{ name: '/a/x.rego', content: Buffer.from('package a\n') }]);
 */
export async function packTar(files: readonly ArchiveFile[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { name, content } of files) {
    // Every field given, none left to tar-stream's defaults.
    const header: tar.Header = {
      name,
      type: 'file',
      size: content.length,
      mode: 0o644,
      uid: 0,
      gid: 0,
      uname: '',
      gname: '',
      mtime: new Date(0), // the epoch, never the build time (tar-stream's default is now)
      linkname: '',
      devmajor: 0,
      devminor: 0,
      // tar-stream writes a PAX header, with a `path` record holding the whole name, when `pax` is set.
      pax: fitsUstarName(name) ? null : {},
    };
    pack.entry(header, content);
  }
  pack.finalize();
  // The entries are queued in memory; reading the stream drives tar-stream through them in order.
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** gzip with a fixed level, no file name, mtime 0 and a fixed OS byte: the same tar gives the same bytes. */
export async function gzipDeterministic(data: Buffer): Promise<Buffer> {
  const out = await gzipAsync(data, {
    level: 9,
    strategy: zlibConstants.Z_DEFAULT_STRATEGY,
    memLevel: 8,
    windowBits: 15,
  });
  // Byte 9 is the OS that wrote the stream (zlib fills in its build platform); it is outside the CRC.
  out[9] = 3; // Unix
  return out;
}

/** The tar.gz of the given files, sorted by name (UTF-8 bytes): what `buildBundle` emits. */
export async function packBundle(files: readonly ArchiveFile[]): Promise<Buffer> {
  const sorted = [...files].sort((a, b) => compareUtf8(a.name, b.name));
  return gzipDeterministic(await packTar(sorted));
}
