// Unit tests of the bundle builder, signing and hostile-name checks: determinism (including a property
// test and a pinned tar digest), the archive read back with tar-stream and header by header (fixed
// metadata, PAX records for long and non-ASCII names), gzip headers, the manifest and data.json in
// canonical JSON, roots, refused names, OPA's canonical JSON for tricky values, and signing-key errors.
// Real OPA loads these bundles in test/integration/bundle-opa.test.ts.
import {
  createHash,
  createHmac,
  createPublicKey,
  createSecretKey,
  generateKeyPairSync,
  verify as cryptoVerify,
  constants,
  type KeyObject,
} from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import fc from 'fast-check';
import tar from 'tar-stream';
import { packBundle } from '../../src/bundles/archive.js';
import {
  buildBundle,
  deriveRoots,
  rootsOverlap,
  type BundleDocument,
  type BundleInput,
  type BundleModule,
} from '../../src/bundles/build.js';
import { canonicalJson, goJsonString, goJsonStringSlow } from '../../src/bundles/canonical-json.js';
import { signaturesFile } from '../../src/bundles/signatures.js';
import {
  loadSigningKey,
  SigningKeyError,
  type SigningAlg,
  type SigningOptions,
} from '../../src/bundles/signing-key.js';
import { InvalidInputError } from '../../src/util/errors.js';
import { bundleEntryProblem, bundleNameProblem, dataPathProblem } from '../../src/util/safe-names.js';

interface TarEntry {
  header: tar.Header;
  content: Buffer;
}

async function readBundle(bytes: Buffer): Promise<TarEntry[]> {
  const extract = tar.extract();
  extract.end(gunzipSync(bytes));
  const entries: TarEntry[] = [];
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    entries.push({ header: entry.header, content: Buffer.concat(chunks) });
  }
  return entries;
}

function contentOf(entries: TarEntry[], name: string): string {
  const entry = entries.find((e) => e.header.name === name);
  if (entry === undefined)
    throw new Error(`no entry ${name} in ${entries.map((e) => e.header.name).join(', ')}`);
  return entry.content.toString('utf8');
}

interface RawHeader {
  name: string;
  prefix: string;
  typeflag: string;
  fields: Record<'mode' | 'uid' | 'gid' | 'mtime' | 'devmajor' | 'devminor', number>;
  magic: string;
  uname: string;
  gname: string;
  body: Buffer;
}

/** Every 512-byte header of a tar as written, PAX headers included (tar-stream's extract hides those). */
function rawTarHeaders(tarBytes: Buffer): RawHeader[] {
  const text = (block: Buffer, at: number, width: number): string => {
    const field = block.subarray(at, at + width);
    const nul = field.indexOf(0);
    return field.subarray(0, nul === -1 ? width : nul).toString('utf8');
  };
  const octal = (block: Buffer, at: number, width: number): number =>
    parseInt(text(block, at, width).trim() || '0', 8);
  const headers: RawHeader[] = [];
  let offset = 0;
  for (;;) {
    const block = tarBytes.subarray(offset, offset + 512);
    expect(block.length, 'tar ends inside a header').to.equal(512);
    if (block.every((b) => b === 0)) break;
    const size = octal(block, 124, 12);
    headers.push({
      name: text(block, 0, 100),
      prefix: text(block, 345, 155),
      typeflag: String.fromCharCode(block[156] ?? 0),
      fields: {
        mode: octal(block, 100, 8),
        uid: octal(block, 108, 8),
        gid: octal(block, 116, 8),
        mtime: octal(block, 136, 12),
        devmajor: octal(block, 329, 8),
        devminor: octal(block, 337, 8),
      },
      magic: block.subarray(257, 265).toString('latin1'),
      uname: text(block, 265, 32),
      gname: text(block, 297, 32),
      body: tarBytes.subarray(offset + 512, offset + 512 + size),
    });
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  // Two zero blocks close the archive, and nothing but zeros follows.
  const rest = tarBytes.subarray(offset);
  expect(rest.length).to.be.at.least(1024);
  expect(rest.every((b) => b === 0)).to.be.true;
  return headers;
}

async function expectRefused(fn: () => unknown, code: string, ...fragments: string[]): Promise<void> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected an error').to.be.instanceOf(InvalidInputError);
  const err = caught as InvalidInputError;
  expect(err.code).to.equal(code);
  for (const f of fragments) expect(err.message).to.include(f);
}

const sample: BundleInput = {
  modules: [
    { path: '/opa/policies/main.rego', text: 'package kubernetes.admission\n\ndeny contains "x" if false\n' },
    { path: '/opa/policies/system.rego', text: 'package system\n\nmain := {}\n' },
  ],
  documents: [
    { path: ['opa', 'cm', 'x.json'], value: { b: 1, a: [true, null, 'é'] } },
    { path: ['opa', 'cm', 'y.json'], value: { z: {} } },
  ],
  roots: ['kubernetes/admission', 'system', 'opa/cm'],
};

function decodeJws(signatures: Buffer): {
  header: unknown;
  payload: unknown;
  input: string;
  signature: Buffer;
} {
  const { signatures: tokens } = JSON.parse(signatures.toString('utf8')) as { signatures: string[] };
  expect(tokens).to.have.length(1);
  const [h, p, s] = (tokens[0] ?? '').split('.');
  return {
    header: JSON.parse(Buffer.from(h ?? '', 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p ?? '', 'base64url').toString('utf8')),
    input: `${h}.${p}`,
    signature: Buffer.from(s ?? '', 'base64url'),
  };
}

