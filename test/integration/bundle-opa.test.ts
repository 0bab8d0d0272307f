// Real OPA loads what the bundle builder writes: `opa run --server --bundle <file>` with the built
// tar.gz, then the policy answers and the data sits where kube-mgmt would put it. Covers the manifest
// (revision, roots, rego_version 0 for seed-era Rego), long and non-ASCII entry names (PAX records),
// signed bundles (RS256, PS256, ES256, HS256; tricky data and a three-key manifest, whose bytes the signer
// hashes as they are, so OPA's canonical-JSON digests only match if the builder wrote them canonically),
// refusal of a wrong key and of a module, data file or manifest changed after signing, and the digests
// against `opa sign` itself.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import tar from 'tar-stream';
import { requireTool } from '../../scripts/tools.js';
import { packBundle } from '../../src/bundles/archive.js';
import { BundleBuilder, buildBundle, type BundleInput } from '../../src/bundles/build.js';
import { canonicalJson } from '../../src/bundles/canonical-json.js';
import { loadSigningKey, type SigningOptions } from '../../src/bundles/signing-key.js';
import { extraOpa, type OpaServer } from '../harness/index.js';
import { runDir } from '../harness/run-dir.js';

const run = promisify(execFile);

interface File {
  name: string;
  content: Buffer;
}

async function readBundle(bytes: Buffer): Promise<File[]> {
  const extract = tar.extract();
  extract.end(gunzipSync(bytes));
  const files: File[] = [];
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    files.push({ name: entry.header.name, content: Buffer.concat(chunks) });
  }
  return files;
}

