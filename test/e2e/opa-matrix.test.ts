// The OPA version matrix: the sidecar basics, the network-policy article and the bundle server, against
// every OPA version the tools script builds (the default OPA_VERSION and MATRIX_OPA_VERSIONS: the last
// 0.x, the newest 1.0.x, the newest 1.x), each a real `opa run --server` of that version on the real
// control plane. Where the versions differ (OPA 0.x parses Rego v0 by default, 1.x Rego v1), each test
// says what that version must do. `npm run test:matrix` runs this file and the default OPA's article
// (test/e2e/seed-scenario.test.ts).
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { MATRIX_OPA_VERSIONS, OPA_VERSION, requireOpa } from '../../scripts/tools.js';
import { createNamespace, extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import { downloadBundle, opaWithConfig } from '../harness/bundles.js';
import {
  DATA_LABEL,
  OK,
  cleanupAfterAll,
  cleanupAfterEach,
  deleteConfigMap,
  evaluate,
  opaData,
  policyIds,
  putConfigMap,
  scrapeMetric,
  startBundleSync,
  startSync,
  statusOf,
  waitDecision,
  waitError,
  waitOk,
  waitPolicy,
} from '../harness/e2e.js';
import { logTail } from '../harness/processes.js';
import { runDir } from '../harness/run-dir.js';
import {
  ARTICLE_VARIANT,
  BUNDLES_VARIANT,
  POD_DENIAL,
  RISKY_DENIAL,
  runSeedScenario,
} from '../harness/seed-scenario.js';

const VERSIONS = [OPA_VERSION, ...MATRIX_OPA_VERSIONS];
const silent = { section: () => undefined, command: () => undefined, note: () => undefined };
const isV0 = (version: string): boolean => version.startsWith('v0.');

interface StatusError {
  code: string;
  message: string;
  errors?: { code: string; message: string; location?: { file: string; row: number; col: number } }[];
}

function errorOf(value: string): StatusError {
  const parsed = JSON.parse(value) as { status: string; error: StatusError };
  expect(parsed.status).to.equal('error');
  return parsed.error;
}

/** The version an OPA server says it runs (GET /v1/config: labels.version), as `v1.22.3`. */
async function serverVersion(opa: OpaServer): Promise<string> {
  const res = await opa.request('/v1/config');
  const body = JSON.parse(res.body) as { result?: { labels?: { version?: string } } };
  return `v${body.result?.labels?.version ?? '?'}`;
}

// Rego that both versions parse alike: `import rego.v1` makes 0.x read v1 keywords, 1.x accepts it.
const V1_WITH_IMPORT = (pkg: string, body: string): string => `package ${pkg}\n\nimport rego.v1\n\n${body}\n`;

for (const version of VERSIONS) {
  describe(`OPA ${version}${version === OPA_VERSION ? ' (the default)' : ''}`, function () {
    this.timeout(300_000);

    describe('sidecar basics', () => {
      const suite = cleanupAfterAll();
      let ns: string;
      let opa: OpaServer;

      before(async () => {
        ns = await createNamespace(`matrix-${version.replaceAll('.', '-')}`);
        opa = suite.add(await extraOpa({ version }));
        suite.add(await startSync({ opa, namespaces: ns, args: ['--opa-resync-interval=2s'] }));
      });

      it('runs the OPA of this version', async () => {
        expect(await serverVersion(opa)).to.equal(version);
      });

      it('loads a policy ConfigMap and marks it ok', async () => {
        await putConfigMap(ns, 'allow', {
          'allow.rego': V1_WITH_IMPORT('matrix.allow', 'allow if input.user == "alice"'),
        });
        expect(await waitOk(ns, 'allow')).to.equal(OK);
        expect(await policyIds(opa)).to.include(`${ns}/allow/allow.rego`);
        expect(await evaluate(opa, 'matrix/allow/allow', { user: 'alice' })).to.equal(true);
        expect(await evaluate(opa, 'matrix/allow/allow', { user: 'bob' })).to.equal(undefined);
      });

      it("puts OPA's compile error on a broken policy ConfigMap", async () => {
        await putConfigMap(ns, 'unsafe', {
          'unsafe.rego': V1_WITH_IMPORT('matrix.unsafe', 'allow if x == 1'),
        });
        const error = errorOf(await waitError(ns, 'unsafe'));
        expect(error.code).to.equal('invalid_parameter');
        expect(error.message).to.equal('error(s) occurred while compiling module(s)');
        expect(error.errors?.[0]?.code).to.equal('rego_unsafe_var_error');
        expect(error.errors?.[0]?.message).to.match(/var x is unsafe/);
        expect(error.errors?.[0]?.location?.file).to.equal(`${ns}/unsafe/unsafe.rego`);
        expect(await statusOf(ns, 'allow')).to.equal(OK);
      });

      it(`parses a ConfigMap's Rego as ${isV0(version) ? 'v0' : 'v1'}, as this OPA does by default`, async () => {
        // The same two texts: v0 (`deny[msg] { … }`) and v1 without the import (`deny contains msg if …`).
        await putConfigMap(ns, 'rego-v0', {
          'v0.rego': 'package matrix.regov0\n\ndeny[msg] {\n  input.x\n  msg := "x"\n}\n',
        });
        await putConfigMap(ns, 'rego-v1', {
          'v1.rego': 'package matrix.regov1\n\ndeny contains msg if {\n  input.x\n  msg := "x"\n}\n',
        });
        const [native, foreign] = isV0(version) ? ['rego-v0', 'rego-v1'] : ['rego-v1', 'rego-v0'];
        expect(await waitOk(ns, native)).to.equal(OK);
        const error = errorOf(await waitError(ns, foreign));
        expect(error.errors?.[0]?.code).to.equal('rego_parse_error');
        const pkg = native === 'rego-v0' ? 'regov0' : 'regov1';
        expect(await evaluate(opa, `matrix/${pkg}/deny`, { x: true })).to.deep.equal(['x']);
      });

      it('loads a data ConfigMap, and deleting ConfigMaps unloads exactly theirs', async () => {
        await putConfigMap(ns, 'data-keep', { 'keep.json': '{"keep": true}' }, { labels: DATA_LABEL });
        await putConfigMap(ns, 'data-drop', { 'a.json': '{"a": [1, "x"]}' }, { labels: DATA_LABEL });
        await putConfigMap(ns, 'dropped', {
          'dropped.rego': V1_WITH_IMPORT('matrix.dropped', 'allow := true'),
        });
        await Promise.all(['data-keep', 'data-drop', 'dropped'].map((name) => waitOk(ns, name)));
        expect(await opaData(opa, `${ns}/data-drop/a.json`)).to.deep.equal({ a: [1, 'x'] });

        await deleteConfigMap(ns, 'data-drop');
        await deleteConfigMap(ns, 'dropped');
        await waitPolicy(opa, `${ns}/dropped/dropped.rego`, false);
        await waitFor('the deleted data ConfigMap to be gone from OPA', async () =>
          (await opaData(opa, `${ns}/data-drop`)) === undefined ? true : undefined,
        );
        expect(await evaluate(opa, 'matrix/dropped/allow')).to.equal(undefined);
        expect(await opaData(opa, `${ns}/data-keep/keep.json`)).to.deep.equal({ keep: true });
        expect(await evaluate(opa, 'matrix/allow/allow', { user: 'alice' })).to.equal(true);
      });
    });

    // The default OPA's run of the article is test/e2e/seed-scenario.test.ts (the same scenario, three
    // variants): not repeated here.
    if (version !== OPA_VERSION) describeArticle(version);

    describe('bundles', () => {
      const perTest = cleanupAfterEach();
      let ns: string;

      before(async () => {
        ns = await createNamespace(`matrix-b-${version.replaceAll('.', '-')}`);
      });

      /** An OPA of this version polling opa-sync's bundle `policies` every 1–2 s; stopped after the test. */
      const pulling = async (
        name: string,
        bundleUrl: string,
        signing?: { publicKey: string },
      ): Promise<OpaServer> =>
        perTest.add(
          await opaWithConfig(
            {
              labels: { id: name },
              services: { opasync: { url: bundleUrl } },
              ...(signing === undefined
                ? {}
                : { keys: { fleet: { algorithm: 'RS256', key: signing.publicKey } } }),
              bundles: {
                policies: {
                  service: 'opasync',
                  resource: 'bundles/policies',
                  polling: { min_delay_seconds: 1, max_delay_seconds: 2 },
                  ...(signing === undefined ? {} : { signing: { keyid: 'fleet' } }),
                },
              },
            },
            { version },
          ),
        );

      it("an OPA of this version pulls opa-sync's signed bundle by URL, follows an edit, gets 304 when unchanged; a wrong key is refused", async () => {
        const signer = generateKeyPairSync('rsa', { modulusLength: 2048 });
        const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 });
        const keyFile = path.join(runDir(), `matrix-signing-${version}.pem`);
        writeFileSync(keyFile, signer.privateKey.export({ type: 'pkcs8', format: 'pem' }));
        const policy = (n: number): Record<string, string> => ({
          'p.rego': V1_WITH_IMPORT('matrix.signed', `allow if input.n == ${n}`),
        });
        await putConfigMap(ns, 'signed', policy(1), { labels: { 'opa-sync.test/matrix': 'signed' } });
        const sync = perTest.add(
          await startBundleSync({
            namespaces: ns,
            // Validated by the opa of this version, with its own default Rego version.
            args: [
              `--opa-bin=${requireOpa(version)}`,
              '--policy-label=opa-sync.test/matrix',
              '--policy-value=signed',
              `--bundle-signing-key=${keyFile}`,
              '--bundle-signing-keyid=fleet',
            ],
          }),
        );
        expect(await waitOk(ns, 'signed')).to.equal(OK);
        const served = await downloadBundle(sync.bundleUrl, 'policies');
        expect(served.etag).to.match(/^"[0-9a-f]{64}"$/);
        expect(served.files.has('.signatures.json')).to.equal(true);

        const publicPem = (k: typeof signer): string =>
          k.publicKey.export({ type: 'spki', format: 'pem' }).toString();
        const good = await pulling(`matrix-good-${version}`, sync.bundleUrl, {
          publicKey: publicPem(signer),
        });
        const bad = await pulling(`matrix-bad-${version}`, sync.bundleUrl, { publicKey: publicPem(wrong) });
        await waitDecision(good, 'matrix/signed/allow', true, { input: { n: 1 } });

        await putConfigMap(ns, 'signed', policy(2), { labels: { 'opa-sync.test/matrix': 'signed' } });
        await waitDecision(good, 'matrix/signed/allow', true, { input: { n: 2 } });
        const notModified = () => scrapeMetric(sync, 'opa_sync_bundle_requests_total', { result: '304' });
        const before304 = await notModified();
        await waitFor(
          '304 answers to unchanged polls',
          async () => ((await notModified()) >= before304 + 2 ? true : undefined),
          { timeoutMs: 30_000 },
        );

        await waitFor('the wrong-key OPA to refuse the signature', () =>
          /verif/i.test(logTail(bad.process, 200)) ? true : undefined,
        );
        expect((await bad.request('/health?bundles=true')).status).to.not.equal(200);
        expect(await evaluate(bad, 'matrix/signed/allow', { n: 2 })).to.equal(undefined);
      });

      it(`--bundle-rego-version=1: Rego v1 without the import is validated as v1 by this opa and activated${isV0(version) ? ' once (OPA 0.x parses the next revision as v0), with a warning at start' : ', edits too'}`, async () => {
        const policy = (n: number): Record<string, string> => ({
          'p.rego': `package matrix.regov1\n\nallow if input.n == ${n}\n`,
        });
        const labels = { 'opa-sync.test/matrix': 'rego-v1' };
        await putConfigMap(ns, 'rego-v1', policy(1), { labels });
        const sync = perTest.add(
          await startBundleSync({
            namespaces: ns,
            args: [
              `--opa-bin=${requireOpa(version)}`,
              '--policy-label=opa-sync.test/matrix',
              '--policy-value=rego-v1',
              '--bundle-rego-version=1',
            ],
          }),
        );
        expect(await waitOk(ns, 'rego-v1')).to.equal(OK);
        const served = await downloadBundle(sync.bundleUrl, 'policies');
        expect(JSON.parse(served.files.get('.manifest') ?? '{}')).to.include({ rego_version: 1 });
        const warned = (): boolean =>
          sync.logLines().some((l) => l.level === 40 && String(l.msg).includes('OPA 0.x'));
        const opa = await pulling(`matrix-regov1-${version}`, sync.bundleUrl);
        await waitDecision(opa, 'matrix/regov1/allow', true, { input: { n: 1 } });

        await putConfigMap(ns, 'rego-v1', policy(2), { labels });
        expect(await waitOk(ns, 'rego-v1')).to.equal(OK);
        if (!isV0(version)) {
          await waitDecision(opa, 'matrix/regov1/allow', true, { input: { n: 2 } });
          expect(warned()).to.equal(false);
          return;
        }
        expect(warned()).to.equal(true);
        await waitFor("OPA 0.x to refuse the next revision with Rego v0's parse error", () =>
          /Bundle activation failed:[^"]*rego_parse_error/.test(logTail(opa.process, 200)) ? true : undefined,
        );
        expect(await evaluate(opa, 'matrix/regov1/allow', { n: 1 })).to.equal(true);
      });
    });
  });
}