describe('bundle builder', () => {
  describe('determinism', () => {
    it('gives identical bytes and revision for the same input in another order', async () => {
      const a = await buildBundle(sample);
      const b = await buildBundle({
        ...sample,
        modules: [...sample.modules].reverse(),
        documents: [...sample.documents].reverse(),
        roots: [...sample.roots].reverse(),
      });
      expect(b.bytes.equals(a.bytes)).to.be.true;
      expect(b.revision).to.equal(a.revision);
      expect(b.etag).to.equal(`"${a.revision}"`);
      expect(a.revision).to.match(/^[0-9a-f]{64}$/);
    });

    it('changes the revision when any content or manifest field changes', async () => {
      const revisionOf = async (input: BundleInput): Promise<string> => (await buildBundle(input)).revision;
      const base = await revisionOf(sample);
      const changedText = await revisionOf({
        ...sample,
        modules: [{ ...sample.modules[0]!, text: 'package kubernetes.admission\n' }, sample.modules[1]!],
      });
      const changedData = await revisionOf({
        ...sample,
        documents: [{ path: ['opa', 'cm', 'x.json'], value: { b: 2 } }, sample.documents[1]!],
      });
      const changedRoots = await revisionOf({ ...sample, roots: ['kubernetes', 'system', 'opa'] });
      const changedVersion = await revisionOf({ ...sample, regoVersion: 1 });
      const renamed = await revisionOf({
        ...sample,
        modules: [{ ...sample.modules[0]!, path: '/opa/policies/other.rego' }, sample.modules[1]!],
      });
      expect(new Set([base, changedText, changedData, changedRoots, changedVersion, renamed]).size).to.equal(
        6,
      );
    });

    it('property: any order of modules and documents gives the same bytes (fast-check)', async () => {
      const segment = fc
        .stringMatching(/^[a-z0-9][-a-z0-9_.]{0,10}$/)
        .filter((s) => s !== '..' && !s.includes('..'));
      const input = fc
        .record({
          moduleNames: fc.uniqueArray(segment, { maxLength: 6 }),
          texts: fc.array(fc.string({ unit: 'grapheme', maxLength: 40 }), { minLength: 6, maxLength: 6 }),
          docNames: fc.uniqueArray(segment, { maxLength: 6 }),
          values: fc.array(fc.jsonValue({ maxDepth: 3 }), { minLength: 6, maxLength: 6 }),
          regoVersion: fc.constantFrom<0 | 1 | undefined>(0, 1, undefined),
          seed: fc.integer(),
        })
        .map(({ moduleNames, texts, docNames, values, regoVersion, seed }) => ({
          modules: moduleNames.map((n, i): BundleModule => ({ path: `/p/${n}.rego`, text: texts[i] ?? '' })),
          documents: docNames.map((n, i): BundleDocument => ({ path: ['d', n], value: values[i] ?? null })),
          regoVersion,
          seed,
        }));
      await fc.assert(
        fc.asyncProperty(input, async ({ modules, documents, regoVersion, seed }) => {
          // A seeded Fisher-Yates shuffle, so a failure reproduces from fast-check's seed.
          const shuffle = <T>(items: readonly T[]): T[] => {
            const out = [...items];
            let state = seed >>> 0;
            for (let i = out.length - 1; i > 0; i -= 1) {
              state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
              const j = state % (i + 1);
              [out[i], out[j]] = [out[j] as T, out[i] as T];
            }
            return out;
          };
          const roots = ['p', 'd'];
          const a = await buildBundle({ modules, documents, roots, regoVersion });
          const b = await buildBundle({
            modules: shuffle(modules),
            documents: shuffle(documents),
            roots,
            regoVersion,
          });
          expect(b.bytes.equals(a.bytes)).to.be.true;
          expect(b.revision).to.equal(a.revision);
          expect(b.files).to.deep.equal(a.files);
          // The structured files are canonical by construction, so the signer may digest their bytes.
          for (const { header, content } of await readBundle(a.bytes)) {
            if (!header.name.endsWith('/data.json') && header.name !== '/.manifest') continue;
            const text = content.toString('utf8');
            expect(canonicalJson(JSON.parse(text)), header.name).to.equal(text);
          }
        }),
        { numRuns: 150 },
      );
    });

    it('RS256 and HS256 signed bundles are byte-identical across builds', async () => {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      for (const signing of [
        { alg: 'RS256' as const, key: privateKey, keyId: 'k1' },
        { alg: 'HS256' as const, key: createSecretKeyFrom('s3cret') },
      ]) {
        const a = await buildBundle({ ...sample, signing });
        const b = await buildBundle({ ...sample, documents: [...sample.documents].reverse(), signing });
        expect(b.bytes.equals(a.bytes), signing.alg).to.be.true;
        // The revision does not depend on the signature.
        expect(a.revision).to.equal((await buildBundle(sample)).revision);
      }
    });
  });

  describe('archive format', () => {
    it('writes sorted regular-file entries with fixed metadata and a leading "/"', async () => {
      const built = await buildBundle(sample);
      const entries = await readBundle(built.bytes);
      const names = entries.map((e) => e.header.name);
      expect(names).to.deep.equal([
        '/.manifest',
        '/opa/cm/x.json/data.json',
        '/opa/cm/y.json/data.json',
        '/opa/policies/main.rego',
        '/opa/policies/system.rego',
      ]);
      expect(built.files).to.deep.equal(names);
      for (const { header, content } of entries) {
        expect(header.type, header.name).to.equal('file');
        expect(header.mode, header.name).to.equal(0o644);
        expect(header.uid, header.name).to.equal(0);
        expect(header.gid, header.name).to.equal(0);
        expect(header.uname, header.name).to.equal('');
        expect(header.gname, header.name).to.equal('');
        expect(header.mtime?.getTime(), header.name).to.equal(0);
        expect(header.size, header.name).to.equal(content.length);
      }
      expect(contentOf(entries, '/opa/policies/main.rego')).to.equal(sample.modules[0]!.text);
    });

    it('writes a gzip header without a timestamp or a file name, with a fixed level and OS', async () => {
      const { bytes } = await buildBundle(sample);
      expect([...bytes.subarray(0, 4)]).to.deep.equal([0x1f, 0x8b, 8, 0]); // deflate, no FNAME/FCOMMENT/FEXTRA
      expect(bytes.readUInt32LE(4)).to.equal(0); // MTIME
      expect(bytes[8]).to.equal(2); // XFL: maximum compression (level 9)
      expect(bytes[9]).to.equal(3); // OS: Unix, whatever platform built it
    });

    // Long ASCII names (which ustar could split into its prefix field, losing the leading '/'), a name of
    // exactly 100 bytes (the most the ustar name field holds) and one of 101, and non-ASCII names.
    const long = `/${'x'.repeat(60)}/${'y'.repeat(60)}/${'z'.repeat(60)}.rego`;
    const exactly100 = `/${'f'.repeat(94)}.rego`;
    const just101 = `/${'g'.repeat(95)}.rego`;
    const unicode = '/pölicies/ünïcode-名前.rego';
    const unicodeData = `/données/${'é'.repeat(80)}/data.json`;
    const namesInput: BundleInput = {
      modules: [
        { path: long, text: 'package x\n' },
        { path: exactly100, text: 'package f\n' },
        { path: just101, text: 'package g\n' },
        { path: unicode, text: 'package y\n' },
      ],
      documents: [{ path: ['données', 'é'.repeat(80)], value: { ok: true } }],
      roots: ['x', 'y', 'f', 'g', 'données'],
    };

    it('keeps long and non-ASCII entry names intact, read back with tar-stream (PAX records)', async () => {
      expect(exactly100.length).to.equal(100);
      const built = await buildBundle(namesInput);
      const entries = await readBundle(built.bytes);
      const names = entries.map((e) => e.header.name);
      expect(names).to.include.members([long, exactly100, just101, unicode, unicodeData]);
      expect(names).to.deep.equal(built.files);
      expect(entries.every((e) => e.header.type === 'file')).to.be.true;
      expect(contentOf(entries, long)).to.equal('package x\n');
      expect(contentOf(entries, unicode)).to.equal('package y\n');
    });

    it('gives a PAX path record to exactly the names the ustar name field cannot hold', async () => {
      const { bytes } = await buildBundle(namesInput);
      const headers = rawTarHeaders(gunzipSync(bytes));
      const paxPaths: string[] = [];
      const plainNames: string[] = [];
      for (const [i, h] of headers.entries()) {
        if (h.typeflag === 'x') {
          // "<length> path=<name>\n", the length counting the whole record; then the file's own header.
          const record = h.body.toString('utf8');
          const match = /^(\d+) path=(.*)\n$/su.exec(record);
          expect(match, record).not.to.equal(null);
          expect(Number(match?.[1])).to.equal(h.body.length);
          paxPaths.push(match?.[2] ?? '');
          expect(headers[i + 1]?.typeflag).to.equal('0');
        } else if (headers[i - 1]?.typeflag !== 'x') {
          plainNames.push(h.name);
        }
      }
      expect(paxPaths).to.have.members([long, just101, unicode, unicodeData]);
      expect(plainNames).to.have.members(['/.manifest', exactly100]);
      // The ustar prefix field is never used: it is where a leading '/' would get lost.
      expect(headers.map((h) => h.prefix)).to.deep.equal(headers.map(() => ''));
    });

    it('fixes every header field that could carry the host or the clock, PAX headers included', async () => {
      const { bytes } = await buildBundle({ ...namesInput, regoVersion: 1 });
      const headers = rawTarHeaders(gunzipSync(bytes));
      expect(headers.map((h) => h.typeflag)).to.include.members(['x', '0']);
      for (const h of headers) {
        expect(['x', '0'], h.name).to.include(h.typeflag);
        expect(h.fields, h.name).to.deep.equal({
          mode: 0o644,
          uid: 0,
          gid: 0,
          mtime: 0,
          devmajor: 0,
          devminor: 0,
        });
        expect(h.magic, h.name).to.equal('ustar\u000000');
        expect([h.uname, h.gname], h.name).to.deep.equal(['', '']);
      }
    });

    it('builds the same bytes twice from shuffled inputs, long names and a signature included', async () => {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const input: BundleInput = {
        ...namesInput,
        modules: [...namesInput.modules, ...sample.modules],
        documents: [...namesInput.documents, ...sample.documents],
        roots: [...namesInput.roots, ...sample.roots],
        regoVersion: 1,
        signing: { alg: 'RS256', key: privateKey, keyId: 'k' },
      };
      const first = await buildBundle(input);
      // Rotations of every list, then every list reversed: a different input order on each turn.
      for (let turn = 1; turn <= input.modules.length; turn += 1) {
        const rotate = <T>(items: readonly T[]): T[] => {
          const n = turn % items.length;
          return turn === input.modules.length
            ? [...items].reverse()
            : [...items.slice(n), ...items.slice(0, n)];
        };
        const again = await buildBundle({
          ...input,
          modules: rotate(input.modules),
          documents: rotate(input.documents),
          roots: rotate(input.roots),
        });
        expect(again.bytes.equals(first.bytes), `turn ${turn}`).to.be.true;
        expect(again.etag).to.equal(first.etag);
      }
    });

    it('writes the same tar bytes as when this test was written (the archive layout is pinned)', async () => {
      // If this fails, the archive bytes changed (a tar-stream upgrade, a header field): the revision and
      // ETag do not change with them, so replicas of two versions would serve different bytes under one
      // strong ETag during a rollout. Make sure that is meant, bump REVISION_FRAMING in build.ts (so the
      // revision changes with the bytes), then update the digest.
      const { bytes } = await buildBundle({ ...namesInput, regoVersion: 0 });
      const tarDigest = createHash('sha256').update(gunzipSync(bytes)).digest('hex');
      // v3 of the revision framing changed the manifest's revision (and nothing else in the tar).
      expect(tarDigest).to.equal('46fc9f1982e2703fefe20b6141f65fbde4ef1e244ca7e9e00af28f8ebf49922b');
    });

    it('writes data.json in canonical JSON (sorted keys, no whitespace)', async () => {
      const entries = await readBundle((await buildBundle(sample)).bytes);
      expect(contentOf(entries, '/opa/cm/x.json/data.json')).to.equal('{"a":[true,null,"é"],"b":1}');
      expect(contentOf(entries, '/opa/cm/y.json/data.json')).to.equal('{"z":{}}');
    });

    it('packBundle sorts and packs arbitrary files the same way', async () => {
      const bytes = await packBundle([
        { name: '/b.rego', content: Buffer.from('b') },
        { name: '/a.rego', content: Buffer.from('a') },
      ]);
      const entries = await readBundle(bytes);
      expect(entries.map((e) => [e.header.name, e.content.toString()])).to.deep.equal([
        ['/a.rego', 'a'],
        ['/b.rego', 'b'],
      ]);
    });
  });

  describe('manifest', () => {
    it('holds rego_version, revision and roots (trimmed, sorted, unique) in canonical JSON', async () => {
      const built = await buildBundle({
        ...sample,
        roots: ['/system/', 'opa/cm', 'kubernetes/admission', 'system'],
        regoVersion: 0,
      });
      const manifest = contentOf(await readBundle(built.bytes), '/.manifest');
      expect(manifest).to.equal(
        `{"rego_version":0,"revision":"${built.revision}","roots":["kubernetes/admission","opa/cm","system"]}`,
      );
    });

    it('is canonical by construction: parsed back and re-serialized canonically, it is its own bytes', async () => {
      // Keys that JSON.stringify would write in insertion order, and roots that need escaping and sort
      // differently by UTF-16 and by UTF-8.
      for (const regoVersion of [0, 1, undefined] as const) {
        const built = await buildBundle({
          modules: [],
          documents: [
            { path: ['\uFF61'], value: 1 },
            { path: ['\u{1F600}'], value: 2 },
            { path: ['q"uote', '<&>'], value: 3 },
          ],
          roots: ['\uFF61', '\u{1F600}', 'q"uote'],
          regoVersion,
        });
        const bytes = (await readBundle(built.bytes)).find((e) => e.header.name === '/.manifest')?.content;
        const text = bytes?.toString('utf8') ?? '';
        expect(canonicalJson(JSON.parse(text)), text).to.equal(text);
        expect(Object.keys(JSON.parse(text) as object), text).to.deep.equal(
          regoVersion === undefined ? ['revision', 'roots'] : ['rego_version', 'revision', 'roots'],
        );
        expect(text).to.include('"roots":["q\\"uote","\uFF61","\u{1F600}"]');
      }
    });

    it('leaves rego_version out when it is not set', async () => {
      const built = await buildBundle(sample);
      const manifest = contentOf(await readBundle(built.bytes), '/.manifest');
      expect(manifest).to.equal(
        `{"revision":"${built.revision}","roots":["kubernetes/admission","opa/cm","system"]}`,
      );
    });

    it('allows an empty bundle with no roots, and the root document with root ""', async () => {
      expect((await buildBundle({ modules: [], documents: [], roots: [] })).files).to.deep.equal([
        '/.manifest',
      ]);
      const root = await buildBundle({
        modules: [],
        documents: [{ path: [], value: { a: 1 } }],
        roots: [''],
      });
      expect(root.files).to.deep.equal(['/.manifest', '/data.json']);
      expect(contentOf(await readBundle(root.bytes), '/.manifest')).to.include('"roots":[""]');
    });
  });

  describe('refused input', () => {
    const base = { modules: [], documents: [], roots: ['a'] };

    it('two modules at one path', async () => {
      await expectRefused(
        () =>
          buildBundle({
            ...base,
            modules: [
              { path: '/a/x.rego', text: 'package a\n' },
              { path: '/a/x.rego', text: 'package a\n' },
            ],
          }),
        'bundle_conflict',
        '"/a/x.rego"',
      );
    });

    it('two documents at one path, or one inside another (naming both)', async () => {
      await expectRefused(
        () =>
          buildBundle({
            ...base,
            documents: [
              { path: ['a', 'b'], value: {} },
              { path: ['a', 'b'], value: {} },
            ],
          }),
        'bundle_conflict',
        'two data documents at ["a","b"]',
      );
      await expectRefused(
        () =>
          buildBundle({
            ...base,
            documents: [
              { path: ['a', 'b', 'c'], value: {} },
              { path: ['a', 'a2'], value: {} },
              { path: ['a', 'b'], value: {} },
            ],
          }),
        'bundle_conflict',
        '["a","b"]',
        '["a","b","c"]',
      );
      // Not a prefix by whole segments: fine.
      expect(() =>
        buildBundle({
          ...base,
          documents: [
            { path: ['a', 'b'], value: {} },
            { path: ['a', 'bc'], value: {} },
          ],
        }),
      ).not.to.throw();
    });

    it('module paths that are hostile, relative or not .rego', async () => {
      await expectRefused(
        () => buildBundle({ ...base, modules: [{ path: '/a/../x.rego', text: '' }] }),
        'invalid_bundle_entry',
        '..',
      );
      await expectRefused(
        () => buildBundle({ ...base, modules: [{ path: 'a/x.rego', text: '' }] }),
        'invalid_bundle_entry',
        'must start',
      );
      await expectRefused(
        () => buildBundle({ ...base, modules: [{ path: '/a/x.txt', text: '' }] }),
        'invalid_bundle_entry',
        '.rego',
      );
      await expectRefused(
        () => buildBundle({ ...base, modules: [{ path: '/a/patch.json', text: '' }] }),
        'invalid_bundle_entry',
        'delta',
      );
    });

    it('document paths that are hostile', async () => {
      await expectRefused(
        () => buildBundle({ ...base, documents: [{ path: ['a', '..'], value: {} }] }),
        'invalid_bundle_entry',
        '".."',
      );
      await expectRefused(
        () => buildBundle({ ...base, documents: [{ path: ['a', 'b/c'], value: {} }] }),
        'invalid_bundle_entry',
        '"/"',
      );
    });

    it('a file that is also a folder', async () => {
      await expectRefused(
        () =>
          buildBundle({
            ...base,
            modules: [{ path: '/a/b.rego', text: 'package a\n' }],
            documents: [{ path: ['a', 'b.rego'], value: {} }],
          }),
        'bundle_conflict',
        '"/a/b.rego"',
      );
    });

    it('roots that overlap, have empty segments, or leave data outside', async () => {
      await expectRefused(
        () => buildBundle({ ...base, roots: ['a', 'a/b'] }),
        'invalid_bundle_roots',
        '"a"',
        '"a/b"',
      );
      await expectRefused(
        () => buildBundle({ ...base, roots: ['', 'x'] }),
        'invalid_bundle_roots',
        'overlap',
      );
      await expectRefused(
        () => buildBundle({ ...base, roots: ['a//b'] }),
        'invalid_bundle_roots',
        'empty segment',
      );
      await expectRefused(
        () => buildBundle({ ...base, roots: ['a'], documents: [{ path: ['b', 'c'], value: {} }] }),
        'invalid_bundle_roots',
        '["b","c"]',
      );
    });

    it('values that are not JSON, a non-object root document, a bad rego_version', async () => {
      await expectRefused(
        () => buildBundle({ ...base, documents: [{ path: ['a'], value: { n: NaN } }] }),
        'invalid_json',
        'NaN',
      );
      const cyclic: Record<string, unknown> = {};
      cyclic['self'] = cyclic;
      await expectRefused(
        () => buildBundle({ ...base, documents: [{ path: ['a'], value: cyclic }] }),
        'invalid_json',
        'cycle',
      );
      await expectRefused(
        () => buildBundle({ ...base, roots: [''], documents: [{ path: [], value: [1] }] }),
        'bundle_conflict',
        'object',
      );
      await expectRefused(() => buildBundle({ ...base, regoVersion: 2 as 0 }), 'invalid_rego_version');
    });
  });

  describe('roots', () => {
    it('derives minimal sorted roots from packages and data paths', () => {
      expect(deriveRoots(['kubernetes.admission', 'system'], [['opa', 'cm', 'x.json']])).to.deep.equal([
        'kubernetes/admission',
        'opa/cm/x.json',
        'system',
      ]);
      expect(deriveRoots(['a/b', 'a'], [])).to.deep.equal(['a']);
      expect(deriveRoots(['a.b.c', 'a.b', 'a.bc'], [['a', 'b', 'd']])).to.deep.equal(['a/b', 'a/bc']);
      expect(deriveRoots(['x', 'x'], [['x']])).to.deep.equal(['x']);
      expect(deriveRoots([], [])).to.deep.equal([]);
      expect(deriveRoots(['x'], [[]])).to.deep.equal(['']);
    });

    it('reads Rego references with string brackets, as opa inspect prints them', async () => {
      expect(deriveRoots(['a["b-c"].d', 'q[`raw`]'], [])).to.deep.equal(['a/b-c/d', 'q/raw']);
      // A segment holding '/' cannot be a root segment: the root stops above it.
      expect(deriveRoots(['a["b/c"].d'], [['z', 'y/x']])).to.deep.equal(['a', 'z']);
      await expectRefused(() => deriveRoots(['a["b'], []), 'invalid_package');
      await expectRefused(() => deriveRoots(['a..b'], []), 'invalid_package');
      await expectRefused(() => deriveRoots([''], []), 'invalid_package');
    });

    it('detects overlap by whole segments', () => {
      expect(rootsOverlap(['a/b'], ['a'])).to.be.true;
      expect(rootsOverlap(['a'], ['a/b/c'])).to.be.true;
      expect(rootsOverlap(['a/b'], ['a/b'])).to.be.true;
      expect(rootsOverlap(['/a/b/'], ['a/b'])).to.be.true;
      expect(rootsOverlap([''], ['anything'])).to.be.true;
      expect(rootsOverlap(['x'], [''])).to.be.true;
      expect(rootsOverlap(['a/b'], ['a/bc'])).to.be.false;
      expect(rootsOverlap(['a/b', 'c'], ['a/c', 'd'])).to.be.false;
      expect(rootsOverlap([], [''])).to.be.false;
    });
  });
});

