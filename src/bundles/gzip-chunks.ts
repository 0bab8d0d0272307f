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
// CRC-32 combination (zlib's crc32_combine, by GF(2) matrices): the CRC of A‖B from crc(A), crc(B)
// and the length of B, by applying len(B) zero bytes' worth of the CRC's shift register to crc(A).

function gf2Times(matrix: Uint32Array, vector: number): number {
  let sum = 0;
  let v = vector >>> 0;
  for (let i = 0; v !== 0; i += 1, v >>>= 1) if ((v & 1) !== 0) sum ^= matrix[i] ?? 0;
  return sum >>> 0;
}

function gf2Square(square: Uint32Array, matrix: Uint32Array): void {
  for (let n = 0; n < 32; n += 1) square[n] = gf2Times(matrix, matrix[n] ?? 0);
}

/**
 * The CRC-32 of A‖B given crc(A), crc(B) and B's length.
 *
 * @example
 * crc32Combine(crc32(a), crc32(b), b.length) === crc32(Buffer.concat([a, b])); // true
 */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB <= 0) return crcA >>> 0;
  const even = new Uint32Array(32); // the operator for an even power of two zero bits
  const odd = new Uint32Array(32); // … and for an odd one
  odd[0] = 0xedb88320; // the CRC-32 polynomial: the operator for one zero bit
  for (let n = 1, row = 1; n < 32; n += 1, row = (row << 1) >>> 0) odd[n] = row;
  gf2Square(even, odd); // two zero bits
  gf2Square(odd, even); // four zero bits
  let crc = crcA >>> 0;
  let remaining = lengthB;
  // Each pass squares the operator (one zero byte, then two, four…) and applies it where the length has a 1.
  for (;;) {
    gf2Square(even, odd);
    if (remaining % 2 === 1) crc = gf2Times(even, crc);
    remaining = Math.floor(remaining / 2);
    if (remaining === 0) break;
    gf2Square(odd, even);
    if (remaining % 2 === 1) crc = gf2Times(odd, crc);
    remaining = Math.floor(remaining / 2);
    if (remaining === 0) break;
  }
  return (crc ^ crcB) >>> 0;
}