function payloadFiles(signatures: Buffer): { name: string; hash: string; algorithm: string }[] {
  const { signatures: tokens } = JSON.parse(signatures.toString('utf8')) as { signatures: string[] };
  const payload = (tokens[0] ?? '').split('.')[1] ?? '';
  const decoded = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as {
    files: { name: string; hash: string; algorithm: string }[];
  };
  return [...decoded.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

let workDir: string;
let counter = 0;

function writeTemp(name: string, content: Buffer | string): string {
  const file = path.join(workDir, `${++counter}-${name}`);
  writeFileSync(file, content);
  return file;
}

/** Starts a real OPA with the bundle; the caller stops it. */
async function opaWithBundle(bytes: Buffer, extraArgs: string[] = []): Promise<OpaServer> {
  return extraOpa({ extraArgs: ['--bundle', ...extraArgs], paths: [writeTemp('bundle.tar.gz', bytes)] });
}

/** Asserts that OPA refuses to start with the bundle, with an error that includes `fragment`. */
async function expectRefused(bytes: Buffer, extraArgs: string[], fragment: string): Promise<void> {
  let started: OpaServer | undefined;
  let failure: unknown;
  try {
    started = await opaWithBundle(bytes, extraArgs);
  } catch (err) {
    failure = err;
  } finally {
    await started?.stop();
  }
  expect(started, 'OPA should have refused the bundle').to.equal(undefined);
  expect(String(failure)).to.include(fragment);
}

async function query(opa: OpaServer, dataPath: string, input?: unknown): Promise<unknown> {
  const res = await opa.request(`/v1/data/${dataPath}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(input === undefined ? {} : { input }),
  });
  expect(res.status, res.body).to.equal(200);
  return (JSON.parse(res.body) as { result?: unknown }).result;
}

const policy = `package kubernetes.admission

import data.opa

deny contains msg if {
  input.request.kind.kind == "Pod"
  not input.request.object.metadata.labels.team
  msg := sprintf("pod %s has no team label (%s)", [input.request.object.metadata.name, opa["my-cm"]["x.json"].hint])
}
`;

const seedEraPolicy = `package kubernetes.admission

deny[msg] {
  input.request.kind.kind == "Pod"
  not input.request.object.metadata.labels.team
  msg := "seed era: no team label"
}
`;

const podWithoutTeam = {
  request: { kind: { kind: 'Pod' }, object: { metadata: { name: 'web', labels: {} } } },
};

/** Strings and numbers whose canonical JSON is easy to get wrong (key order, escapes, number text). */
const tricky = {
  '\u{1F600}': 'emoji key sorts after U+FF61 in UTF-8, before it in UTF-16',
  '\uFF61': 'halfwidth ideographic full stop',
  é: 'e-acute',
  B: 1,
  b: 2,
  strings: [
    '<a&b>',
    'line\u2028sep\u2029',
    'ctl\u0001\u001f\b\f\n\r\t',
    'quote"back\\slash',
    'del\u007f',
    'slash/',
    'lone\ud800',
  ],
  numbers: [0, -0, 1.5, 1e21, 1e-7, 5e-324, 2 ** 53, -1234.5678],
  nested: { z: [], a: {}, m: [null, true, false] },
};

function signedInput(signing: SigningOptions): BundleInput {
  return {
    modules: [
      {
        path: '/signed/policy.rego',
        text: 'package signed\n\ndefault allow := false\n\nallow if input.user == data.signed.users.admin\n',
      },
    ],
    documents: [
      { path: ['signed', 'users'], value: { admin: 'alice' } },
      { path: ['signed', 'tricky'], value: tricky },
    ],
    roots: ['signed'],
    // A third manifest key, which sorts first: the manifest is hashed as written, so it must be canonical.
    regoVersion: 1,
    signing,
  };
}

describe('bundles in a real OPA', () => {
  let rsa: { privateKey: KeyObject; publicKey: KeyObject };
  let rsaKeyFile: string;
  let rsaPublicFile: string;
  let otherRsaPublicFile: string;
  let ecKeyFile: string;
  let ecPublicFile: string;
  let otherEcPublicFile: string;
  let hmacFile: string;

  before(() => {
    requireTool('opa'); // fails, never skips, when OPA is missing
    workDir = mkdtempSync(path.join(runDir(), 'bundles-'));
    mkdirSync(workDir, { recursive: true });
    rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = (k: KeyObject): string =>
      k.type === 'private'
        ? k.export({ type: 'pkcs8', format: 'pem' }).toString()
        : k.export({ type: 'spki', format: 'pem' }).toString();
    rsaKeyFile = writeTemp('rsa.pem', pem(rsa.privateKey));
    rsaPublicFile = writeTemp('rsa.pub.pem', pem(rsa.publicKey));
    otherRsaPublicFile = writeTemp('other-rsa.pub.pem', pem(otherRsa.publicKey));
    ecKeyFile = writeTemp('ec.pem', ec.privateKey.export({ type: 'sec1', format: 'pem' }).toString());
    ecPublicFile = writeTemp('ec.pub.pem', pem(ec.publicKey));
    otherEcPublicFile = writeTemp('other-ec.pub.pem', pem(otherEc.publicKey));
    hmacFile = writeTemp('hmac.secret', 'opa-sync-shared-secret');
  });

  it('loads policy and data: the policy is live and the data is where kube-mgmt puts it', async () => {
    const built = await buildBundle({
      modules: [{ path: '/opa/policies/main.rego', text: policy }],
      documents: [{ path: ['opa', 'my-cm', 'x.json'], value: { hint: 'add one', list: [1, 2] } }],
      roots: ['kubernetes/admission', 'opa/my-cm'],
    });
    const opa = await opaWithBundle(built.bytes);
    try {
      expect(await query(opa, 'kubernetes/admission/deny', podWithoutTeam)).to.deep.equal([
        'pod web has no team label (add one)',
      ]);
      const data = await opa.request('/v1/data/opa/my-cm/x.json');
      expect(JSON.parse(data.body)).to.deep.equal({ result: { hint: 'add one', list: [1, 2] } });
      // OPA read our manifest: the revision and roots are the ones we wrote.
      const bundles = (await query(opa, 'system/bundles')) as Record<string, { manifest: unknown }>;
      const manifests = Object.values(bundles).map((b) => b.manifest);
      expect(manifests).to.deep.include({
        revision: built.revision,
        roots: ['kubernetes/admission', 'opa/my-cm'],
      });
      // Roots are enforced: REST writes into the bundle's roots are refused.
      const write = await opa.request('/v1/data/opa/my-cm/y', {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      expect(write.status).to.equal(400);
      expect(write.body).to.include('owned by bundle');
    } finally {
      await opa.stop();
    }
  });

  it('loads a bundle gzipped in many chunks (300 modules, a 3 MB document), built incrementally', async () => {
    const builder = new BundleBuilder();
    const records = Object.fromEntries(
      Array.from({ length: 30_000 }, (_, i) => [
        `k${i}`,
        { id: i, name: `user-${i}`, roles: ['a', `r${i % 7}`] },
      ]),
    );
    const input = (edit: string): BundleInput => ({
      modules: Array.from({ length: 300 }, (_, i) => ({
        path: `/many/m${i}.rego`,
        text: `package many.m${i}\n\nvalue := ${i === 123 ? edit : String(i)}\n`,
      })),
      documents: [{ path: ['big'], value: { records } }],
      roots: ['many', 'big'],
    });
    await builder.build(input('"first"'));
    const built = await builder.build(input('"edited"'));
    expect(builder.lastPack.chunksCompressed).to.be.below(4);
    expect(built.bytes.equals((await buildBundle(input('"edited"'))).bytes)).to.be.true;
    const opa = await opaWithBundle(built.bytes);
    try {
      expect(await query(opa, 'many/m123/value')).to.equal('edited');
      expect(await query(opa, 'many/m299/value')).to.equal(299);
      expect(await query(opa, 'big/records/k29999/name')).to.equal('user-29999');
    } finally {
      await opa.stop();
    }
  });

  it('loads seed-era v0 Rego with rego_version 0, without --v0-compatible', async () => {
    const input = {
      modules: [{ path: '/seed/policy.rego', text: seedEraPolicy }],
      documents: [],
      roots: ['kubernetes/admission'],
    };
    const opa = await opaWithBundle((await buildBundle({ ...input, regoVersion: 0 })).bytes);
    try {
      expect(await query(opa, 'kubernetes/admission/deny', podWithoutTeam)).to.deep.equal([
        'seed era: no team label',
      ]);
    } finally {
      await opa.stop();
    }
    // The same module without rego_version is parsed as v1 and refused: the manifest is what made it load.
    await expectRefused((await buildBundle(input)).bytes, [], 'rego_parse_error');
  });

  it('loads modules and data at long and non-ASCII paths (PAX names), signed under the same names', async () => {
    const long = `/names/${'x'.repeat(60)}/${'y'.repeat(60)}/long.rego`;
    const unicode = '/names/pölicies/ünïcode-名前.rego';
    const dataKey = 'é'.repeat(80);
    const built = await buildBundle({
      modules: [
        { path: long, text: 'package names.long\n\nok := true\n' },
        { path: unicode, text: `package names.unicode\n\nok := data.names["données"]["${dataKey}"].ok\n` },
      ],
      documents: [{ path: ['names', 'données', dataKey], value: { ok: 'ünïcode' } }],
      roots: ['names'],
      signing: loadSigningKey(rsaKeyFile, 'RS256', 'opa-sync'),
    });
    expect(built.files).to.include.members([long, unicode, `/names/données/${dataKey}/data.json`]);
    // OPA verifies every file against the names in the signature: they must be the names it read.
    const opa = await opaWithBundle(built.bytes, [
      '--verification-key',
      rsaPublicFile,
      '--verification-key-id',
      'opa-sync',
    ]);
    try {
      expect(await query(opa, 'names/long/ok')).to.equal(true);
      expect(await query(opa, 'names/unicode/ok')).to.equal('ünïcode');
      const data = await opa.request(
        `/v1/data/names/${encodeURIComponent('données')}/${encodeURIComponent(dataKey)}`,
      );
      expect(JSON.parse(data.body)).to.deep.equal({ result: { ok: 'ünïcode' } });
      // Module ids are the bundle file's path followed by the entry name, whole.
      const policies = JSON.parse((await opa.request('/v1/policies')).body) as { result: { id: string }[] };
      const ids = policies.result.map((p) => p.id);
      for (const name of [long, unicode]) {
        expect(
          ids.filter((id) => id.endsWith(`.tar.gz${name}`)),
          name,
        ).to.have.length(1);
      }
    } finally {
      await opa.stop();
    }
  });

  const signedCases: {
    alg: 'RS256' | 'PS256' | 'ES256' | 'HS256';
    key: () => SigningOptions;
    verify: () => string[];
    wrong: () => string[];
  }[] = [
    {
      alg: 'RS256',
      key: () => loadSigningKey(rsaKeyFile, 'RS256', 'opa-sync'),
      verify: () => ['--verification-key', rsaPublicFile, '--verification-key-id', 'opa-sync'],
      wrong: () => ['--verification-key', otherRsaPublicFile, '--verification-key-id', 'opa-sync'],
    },
    {
      alg: 'PS256',
      key: () => loadSigningKey(rsaKeyFile, 'PS256'),
      verify: () => ['--verification-key', rsaPublicFile, '--signing-alg', 'PS256'],
      wrong: () => ['--verification-key', otherRsaPublicFile, '--signing-alg', 'PS256'],
    },
    {
      alg: 'ES256',
      key: () => loadSigningKey(ecKeyFile, 'ES256'),
      verify: () => ['--verification-key', ecPublicFile, '--signing-alg', 'ES256'],
      wrong: () => ['--verification-key', otherEcPublicFile, '--signing-alg', 'ES256'],
    },
    {
      alg: 'HS256',
      key: () => loadSigningKey(hmacFile, 'HS256', 'shared'),
      verify: () => ['--verification-key', readFileSync(hmacFile, 'utf8'), '--signing-alg', 'HS256'],
      wrong: () => ['--verification-key', 'not-the-secret', '--signing-alg', 'HS256'],
    },
  ];

  for (const c of signedCases) {
    it(`activates a signed ${c.alg} bundle with the right key (tricky data hashed canonically)`, async () => {
      const built = await buildBundle(signedInput(c.key()));
      expect(built.files).to.include('/.signatures.json');
      const opa = await opaWithBundle(built.bytes, c.verify());
      try {
        expect(await query(opa, 'signed/allow', { user: 'alice' })).to.equal(true);
        expect(await query(opa, 'signed/allow', { user: 'mallory' })).to.equal(false);
        const stored = await opa.request('/v1/data/signed/tricky');
        expect(JSON.parse(stored.body)).to.deep.equal({
          result: JSON.parse(canonicalJson(tricky)) as unknown,
        });
      } finally {
        await opa.stop();
      }
    });

    it(`refuses a signed ${c.alg} bundle verified with the wrong key`, async () => {
      await expectRefused((await buildBundle(signedInput(c.key()))).bytes, c.wrong(), 'failed to verify');
    });
  }

  it('refuses a bundle with one byte of one file changed after signing', async () => {
    const built = await buildBundle(signedInput(loadSigningKey(rsaKeyFile, 'RS256', 'opa-sync')));
    const files = await readBundle(built.bytes);
    const verify = ['--verification-key', rsaPublicFile, '--verification-key-id', 'opa-sync'];
    // One byte of each kind of file, right after a marker: 'admin' → 'admio' in the module, 'alice' →
    // 'alicf' in data.json, the revision's first letter in the manifest. Each stays valid; only the digest breaks.
    const targets: [string, string][] = [
      ['/signed/policy.rego', 'admi'],
      ['/signed/users/data.json', 'alic'],
      ['/.manifest', '"revision":"'],
    ];
    for (const [target, marker] of targets) {
      expect(files.map((f) => f.name)).to.include(target);
      const tampered = files.map((f) => {
        if (f.name !== target) return f;
        const content = Buffer.from(f.content);
        const at = content.indexOf(marker) + marker.length;
        content[at] = (content[at] ?? 0) + 1;
        return { name: f.name, content };
      });
      // The old .signatures.json is kept as it was.
      expect(tampered.find((f) => f.name === '/.signatures.json')).to.equal(
        files.find((f) => f.name === '/.signatures.json'),
      );
      await expectRefused(await packBundle(tampered), verify, 'digest mismatch');
    }
    // The untouched repack still loads: the refusal above is the changed byte, not the repacking.
    const opa = await opaWithBundle(await packBundle(files), verify);
    await opa.stop();
  });

  it('lists the same files and digests as `opa sign` for the same bundle', async () => {
    const unsigned = await buildBundle({
      ...signedInput(loadSigningKey(rsaKeyFile, 'RS256')),
      signing: undefined,
    });
    const ours = await buildBundle(signedInput(loadSigningKey(rsaKeyFile, 'RS256')));
    const bundleFile = writeTemp('unsigned.tar.gz', unsigned.bytes);
    const outDir = mkdtempSync(path.join(workDir, 'opa-sign-'));
    await run(
      requireTool('opa'),
      ['sign', '--signing-key', rsaKeyFile, '--bundle', bundleFile, '-o', outDir],
      {
        timeout: 30_000,
      },
    );
    const theirs = payloadFiles(readFileSync(path.join(outDir, '.signatures.json')));
    const oursListed = payloadFiles(
      (await readBundle(ours.bytes)).find((f) => f.name === '/.signatures.json')?.content ?? Buffer.alloc(0),
    );
    expect(oursListed).to.deep.equal(theirs);
    expect(theirs.map((f) => f.name)).to.include.members(['.manifest', 'signed/tricky/data.json']);
  });
});