describe('safe names', () => {
  describe('bundleEntryProblem', () => {
    const refused: [string, string][] = [
      ['', 'empty'],
      ['/', 'empty'],
      ['a/../b.rego', '".."'],
      ['../b.rego', '".."'],
      ['a/./b.rego', '"."'],
      ['a//b.rego', 'empty segment'],
      ['a/b/', 'empty segment'],
      ['//a.rego', 'empty segment'],
      ['C:/x.rego', 'Windows'],
      ['c:x.rego', 'Windows'],
      ['/D:/x.rego', 'Windows'],
      ['a\\b.rego', 'backslash'],
      ['\\\\server\\x.rego', 'backslash'],
      ['a\0.rego', 'NUL'],
      ['a\n.rego', 'control character (U+000A)'],
      ['a\u007f.rego', 'control character (U+007F)'],
      ['a\u0085.rego', 'control character (U+0085)'],
      ['a\ud800.rego', 'lone surrogate'],
      ['.manifest', '.manifest'],
      ['a/x.manifest', '.manifest'],
      ['a/.manifest.pb', 'protobuf'],
      ['.signatures.json', 'signatures.json'],
      ['a/xsignatures.json', 'signatures.json'],
      ['patch.json', 'delta'],
      ['a/patch.json', 'delta'],
      ['a/data.json', 'as data'],
      ['data.yaml', 'as data'],
      ['a/data.yml', 'as data'],
      ['a/policy.wasm', 'Wasm'],
      ['a/plan.json', 'plan'],
    ];
    for (const [name, reason] of refused) {
      it(`refuses ${JSON.stringify(name)} (${reason})`, () => {
        const problem = bundleEntryProblem(name);
        expect(problem).to.be.a('string');
        expect(problem).to.include(JSON.stringify(name));
        expect(problem).to.include(reason);
      });
    }

    it('accepts ordinary names, with or without one leading "/"', () => {
      for (const name of [
        'a.rego',
        '/opa/my-cm/a.rego',
        'ns/cm/policy',
        'x.json',
        'a/.hidden.rego',
        'data.json.rego',
        'ünï/名前.rego',
        'ab:c.rego',
        'a..b.rego',
      ]) {
        expect(bundleEntryProblem(name), name).to.equal(undefined);
      }
    });
  });

  describe('dataPathProblem', () => {
    it('refuses segments that would move the data', () => {
      const cases: [string[], string][] = [
        [['a', ''], 'empty'],
        [['a', '.'], '"."'],
        [['a', '..'], '".."'],
        [['a', 'b/c'], '"/"'],
        [['a', 'b\\c'], 'backslash'],
        [['a', 'b\0'], 'NUL'],
        [['a', 'b\t'], 'control'],
        [['.hidden', 'x'], 'first segment'],
      ];
      for (const [p, reason] of cases) {
        const problem = dataPathProblem(p);
        expect(problem, JSON.stringify(p)).to.include(reason);
        expect(problem).to.include(JSON.stringify(p));
      }
    });

    it('accepts kube-mgmt style paths and special-looking segments (they become folders)', () => {
      for (const p of [
        [],
        ['opa', 'my-cm', 'x.json'],
        ['a', '.b'],
        ['a', 'data.json'],
        ['a', 'patch.json'],
        ['a', '.manifest'],
      ]) {
        expect(dataPathProblem(p), JSON.stringify(p)).to.equal(undefined);
      }
    });
  });

  describe('bundleNameProblem', () => {
    it('refuses names outside the bundle-name alphabet', () => {
      const refused = [
        '',
        '/a',
        'a/',
        'A',
        'a..b',
        '../a',
        'a//b',
        '-a',
        'a-',
        'a b',
        'a\0',
        'a/_b',
        'ä',
        'a'.repeat(254),
        'a'.repeat(64),
      ];
      for (const name of refused) {
        const problem = bundleNameProblem(name);
        expect(problem, JSON.stringify(name)).to.be.a('string');
        expect(problem).to.include(JSON.stringify(name));
      }
    });

    it('accepts DNS-like names and slash-separated segments', () => {
      for (const name of [
        'a',
        'main',
        'team-a/prod',
        'a.b_c-d/e1',
        '0',
        'a'.repeat(63),
        `${'a/'.repeat(126)}a`,
      ]) {
        expect(bundleNameProblem(name), name).to.equal(undefined);
      }
    });
  });
});

