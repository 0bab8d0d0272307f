// The bundle archive: a tar of regular files, written with tar-stream, then gzip. Every field that could
// carry the host or the clock is fixed (mode 0644, uid/gid 0, empty user and group names, mtime 0; gzip
// without a name or timestamp and with a fixed OS byte), so the same files in the same order give the
// same bytes on every replica (DESIGN.md habit 10), for a given tar-stream version and zlib build.
//
// An `ArchiveWriter` keeps what it wrote last: each file's tar entry (header, content, padding) and the
// compressed chunks of the archive (gzip-chunks.ts), so that a rebuild that changes one file of a
// thousand encodes one entry and compresses a few kilobytes. The chunks are cut by a rule of the entries
// alone (names, sizes), never by history, so a writer with a cache and a fresh one give the same bytes.
import { createHash } from 'node:crypto';
import tar from 'tar-stream';
import { compareUtf8 } from '../util/utf8.js';
import { compressChunk, gzipOfChunks, type CompressedChunk } from './gzip-chunks.js';

export interface ArchiveFile {
  /** The entry name, written as is (bundle entries start with '/'). */
  name: string;
  content: Buffer;
  /** Hex SHA-256 of `content`, when the caller has it already (it keys the chunk cache). */
  digest?: string | undefined;
}

/**
 * The gzip level. Measured on the benchmark's 10 MB data.json (`npm run bench -- rebuild` makes it):
 * level 9 gives 1.35 MB in 160–190 ms, level 6 1.46 MB in 57–75 ms, level 1 1.60 MB in 16 ms. Only the
 * chunks that changed are compressed, on zlib's thread pool, so level 9's time is paid once per data
 * change (a policy edit compresses some 50–120 KB), and its 8 % is saved on every download.
 */
export const GZIP_LEVEL = 9;
/** Content at least this long gets chunks of its own (a data document), instead of sharing one. */
const LARGE_CONTENT = 64 * 1024;
/** A large entry's tar bytes are compressed in pieces this long, in parallel on the thread pool. */
const PIECE = 1024 * 1024;
/** A run of small entries ends after an entry whose name hashes to 0 modulo this: ~32 entries a chunk. */
const GROUP_MODULUS = 32;
/** Entries that change on every build get chunks of their own, so that their neighbours stay cached. */
const OWN_CHUNK = new Set(['/.manifest', '.manifest', '/.signatures.json', '.signatures.json']);
const END_OF_TAR = Buffer.alloc(1024);
const END_KEY = '\0end';

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

/** Zero bytes, for the padding of a tar entry to a whole block (less than 512 bytes). */
const ZEROS = Buffer.alloc(512);

/** The zeros that pad `size` bytes of content to a whole 512-byte block. */
function paddingOf(size: number): Buffer {
  return ZEROS.subarray(0, (512 - (size % 512)) % 512);
}

/**
 * One file's tar headers (PAX and ustar): its entry is those, its content, then its padding. A tar is
 * its entries one after another and then 1,024 zero bytes; no entry depends on another. Only the headers
 * are kept (copied out of tar-stream's output), so that a 10 MB document is not held twice.
 */
async function tarHeaders(file: ArchiveFile): Promise<Buffer> {
  const whole = await packTar([file]);
  const padding = paddingOf(file.content.length).length;
  const headerLength = whole.length - END_OF_TAR.length - padding - file.content.length;
  // The layout this relies on, checked once per new entry (a tar-stream that wrote otherwise fails here).
  if (
    headerLength < 512 ||
    !whole.subarray(headerLength, headerLength + file.content.length).equals(file.content)
  ) {
    throw new Error(`tar-stream wrote the entry of ${JSON.stringify(file.name)} in a layout not understood`);
  }
  return Buffer.from(whole.subarray(0, headerLength));
}

function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** FNV-1a of a name: cheap, and the same on every replica. */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i += 1) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** The work of one `ArchiveWriter.pack`. */
export interface PackStats {
  /** Tar entries encoded (not taken from the cache). */
  entriesEncoded: number;
  /** Chunks in the archive, and how many of them (with how many bytes of tar) were compressed. */
  chunks: number;
  chunksCompressed: number;
  bytesCompressed: number;
}

/** A file's tar entry, numbered (a new number for every new content of a name). */
interface Entry {
  content: Buffer;
  digest: string;
  /** The tar headers; the entry is these, `content`, and `paddingOf(content.length)`. */
  headers: Buffer;
  id: number;
}

/** The parts of an entry's tar bytes. */
function entryParts(entry: Entry): Buffer[] {
  return [entry.headers, entry.content, paddingOf(entry.content.length)];
}

/** The bytes from `start` to `end` of the concatenation of `parts`, as slices of them (no copy). */
function sliceOf(parts: readonly Buffer[], start: number, end: number): Buffer[] {
  const slices: Buffer[] = [];
  let offset = 0;
  for (const part of parts) {
    const from = Math.max(start, offset);
    const to = Math.min(end, offset + part.length);
    if (from < to) slices.push(part.subarray(from - offset, to - offset));
    offset += part.length;
  }
  return slices;
}

