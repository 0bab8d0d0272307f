// One gzip member made of independently compressed chunks, so that a rebuild compresses only the chunks
// whose bytes changed. Each chunk is a raw deflate stream of its own (no dictionary from the chunk
// before it) ended with a sync flush (non-final blocks, byte-aligned); their concatenation is a valid
// deflate stream, which one final empty block closes. The CRC-32 of the whole is combined from the
// chunks' CRCs (zlib's crc32_combine), so no byte is read twice. Compression runs on zlib's thread
// pool (the async API), never on the event loop.
//
// The output is a plain single-member gzip file (RFC 1952) that any reader takes, OPA's Go reader
// among them; for a given zlib build, the same chunks give the same bytes.
import { promisify } from 'node:util';
import { constants as zlibConstants, crc32, deflateRaw } from 'node:zlib';

const deflateRawAsync = promisify(deflateRaw);

/** A chunk, compressed: raw deflate ending with a sync flush, and the CRC-32 and length of its input. */
export interface CompressedChunk {
  deflated: Buffer;
  crc: number;
  length: number;
}

// The deflate bits of an empty final block with fixed codes (BFINAL=1, BTYPE=01, end-of-block code):
// what zlib itself writes when a stream that ended with a sync flush is finished.
const FINAL_EMPTY_BLOCK = Buffer.from([0x03, 0x00]);

/** Raw deflate of `data` at `level`, ended with a sync flush; off the event loop. */
export async function compressChunk(data: Buffer, level: number): Promise<CompressedChunk> {
  const deflated = await deflateRawAsync(data, {
    level,
    memLevel: 8,
    windowBits: 15,
    strategy: zlibConstants.Z_DEFAULT_STRATEGY,
    finishFlush: zlibConstants.Z_SYNC_FLUSH,
  });
  return { deflated, crc: crc32(data), length: data.length };
}

/** The XFL byte zlib writes for a level: 2 for maximum compression (9), 4 for the fastest (1). */
function extraFlags(level: number): number {
  return level === 9 ? 2 : level === 1 ? 4 : 0;
}

/**
 * The gzip file of the chunks' concatenation: a header without a name or a timestamp and with the OS
 * byte fixed to Unix, the chunks, a final empty block, then the combined CRC-32 and the length.
 */
export function gzipOfChunks(chunks: readonly CompressedChunk[], level: number): Buffer {
  const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extraFlags(level), 3]);
  let crc = 0;
  let length = 0;
  for (const chunk of chunks) {
    crc = crc32Combine(crc, chunk.crc, chunk.length);
    length += chunk.length;
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc >>> 0, 0);
  trailer.writeUInt32LE(length % 0x1_0000_0000, 4); // ISIZE: the length modulo 2^32
  return Buffer.concat([header, ...chunks.map((c) => c.deflated), FINAL_EMPTY_BLOCK, trailer]);
}

// ---------------------------------------------------------------------------------------------------
// CRC-32 combination, as zlib's crc32_combine does it (1.2.12 and later): the CRC of A‖B is crc(A)
// times x^(8·len(B)) modulo the CRC polynomial, plus crc(B); polynomials are 32-bit words, reflected
// (the bit 2^31 is x^0).

const POLY = 0xedb88320;
const X0 = 0x80000000; // the polynomial 1

/** a(x)·b(x) modulo the CRC polynomial. */
function multModP(a: number, b: number): number {
  let product = 0;
  let m = X0;
  let bb = b >>> 0;
  for (;;) {
    if ((a & m) !== 0) {
      product ^= bb;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    bb = (bb & 1) !== 0 ? (bb >>> 1) ^ POLY : bb >>> 1;
  }
  return product >>> 0;
}

/** x^(2^k) modulo the CRC polynomial, for k = 0…31. */
const X2N: number[] = (() => {
  const table: number[] = [];
  let p = X0 >>> 1; // x^1
  for (let k = 0; k < 32; k += 1) {
    table.push(p);
    p = multModP(p, p);
  }
  return table;
})();

/** x^(n·2^k) modulo the CRC polynomial. */
function x2nModP(n: number, k: number): number {
  let p = X0;
  let rest = n;
  for (let bit = k; rest > 0; bit += 1, rest = Math.floor(rest / 2)) {
    if (rest % 2 === 1) p = multModP(X2N[bit % 32] ?? 0, p);
  }
  return p;
}

/**
 * The CRC-32 of A‖B given crc(A), crc(B) and B's length.
 *
 * @example
 * crc32Combine(crc32(a), crc32(b), b.length) === crc32(Buffer.concat([a, b])); // true
 */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ crcB) >>> 0;
}