describe('canonical JSON (OPA hash form)', () => {
  it('sorts keys by UTF-8 bytes, not UTF-16 code units', () => {
    // U+FF61 is EF BD A1 in UTF-8 and 0xFF61 in UTF-16; U+1F600 is F0 9F 98 80 and 0xD83D 0xDE00.
    const value = { '\u{1F600}': 1, '\uFF61': 2, b: 3, B: 4, é: 5 };
    expect(Object.keys(value).sort()).to.deep.equal(['B', 'b', 'é', '\u{1F600}', '\uFF61']);
    expect(canonicalJson(value)).to.equal('{"B":4,"b":3,"é":5,"\uFF61":2,"\u{1F600}":1}');
  });

  it("escapes strings as Go's encoding/json does without HTML escaping", () => {
    expect(goJsonString('<a&b>')).to.equal('"<a&b>"');
    expect(goJsonString('a/b')).to.equal('"a/b"');
    expect(goJsonString('"\\')).to.equal('"\\"\\\\"');
    expect(goJsonString('\b\f\n\r\t')).to.equal('"\\b\\f\\n\\r\\t"');
    expect(goJsonString('\u0000\u0001\u001f')).to.equal('"\\u0000\\u0001\\u001f"');
    expect(goJsonString('\u007f\u0085')).to.equal('"\u007f\u0085"');
    expect(goJsonString('\u2028\u2029')).to.equal('"\\u2028\\u2029"');
    expect(goJsonString('é😀')).to.equal('"é😀"');
    expect(goJsonString('x\ud800y\udc00')).to.equal('"x\uFFFDy\uFFFD"');
  });

  it('writes JavaScript numbers as JSON.stringify does and refuses non-JSON values', () => {
    expect(canonicalJson([0, -0, 1.5, 1e21, 1e-7, 5e-324, 2 ** 53, 10n ** 30n])).to.equal(
      '[0,0,1.5,1e+21,1e-7,5e-324,9007199254740992,1000000000000000000000000000000]',
    );
    expect(canonicalJson({ a: undefined, b: new Date(0) })).to.equal('{"b":"1970-01-01T00:00:00.000Z"}');
    for (const bad of [Infinity, () => 1, Symbol('x'), new Map(), [undefined]]) {
      expect(() => canonicalJson(bad)).to.throw(InvalidInputError);
    }
    expect(() => canonicalJson({ '\ud800': 1, '\udc00': 2 })).to.throw(InvalidInputError, 'U+FFFD');
  });

  it('writes every string as the character-by-character encoder does (fast-check)', () => {
    const tricky = fc.constantFrom(
      '\u2028',
      '\u2029',
      '\ud800',
      '\udfff',
      '\u{1F600}',
      '"',
      '\\',
      '\u0000',
      '\u001f',
      '\u007f',
      '<',
    );
    const text = fc
      .array(fc.oneof(fc.string({ unit: 'binary', maxLength: 4 }), tricky), { maxLength: 8 })
      .map((p) => p.join(''));
    fc.assert(
      fc.property(text, (value) => {
        expect(goJsonString(value)).to.equal(goJsonStringSlow(value));
      }),
      { numRuns: 5000 },
    );
  });

  it('names where a value is refused, as a path from the top', () => {
    expect(() => canonicalJson({ a: [1, { 'b c': [NaN] }] }, 'doc')).to.throw(
      InvalidInputError,
      'doc holds NaN at $."a"[1]."b c"[0], which JSON cannot hold',
    );
    const cycle: Record<string, unknown> = { x: {} };
    (cycle.x as Record<string, unknown>).self = cycle;
    expect(() => canonicalJson(cycle)).to.throw(InvalidInputError, 'holds a cycle at $."x"."self"');
    expect(() => canonicalJson({ k: [1, undefined] })).to.throw(
      InvalidInputError,
      'holds undefined at $."k"[1]',
    );
  });
});