interface Piece {
  key: string;
  /** The tar bytes this chunk compresses, as a list (concatenated only when it must be compressed). */
  parts: Buffer[];
}

/**
 * Writes tar.gz archives, reusing the entries and compressed chunks of the archive it wrote before.
 * The bytes are those a fresh writer gives for the same files (the cache only saves work).
 *
 * @example
 * const writer = new ArchiveWriter();
 * const first = await writer.pack(files);
 * const second = await writer.pack([...files.slice(1), changed]); // re-encodes only `changed`
 */
export class ArchiveWriter {
  private entries = new Map<string, Entry>();
  private chunks = new Map<string, CompressedChunk>();
  /** Numbers each encoded entry: a chunk's cache key is its entries' numbers, not their names. */
  private nextEntry = 0;
  /** What the last `pack` had to do (the rest came from the cache): for logs, benchmarks and tests. */
  lastPack: PackStats = { entriesEncoded: 0, chunks: 0, chunksCompressed: 0, bytesCompressed: 0 };

  /** The tar.gz of the files, sorted by name (UTF-8 bytes). */
  async pack(files: readonly ArchiveFile[]): Promise<Buffer> {
    const sorted = [...files].sort((a, b) => compareUtf8(a.name, b.name));
    const stats: PackStats = { entriesEncoded: 0, chunks: 0, chunksCompressed: 0, bytesCompressed: 0 };
    const entries = new Map<string, Entry>();
    const missing: { file: ArchiveFile; digest: string }[] = [];
    for (const file of sorted) {
      const cached = this.entries.get(file.name);
      if (cached !== undefined && cached.content === file.content) {
        entries.set(file.name, cached);
        continue;
      }
      const digest = file.digest ?? sha256(file.content);
      if (cached !== undefined && cached.digest === digest)
        entries.set(file.name, { ...cached, content: file.content });
      else missing.push({ file, digest });
    }
    stats.entriesEncoded = missing.length;
    await Promise.all(
      missing.map(async ({ file, digest }) => {
        const headers = await tarHeaders(file);
        entries.set(file.name, { content: file.content, digest, headers, id: (this.nextEntry += 1) });
      }),
    );
    this.entries = entries;

    const pieces = this.pieces(sorted, entries);
    const chunks = new Map<string, CompressedChunk>();
    const compressing: Promise<void>[] = [];
    for (const piece of pieces) {
      const cached = this.chunks.get(piece.key);
      if (cached !== undefined) {
        chunks.set(piece.key, cached);
        continue;
      }
      const data = piece.parts.length === 1 ? (piece.parts[0] as Buffer) : Buffer.concat(piece.parts);
      stats.chunksCompressed += 1;
      stats.bytesCompressed += data.length;
      compressing.push(compressChunk(data, GZIP_LEVEL).then((chunk) => void chunks.set(piece.key, chunk)));
    }
    await Promise.all(compressing);
    this.chunks = chunks;
    stats.chunks = pieces.length;
    this.lastPack = stats;
    return gzipOfChunks(
      pieces.map((piece) => {
        const chunk = chunks.get(piece.key);
        if (chunk === undefined) throw new Error(`no compressed chunk for ${piece.key}`);
        return chunk;
      }),
      GZIP_LEVEL,
    );
  }

  /** The tar, cut into the chunks that are compressed (and cached) one by one. */
  private pieces(sorted: readonly ArchiveFile[], entries: Map<string, Entry>): Piece[] {
    const pieces: Piece[] = [];
    let group: Piece = { key: '', parts: [] };
    const endGroup = (): void => {
      if (group.parts.length > 0) pieces.push(group);
      group = { key: '', parts: [] };
    };
    for (const file of sorted) {
      const entry = entries.get(file.name);
      if (entry === undefined) throw new Error(`no tar entry for ${file.name}`);
      if (OWN_CHUNK.has(file.name) || file.content.length >= LARGE_CONTENT) {
        endGroup();
        const parts = entryParts(entry);
        const length = parts.reduce((sum, part) => sum + part.length, 0);
        for (let at = 0, n = 0; at < length; at += PIECE, n += 1) {
          pieces.push({ key: `${entry.id}#${n}`, parts: sliceOf(parts, at, Math.min(at + PIECE, length)) });
        }
        continue;
      }
      group.key += `${entry.id},`;
      group.parts.push(...entryParts(entry));
      if (nameHash(file.name) % GROUP_MODULUS === 0) endGroup();
    }
    endGroup();
    pieces.push({ key: END_KEY, parts: [END_OF_TAR] });
    return pieces;
  }
}

/** The tar.gz of the given files, sorted by name (UTF-8 bytes): what `buildBundle` emits. */
export async function packBundle(files: readonly ArchiveFile[]): Promise<Buffer> {
  return new ArchiveWriter().pack(files);
}
