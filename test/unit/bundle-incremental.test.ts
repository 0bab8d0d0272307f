// Unit tests of incremental bundle building: a `BundleBuilder` that keeps entries, digests and compressed
// chunks between builds gives exactly the bytes and ETag of `buildBundle` from scratch, after any
// sequence of module and data edits (a fast-check property, refused builds in between included); the
// chunked gzip is one plain gzip member whose deflate stream and CRC are right; the tar inside is the one
// tar-stream writes in a single pass; and a one-module edit compresses only a few chunks.
import { createSecretKey } from 'node:crypto';
import { crc32, gunzipSync, inflateRawSync } from 'node:zlib';
import { expect } from 'chai';
import fc from 'fast-check';
import { ArchiveWriter, packTar } from '../../src/bundles/archive.js';
import {
  BundleBuilder,
  buildBundle,
  deriveRoots,
  type BundleDocument,
  type BundleInput,
  type BundleModule,
} from '../../src/bundles/build.js';
import { compressChunk, crc32Combine, gzipOfChunks } from '../../src/bundles/gzip-chunks.js';
import { compareUtf8 } from '../../src/util/utf8.js';

/** The members of a gzip file's deflate stream, checked: one member, its CRC and length right. */
function singleMember(bytes: Buffer): Buffer {
  expect([...bytes.subarray(0, 4)]).to.deep.equal([0x1f, 0x8b, 8, 0]);
  const inflated = inflateRawSync(bytes.subarray(10, bytes.length - 8));
  expect(bytes.readUInt32LE(bytes.length - 8), 'CRC-32').to.equal(crc32(inflated));
  expect(bytes.readUInt32LE(bytes.length - 4), 'ISIZE').to.equal(inflated.length % 2 ** 32);
  // And Node's gunzip, which would go on into a second member, finds nothing after it.
  expect(gunzipSync(bytes).equals(inflated)).to.be.true;
  return inflated;
}