function createSecretKeyFrom(secret: string): KeyObject {
  return createSecretKey(Buffer.from(secret, 'utf8'));
}

describe('signing', () => {
  let dir: string;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const ed = generateKeyPairSync('ed25519');
  const pem = (key: KeyObject, type: 'pkcs1' | 'pkcs8' | 'sec1' | 'spki'): string =>
    key.export({ type, format: 'pem' }).toString();

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-keys-'));
    writeFileSync(path.join(dir, 'rsa-pkcs1.pem'), pem(rsa.privateKey, 'pkcs1'));
    writeFileSync(path.join(dir, 'rsa-pkcs8.pem'), pem(rsa.privateKey, 'pkcs8'));
    writeFileSync(path.join(dir, 'rsa-public.pem'), pem(rsa.publicKey, 'spki'));
    writeFileSync(path.join(dir, 'ec256.pem'), pem(ec256.privateKey, 'sec1'));
    writeFileSync(path.join(dir, 'ec384.pem'), pem(ec384.privateKey, 'pkcs8'));
    writeFileSync(path.join(dir, 'ed25519.pem'), pem(ed.privateKey, 'pkcs8'));
    writeFileSync(
      path.join(dir, 'rsa-encrypted.pem'),
      rsa.privateKey
        .export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' })
        .toString(),
    );
    const small = generateKeyPairSync('rsa', { modulusLength: 512 });
    writeFileSync(path.join(dir, 'rsa-512.pem'), pem(small.privateKey, 'pkcs8'));
    writeFileSync(path.join(dir, 'secret'), 'top-secret\n');
    writeFileSync(path.join(dir, 'empty'), '');
    writeFileSync(
      path.join(dir, 'garbage.pem'),
      '-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n',
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('loadSigningKey', () => {
    it('loads PEM RSA (PKCS#1, PKCS#8) and EC (SEC1, PKCS#8) keys and raw HMAC secrets', () => {
      expect(loadSigningKey(path.join(dir, 'rsa-pkcs1.pem'), 'RS256', 'k').keyId).to.equal('k');
      expect(loadSigningKey(path.join(dir, 'rsa-pkcs8.pem'), 'PS512').key.asymmetricKeyType).to.equal('rsa');
      expect(loadSigningKey(path.join(dir, 'ec256.pem'), 'ES256').key.asymmetricKeyType).to.equal('ec');
      expect(loadSigningKey(path.join(dir, 'ec384.pem'), 'ES384').key.asymmetricKeyType).to.equal('ec');
      const hs = loadSigningKey(path.join(dir, 'secret'), 'HS384');
      expect(hs.key.type).to.equal('secret');
      expect(hs.key.export().toString()).to.equal('top-secret\n');
      expect(hs).not.to.have.property('keyId');
    });

    const failures: [string, SigningAlg, string[]][] = [
      ['ec256.pem', 'RS256', ['ec256.pem', 'EC private key (P-256)', 'RS256 needs an RSA private key']],
      [
        'rsa-pkcs8.pem',
        'ES256',
        ['rsa-pkcs8.pem', 'RSA private key (2048 bits)', 'ES256 needs an EC private key on curve P-256'],
      ],
      ['ec384.pem', 'ES256', ['ec384.pem', 'P-384', 'curve P-256']],
      ['ec256.pem', 'ES512', ['P-256', 'curve P-521']],
      ['ed25519.pem', 'RS256', ['ed25519.pem', 'ed25519', 'RSA']],
      ['rsa-512.pem', 'RS256', ['rsa-512.pem', '1024 bits', 'not 512 bits']],
      ['rsa-public.pem', 'RS256', ['rsa-public.pem', 'no private key']],
      ['rsa-encrypted.pem', 'RS256', ['rsa-encrypted.pem', 'encrypted']],
      ['garbage.pem', 'RS256', ['garbage.pem', 'cannot parse']],
      ['secret', 'RS256', ['secret', 'not PEM']],
      ['rsa-pkcs8.pem', 'HS256', ['rsa-pkcs8.pem', 'holds a PEM key', 'HS256 signs with a shared secret']],
      ['empty', 'HS256', ['empty', 'is empty']],
      ['missing.pem', 'RS256', ['missing.pem', 'cannot read']],
      ['secret', 'XS256' as SigningAlg, ['XS256', 'not one of']],
    ];
    for (const [file, alg, fragments] of failures) {
      it(`refuses ${file} for ${alg}`, () => {
        let caught: unknown;
        try {
          loadSigningKey(path.join(dir, file), alg);
        } catch (err) {
          caught = err;
        }
        expect(caught).to.be.instanceOf(SigningKeyError);
        const err = caught as SigningKeyError;
        expect(err.code).to.equal('invalid_signing_key');
        for (const f of fragments) expect(err.message).to.include(f);
      });
    }
  });

  describe('signaturesFile', () => {
    const files = [
      { name: '/opa/cm/x.json/data.json', content: Buffer.from('{"a":"é","b":1}') },
      { name: '/.manifest', content: Buffer.from('{"revision":"r","roots":["opa"]}') },
      { name: '/opa/a.rego', content: Buffer.from('package opa\n') },
    ];
    const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

    it('lists every file (no leading "/", sorted) with the digests of its bytes, no iat, header {alg, kid}', () => {
      const { privateKey } = rsa;
      const jws = decodeJws(signaturesFile(files, { alg: 'RS256', key: privateKey, keyId: 'my-key' }));
      expect(jws.header).to.deep.equal({ alg: 'RS256', kid: 'my-key' });
      expect(jws.payload).to.deep.equal({
        files: [
          { name: '.manifest', hash: sha('{"revision":"r","roots":["opa"]}'), algorithm: 'SHA-256' },
          { name: 'opa/a.rego', hash: sha('package opa\n'), algorithm: 'SHA-256' },
          { name: 'opa/cm/x.json/data.json', hash: sha('{"a":"é","b":1}'), algorithm: 'SHA-256' },
        ],
      });
      const noKid = decodeJws(signaturesFile(files, { alg: 'RS256', key: privateKey }));
      expect(noKid.header).to.deep.equal({ alg: 'RS256' });
    });

    const verifiers: [SigningAlg, () => SigningOptions, (input: string, sig: Buffer) => boolean][] = [
      [
        'RS256',
        () => ({ alg: 'RS256', key: rsa.privateKey }),
        (i, s) => cryptoVerify('sha256', Buffer.from(i), rsa.publicKey, s),
      ],
      [
        'RS512',
        () => ({ alg: 'RS512', key: rsa.privateKey }),
        (i, s) => cryptoVerify('sha512', Buffer.from(i), rsa.publicKey, s),
      ],
      [
        'PS256',
        () => ({ alg: 'PS256', key: rsa.privateKey }),
        (i, s) =>
          cryptoVerify(
            'sha256',
            Buffer.from(i),
            { key: rsa.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
            s,
          ),
      ],
      [
        'ES256',
        () => ({ alg: 'ES256', key: ec256.privateKey }),
        (i, s) =>
          s.length === 64 &&
          cryptoVerify('sha256', Buffer.from(i), { key: ec256.publicKey, dsaEncoding: 'ieee-p1363' }, s),
      ],
      [
        'ES384',
        () => ({ alg: 'ES384', key: ec384.privateKey }),
        (i, s) =>
          s.length === 96 &&
          cryptoVerify('sha384', Buffer.from(i), { key: ec384.publicKey, dsaEncoding: 'ieee-p1363' }, s),
      ],
      [
        'HS256',
        () => ({ alg: 'HS256', key: createSecretKeyFrom('shh') }),
        (i, s) => createHmac('sha256', 'shh').update(i).digest().equals(s),
      ],
    ];
    for (const [alg, options, verify] of verifiers) {
      it(`makes a valid ${alg} JWS`, () => {
        const jws = decodeJws(signaturesFile(files, options()));
        expect(verify(jws.input, jws.signature)).to.be.true;
      });
    }

    it('refuses a key that does not fit the algorithm, an empty kid, and signature files in the list', () => {
      expect(() => signaturesFile(files, { alg: 'ES256', key: rsa.privateKey })).to.throw(
        SigningKeyError,
        'EC private key',
      );
      expect(() => signaturesFile(files, { alg: 'RS256', key: createPublicKey(rsa.privateKey) })).to.throw(
        SigningKeyError,
        'needs a private key',
      );
      expect(() => signaturesFile(files, { alg: 'HS256', key: rsa.privateKey })).to.throw(
        SigningKeyError,
        'shared secret',
      );
      expect(() => signaturesFile(files, { alg: 'RS256', key: rsa.privateKey, keyId: '' })).to.throw(
        SigningKeyError,
        'empty',
      );
      expect(() =>
        signaturesFile([...files, { name: '/.signatures.json', content: Buffer.from('{}') }], {
          alg: 'RS256',
          key: rsa.privateKey,
        }),
      ).to.throw(InvalidInputError, 'signatures file');
      expect(() =>
        signaturesFile([...files, { name: 'opa/a.rego', content: Buffer.from('') }], {
          alg: 'RS256',
          key: rsa.privateKey,
        }),
      ).to.throw(InvalidInputError, 'two files');
      // OPA hashes YAML data as canonical JSON, not as its bytes: the signer refuses what it cannot hash.
      for (const name of ['/a/data.yaml', 'data.yml']) {
        expect(() =>
          signaturesFile([...files, { name, content: Buffer.from('a: 1\n') }], {
            alg: 'RS256',
            key: rsa.privateKey,
          }),
        ).to.throw(InvalidInputError, 'YAML');
      }
    });

    it('is added to a built bundle, listing every other entry', async () => {
      const built = await buildBundle({
        ...sample,
        signing: { alg: 'RS256', key: rsa.privateKey, keyId: 'k' },
      });
      expect(built.files).to.include('/.signatures.json');
      const entries = await readBundle(built.bytes);
      const jws = decodeJws(Buffer.from(contentOf(entries, '/.signatures.json')));
      const listed = (jws.payload as { files: { name: string; hash: string }[] }).files;
      const others = entries.filter((e) => e.header.name !== '/.signatures.json');
      expect(listed.map((f) => `/${f.name}`)).to.deep.equal(others.map((e) => e.header.name));
      // The builder writes data.json and .manifest canonically, so every file hashes as its bytes.
      expect(others.map((e) => e.header.name)).to.include.members(['/.manifest', '/opa/cm/x.json/data.json']);
      for (const e of others) {
        const entry = listed.find((f) => `/${f.name}` === e.header.name);
        expect(entry?.hash, e.header.name).to.equal(createHash('sha256').update(e.content).digest('hex'));
      }
    });
  });
});