function describeArticle(version: string): void {
  describe('the network-policy article', () => {
    it(`${ARTICLE_VARIANT.name}${isV0(version) ? ', its Rego native (no flag)' : ''}`, async function () {
      this.timeout(300_000);
      const record = await runSeedScenario(ARTICLE_VARIANT, silent, { opaVersion: version });
      expectArticle(record);
    });

    it(BUNDLES_VARIANT.name, async function () {
      this.timeout(300_000);
      const record = await runSeedScenario(BUNDLES_VARIANT, silent, { opaVersion: version });
      expectArticle(record);
    });
  });
}

function expectArticle(record: Awaited<ReturnType<typeof runSeedScenario>>): void {
  expect(record.ensureNapStatus).to.equal(OK);
  expect(record.enforceNapStatus).to.equal(OK);
  expect(record.deniedMessages).to.have.length(2);
  for (const message of record.deniedMessages) expect(message).to.match(POD_DENIAL);
  expect(record.podsWithoutPolicy).to.deep.equal([]);
  expect(record.podsWithPolicy).to.have.length(2);
  expect(record.riskyPolicy.code).to.not.equal(0);
  expect(record.riskyPolicy.stderr).to.include(RISKY_DENIAL);
  expect(record.recreatedPolicy.code).to.equal(0);
}