describe('incremental bundle building', () => {
  describe('chunked gzip', () => {
    it('crc32Combine gives the CRC-32 of the concatenation (fast-check)', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 2000 }), fc.uint8Array({ maxLength: 2000 }), (a, b) => {
          const combined = crc32Combine(crc32(a), crc32(b), b.length);
          expect(combined).to.equal(crc32(Buffer.concat([a, b])));
        }),
        { numRuns: 300 },
      );
    });

    it('makes one gzip member of chunks compressed apart, whatever their sizes (fast-check)', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.oneof(
              fc.uint8Array({ maxLength: 3000 }),
              fc.string({ maxLength: 500 }).map((s) => new TextEncoder().encode(s.repeat(40))),
            ),
            { maxLength: 6 },
          ),
          async (parts) => {
            const buffers = parts.map((p) => Buffer.from(p));
            const gz = gzipOfChunks(await Promise.all(buffers.map((b) => compressChunk(b, 9))), 9);
            expect(singleMember(gz).equals(Buffer.concat(buffers))).to.be.true;
          },
        ),
        { numRuns: 100 },
      );
    });
  });

  describe('the archive', () => {
    it('holds the tar that tar-stream writes in one pass, in a single gzip member', async () => {
      const files = [
        { name: '/b/x.rego', content: Buffer.from('package b\n') },
        { name: `/${'l'.repeat(120)}.rego`, content: Buffer.from('package l\n') },
        { name: '/ü/y.rego', content: Buffer.from('package u\n') },
        { name: '/big/data.json', content: Buffer.from(`{"s":"${'x'.repeat(2_500_000)}"}`) },
        { name: '/.manifest', content: Buffer.from('{"revision":"r","roots":[""]}') },
        ...Array.from({ length: 200 }, (_, i) => ({
          name: `/many/m${i}.rego`,
          content: Buffer.from(`package many.m${i}\n\nx := ${i}\n`),
        })),
      ];
      const sorted = [...files].sort((a, b) => compareUtf8(a.name, b.name));
      const writer = new ArchiveWriter();
      const bytes = await writer.pack(files);
      expect(singleMember(bytes).equals(await packTar(sorted))).to.be.true;
      // The 2.5 MB entry is compressed in 1 MiB pieces, the small ones in groups.
      expect(writer.lastPack.chunks).to.be.within(8, 60);
    });

    it('compresses only the chunks an edit touched, and gives the bytes of a fresh writer', async () => {
      const files = Array.from({ length: 1000 }, (_, i) => ({
        name: `/team${i % 20}/svc${i}/policy.rego`,
        content: Buffer.from(`package team${i % 20}.svc${i}\n\nallow if input.user == "u${i}"\n`),
      }));
      files.push({ name: '/bench/data.json', content: Buffer.from(`{"s":"${'d'.repeat(3_000_000)}"}`) });
      const writer = new ArchiveWriter();
      await writer.pack(files);
      expect(writer.lastPack.entriesEncoded).to.equal(1001);
      const edited = files.map((f) =>
        f.name === '/team7/svc507/policy.rego' ? { ...f, content: Buffer.from('package team7.svc507\n') } : f,
      );
      const bytes = await writer.pack(edited);
      expect(writer.lastPack.entriesEncoded).to.equal(1);
      expect(writer.lastPack.chunksCompressed).to.equal(1);
      expect(writer.lastPack.bytesCompressed).to.be.below(200_000);
      expect(bytes.equals(await new ArchiveWriter().pack(edited))).to.be.true;
    });
  });

  describe('BundleBuilder', () => {
    // A small world of names, so that edits hit the same paths again: modules and documents are set,
    // replaced (by an equal value or the same object), removed, made invalid, signed or not.
    const moduleName = fc.constantFrom('a', 'b', 'c', 'd/e', 'd/f', 'ü', 'x'.repeat(110));
    const docName = fc.constantFrom('p', 'q', 'r/s', 'r/t', 'big');
    // Now and then content large enough for chunks of its own (64 KiB), or for two 1 MiB pieces.
    const text = fc.oneof(
      { weight: 5, arbitrary: fc.string({ unit: 'grapheme', maxLength: 60 }) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 90_000 }).map((n) => `# ${'t'.repeat(n)}\n`) },
    );
    const value = fc.oneof(
      { weight: 5, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
      {
        weight: 1,
        arbitrary: fc.integer({ min: 60_000, max: 1_100_000 }).map((n) => ({ s: 'v'.repeat(n) })),
      },
    );
    type Command =
      | { kind: 'module'; name: string; text: string }
      | { kind: 'drop-module'; name: string }
      | { kind: 'document'; name: string; value: unknown }
      | { kind: 'same-document-again'; name: string }
      | { kind: 'drop-document'; name: string }
      | { kind: 'invalid-document'; name: string }
      | { kind: 'rego-version'; version: 0 | 1 | undefined }
      | { kind: 'signing'; on: boolean };
    const command: fc.Arbitrary<Command> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('module' as const), name: moduleName, text }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop-module' as const), name: moduleName }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('document' as const), name: docName, value }) },
      {
        weight: 1,
        arbitrary: fc.record({ kind: fc.constant('same-document-again' as const), name: docName }),
      },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop-document' as const), name: docName }) },
      {
        weight: 1,
        arbitrary: fc.record({ kind: fc.constant('invalid-document' as const), name: docName }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant('rego-version' as const),
          version: fc.constantFrom<0 | 1 | undefined>(0, 1, undefined),
        }),
      },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('signing' as const), on: fc.boolean() }) },
    );
    const key = createSecretKey(Buffer.from('incremental'));

    it('gives the bytes and ETag of a from-scratch build after every edit (fast-check)', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 14 }), async (commands) => {
          const builder = new BundleBuilder();
          const modules = new Map<string, string>();
          const documents = new Map<string, unknown>();
          let regoVersion: 0 | 1 | undefined;
          let signing = false;
          for (const c of commands) {
            let invalid: string | undefined;
            switch (c.kind) {
              case 'module':
                modules.set(c.name, c.text);
                break;
              case 'drop-module':
                modules.delete(c.name);
                break;
              case 'document':
                documents.set(c.name, c.value);
                break;
              case 'same-document-again':
                // An equal value in a new object: the builder must not care which.
                if (documents.has(c.name)) {
                  documents.set(c.name, JSON.parse(JSON.stringify(documents.get(c.name) ?? null)));
                }
                break;
              case 'drop-document':
                documents.delete(c.name);
                break;
              case 'invalid-document':
                invalid = c.name;
                break;
              case 'rego-version':
                regoVersion = c.version;
                break;
              case 'signing':
                signing = c.on;
                break;
            }
            const moduleList: BundleModule[] = [...modules].map(([name, t]) => ({
              path: `/m/${name}.rego`,
              text: t,
            }));
            const documentList: BundleDocument[] = [...documents].map(([name, v]) => ({
              path: ['d', ...name.split('/')],
              value: v,
            }));
            if (invalid !== undefined) {
              // NaN cannot be written: the build is refused, by both, with the same message.
              const refused: BundleInput = {
                modules: moduleList,
                documents: [
                  ...documentList.filter((d) => d.path.join('/') !== `d/${invalid}`),
                  { path: ['d', ...invalid.split('/')], value: { n: Number.NaN } },
                ],
                roots: ['m', 'd'],
              };
              const messages = await Promise.all(
                [builder.build(refused), buildBundle(refused)].map((p) =>
                  p.then(
                    () => 'built',
                    (err: unknown) => String(err),
                  ),
                ),
              );
              expect(messages[0]).to.equal(messages[1]);
            }
            const input: BundleInput = {
              modules: moduleList,
              documents: documentList,
              roots: deriveRoots(
                [...(moduleList.length > 0 ? ['m'] : [])],
                documentList.map((d) => d.path),
              ),
              regoVersion,
              signing: signing ? { alg: 'HS256', key, keyId: 'k' } : undefined,
            };
            const incremental = await builder.build(input);
            const scratch = await buildBundle(input);
            expect(incremental.bytes.equals(scratch.bytes), 'bytes').to.be.true;
            expect(incremental.etag).to.equal(scratch.etag);
            expect(incremental.files).to.deep.equal(scratch.files);
          }
        }),
        { numRuns: 40 },
      );
    });

    it('encodes a data document once while it is the same value', async () => {
      const builder = new BundleBuilder();
      const data = { users: Array.from({ length: 5000 }, (_, i) => `user-${i}`) };
      const input = (policy: string): BundleInput => ({
        modules: [{ path: '/m/a.rego', text: policy }],
        documents: [{ path: ['d'], value: data }],
        roots: ['m', 'd'],
      });
      await builder.build(input('package m\n'));
      const edited = await builder.build(input('package m\n\nx := 1\n'));
      expect(builder.lastPack.entriesEncoded).to.equal(2); // the module and the manifest
      const tar = gunzipSync(edited.bytes);
      const json = Buffer.from(JSON.stringify(data));
      expect(tar.includes(json)).to.be.true;
    });
  });
});
