// opa-sync as a bundle server, end to end: ConfigMaps in the real kube-apiserver become bundles that real
// OPA instances pull (periodic and long polling, with a bearer token, signed), broken policies never
// reach them, two opa-sync instances serve identical bytes, and the fleet view lists the OPAs.
// Each test puts the ConfigMaps it asserts on and stops the OPAs it starts, so any one runs alone.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { createNamespace, extraOpa, httpRequest, waitFor, type OpaServer } from '../harness/index.js';
import { downloadBundle, opaWithConfig, type DownloadedBundle } from '../harness/bundles.js';
import {
  OK,
  cleanupAfterAll,
  cleanupAfterEach,
  deleteConfigMap,
  evaluate,
  opaData,
  putConfigMap,
  putPolicyOk,
  scrapeMetric,
  startBundleSync,
  statusOf,
  waitDecision,
  waitError,
  waitOk,
  type BundleSync,
} from '../harness/e2e.js';
import { logTail } from '../harness/processes.js';
import { runDir } from '../harness/run-dir.js';

/** A policy module of package bundles.e2e.<pkg>. */
const rego = (pkg: string, body: string): Record<string, string> => ({
  'p.rego': `package bundles.e2e.${pkg}\n\n${body}\n`,
});

describe('bundle server: ConfigMaps into bundles that real OPAs pull (real OPA + kube-apiserver)', function () {
  this.timeout(180_000);
  const suite = cleanupAfterAll();
  const perTest = cleanupAfterEach();
  let ns: string;
  const token = 'fleet-token-1';
  let sync: BundleSync;

  /** An OPA whose configuration file points it at the suite's opa-sync bundle `policies`; stopped after the test. */
  async function pullingOpa(
    name: string,
    polling: Record<string, number>,
    extra: Record<string, unknown> = {},
  ): Promise<OpaServer> {
    return perTest.add(
      await opaWithConfig({
        labels: { name, app: 'bundle-e2e' },
        services: { opasync: { url: sync.bundleUrl, credentials: { bearer: { token } } } },
        bundles: { policies: { service: 'opasync', resource: 'bundles/policies', polling } },
        status: { service: 'opasync' },
        ...extra,
      }),
    );
  }

  const download = (name = 'policies', from: { bundleUrl: string } = sync): Promise<DownloadedBundle> =>
    downloadBundle(from.bundleUrl, name, from === sync ? token : undefined);

  before(async () => {
    ns = await createNamespace('bundles');
    const tokenFile = path.join(runDir(), 'bundle-tokens');
    writeFileSync(tokenFile, `# tokens of the OPA fleet\n${token}\n`);
    // Never changed by a test: a policy every bundle of the suite's namespace has.
    await putConfigMap(ns, 'base', rego('base', 'allow := true'));
    sync = suite.add(
      await startBundleSync({
        namespaces: ns,
        args: [
          `--bundle-token-file=${tokenFile}`,
          `--bundles-dir=${path.join(runDir(), 'bundles-out')}`,
          '--log-level=debug',
        ],
      }),
    );
    await waitOk(ns, 'base');
  });

  it('refuses a request without the token (401) and serves one with it', async () => {
    const none = await httpRequest(`${sync.bundleUrl}/bundles/policies`);
    expect(none.status).to.equal(401);
    const wrong = await httpRequest(`${sync.bundleUrl}/bundles/policies`, {
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.status).to.equal(401);
    const ok = await httpRequest(`${sync.bundleUrl}/bundles/policies`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(ok.status).to.equal(200);
    expect(ok.headers['content-type']).to.equal('application/vnd.openpolicyagent.bundles');
    expect(ok.headers.etag).to.match(/^"[0-9a-f]{64}"$/);
    expect(ok.headers['content-encoding']).to.equal(undefined);
  });

  it('a periodically polling OPA activates the bundle, gets an edit on its next poll, and unchanged polls are 304', async () => {
    await putConfigMap(ns, 'periodic', rego('periodic', 'allow := true'));
    const opa = await pullingOpa('periodic', { min_delay_seconds: 1, max_delay_seconds: 2 });
    await waitDecision(opa, 'bundles/e2e/periodic/allow', true);
    // The status is written after the bundle is published, so an OPA may take it first.
    await waitOk(ns, 'periodic');

    await putConfigMap(ns, 'periodic', rego('periodic', 'allow := false'));
    await waitDecision(opa, 'bundles/e2e/periodic/allow', false, { timeoutMs: 15_000 });
    const notModified = () => scrapeMetric(sync, 'opa_sync_bundle_requests_total', { result: '304' });
    const before304 = await notModified();
    await waitFor(
      '304 answers to unchanged polls',
      async () => ((await notModified()) >= before304 + 2 ? true : undefined),
      { timeoutMs: 15_000 },
    );
  });

  it('a long-polling OPA is held while idle and gets a change in under a second', async () => {
    await putConfigMap(ns, 'longpoll', rego('longpoll', 'value := 1'));
    // A short long-polling timeout: each request is held just under 3 s, so one hold is quick to see end.
    const opa = await pullingOpa('longpoll', { long_polling_timeout_seconds: 3 });
    await waitDecision(opa, 'bundles/e2e/longpoll/value', 1);
    // This test's OPA is the only client of the suite's bundle server (the others stop after their test).
    const held = () => scrapeMetric(sync, 'opa_sync_bundle_long_polls_held');
    const answered = () => scrapeMetric(sync, 'opa_sync_bundle_requests_total');
    const parked = async (): Promise<void> => {
      await waitFor('a long poll to be held', async () => ((await held()) === 1 ? true : undefined), {
        intervalMs: 20,
      });
    };

    await parked();
    const parkedAt = Date.now();
    const before = await answered();
    // Idle: the held request is answered (304) at the end of its hold, not before, and no other comes.
    await waitFor(
      'the held long poll to be answered',
      async () => ((await answered()) > before ? true : undefined),
      {
        timeoutMs: 10_000,
        intervalMs: 50,
      },
    );
    expect(Date.now() - parkedAt, 'how long the idle long poll was held').to.be.at.least(1500);
    expect((await answered()) - before, 'requests answered during one hold').to.equal(1);

    await parked();
    await putConfigMap(ns, 'longpoll', rego('longpoll', 'value := 2'));
    const changed = Date.now();
    await waitDecision(opa, 'bundles/e2e/longpoll/value', 2, { timeoutMs: 5000, intervalMs: 20 });
    // Debounce (100 ms) and validation with the opa binary are part of the path.
    expect(Date.now() - changed).to.be.below(1000);
  });

  it("keeps a broken ConfigMap out: opa-sync serves its last good version and the annotation carries OPA's error", async () => {
    const good = rego('lastgood', 'allow := true');
    const later = rego('afterbroken', 'allow := true');
    perTest.defer(() => deleteConfigMap(ns, 'lastgood'));
    perTest.defer(() => deleteConfigMap(ns, 'after-broken'));
    await putPolicyOk(ns, 'lastgood', good);
    const opa = await pullingOpa('broken-watch', { min_delay_seconds: 1, max_delay_seconds: 1 });
    await waitDecision(opa, 'bundles/e2e/lastgood/allow', true);

    await putConfigMap(ns, 'lastgood', rego('lastgood', 'allow if {\n  input.x ==\n}'));
    const parsed = JSON.parse(await waitError(ns, 'lastgood')) as {
      status: string;
      error: { code: string; errors: { code: string; location: { file: string; row: number } }[] };
    };
    expect(parsed.status).to.equal('error');
    expect(parsed.error.code).to.equal('invalid_parameter');
    expect(parsed.error.errors[0]?.code).to.equal('rego_parse_error');
    expect(parsed.error.errors[0]?.location.file).to.equal(`${ns}/lastgood/p.rego`);

    // A change made after the broken one: a bundle that has it was built from a state that already
    // held the broken edit. That bundle must carry the last good text, not the broken one.
    await putPolicyOk(ns, 'after-broken', later);
    const served = await waitFor('a served bundle with the later change', async () => {
      const bundle = await download();
      return bundle.files.has(`${ns}/after-broken/p.rego`) ? bundle : undefined;
    });
    expect(served.files.get(`${ns}/lastgood/p.rego`)).to.equal(good['p.rego']);
    expect(served.files.get(`${ns}/after-broken/p.rego`)).to.equal(later['p.rego']);

    // And the OPA activates exactly that bundle, so it runs the last good version too.
    const revision = (JSON.parse(served.files.get('.manifest') ?? '{}') as { revision?: string }).revision;
    expect(revision).to.be.a('string');
    await waitFor('the OPA to activate the served revision', async () =>
      (await opaData(opa, 'system/bundles/policies/manifest/revision')) === revision ? true : undefined,
    );
    expect(await evaluate(opa, 'bundles/e2e/lastgood/allow')).to.equal(true);
    expect(await evaluate(opa, 'bundles/e2e/afterbroken/allow')).to.equal(true);
    expect(await statusOf(ns, 'base')).to.equal(OK);
  });

  it('two OPAs report status and GET /v1/fleet lists both with their active revision', async () => {
    await Promise.all(
      ['fleet-a', 'fleet-b'].map((name) => pullingOpa(name, { min_delay_seconds: 1, max_delay_seconds: 2 })),
    );
    const revision = await waitFor('the current revision', async () => {
      const res = await httpRequest(`${sync.bundleUrl}/bundles/policies`, {
        method: 'HEAD',
        headers: { authorization: `Bearer ${token}` },
      });
      return typeof res.headers.etag === 'string' ? res.headers.etag.replaceAll('"', '') : undefined;
    });
    const fleet = await waitFor(
      'both OPAs in the fleet view on the current revision',
      async () => {
        const res = await httpRequest(`${sync.bundleUrl}/v1/fleet`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const body = JSON.parse(res.body) as {
          instances: {
            id: string;
            labels: Record<string, string>;
            bundles: { name: string; activeRevision?: string }[];
          }[];
        };
        const ours = body.instances.filter(
          (i) => i.labels.app === 'bundle-e2e' && ['fleet-a', 'fleet-b'].includes(i.labels.name ?? ''),
        );
        const current = ours.filter((i) =>
          i.bundles.some((b) => b.name === 'policies' && b.activeRevision === revision),
        );
        return current.length === 2 ? ours : undefined;
      },
      { timeoutMs: 20_000 },
    );
    expect(fleet.map((i) => i.labels.name).sort()).to.deep.equal(['fleet-a', 'fleet-b']);
    // OPA sets labels.id to its own instance id, which is the fleet view's key.
    for (const instance of fleet) expect(instance.id).to.equal(instance.labels.id);
  });

  it('refuses hostile names: special bundle entries from ConfigMap keys, traversal in bundle URLs', async () => {
    await putConfigMap(ns, 'hostile', {
      'patch.json': '{"data": []}',
      '.manifest': '{"roots": [""]}',
      'x.signatures.json': '{}',
      'ok.rego': 'package bundles.e2e.hostile\n\nallow := true\n',
    });
    const status = await waitError(ns, 'hostile');
    const errors = (JSON.parse(status) as { error: { code: string; message: string }[] }).error;
    expect(errors.map((e) => e.code)).to.deep.equal([
      'invalid_bundle_path',
      'invalid_bundle_path',
      'invalid_bundle_path',
    ]);
    const bundle = await waitFor('the hostile ConfigMap’s good key in the bundle', async () => {
      const b = await download();
      return b.files.has(`${ns}/hostile/ok.rego`) ? b : undefined;
    });
    const names = [...bundle.files.keys()];
    expect(names.filter((n) => n.startsWith(`${ns}/hostile/`))).to.deep.equal([`${ns}/hostile/ok.rego`]);
    expect(
      names.filter((n) => /(^|\/)(patch\.json|\.manifest|[^/]*signatures\.json)$/.test(n)),
    ).to.deep.equal(['.manifest']);
    for (const evil of ['/bundles/..%2f..%2fetc%2fpasswd', '/bundles/%2e%2e/x', '/bundles/a%00b']) {
      const res = await httpRequest(`${sync.bundleUrl}${evil}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect([400, 404], evil).to.include(res.status);
    }
  });

  it('serves named bundles from the bundle label, refuses overlapping roots, and writes --bundles-dir', async () => {
    const labels = (bundle: string) => ({
      'openpolicyagent.org/policy': 'rego',
      'openpolicyagent.org/bundle': bundle,
    });
    perTest.defer(() => deleteConfigMap(ns, 'team-a'));
    perTest.defer(() => deleteConfigMap(ns, 'team-b'));
    await putConfigMap(
      ns,
      'team-a',
      { 'a.rego': 'package teams.a\n\nallow := true\n' },
      { labels: labels('team-a') },
    );
    await waitOk(ns, 'team-a');
    await putConfigMap(
      ns,
      'team-b',
      { 'b.rego': 'package teams.a.sub\n\nallow := true\n' },
      { labels: labels('team-b') },
    );
    const refused = await waitError(ns, 'team-b');
    const error = (JSON.parse(refused) as { error: { code: string; message: string } }).error;
    expect(error.code).to.equal('bundle_roots_overlap');
    expect(error.message).to.include('bundle "team-b"');
    expect(error.message).to.include('bundle "team-a"');
    const teamA = await download('team-a');
    // Only team-a's module: none of the default bundle's.
    expect([...teamA.files.keys()].filter((n) => n.endsWith('.rego'))).to.deep.equal([`${ns}/team-a/a.rego`]);
    const written = path.join(runDir(), 'bundles-out', 'team-a.tar.gz');
    await waitFor('team-a.tar.gz in --bundles-dir', () =>
      existsSync(written) && readFileSync(written).equals(teamA.response.bytes) ? true : undefined,
    );
  });

  it('two opa-sync instances on the same inputs serve byte-identical bundles with the same ETag', async () => {
    // A namespace of their own, so that no ConfigMap is on a last good version that only one has seen;
    // the first instance sees a history of edits, the second only their result.
    const own = await createNamespace('twins');
    await putConfigMap(own, 'one', rego('twins.one', 'allow := false'));
    await putConfigMap(
      own,
      'data',
      { 'd.json': '{"b": [2, 1], "a": {"z": 1, "y": 2}}' },
      {
        labels: { 'openpolicyagent.org/data': 'opa' },
      },
    );
    const first = perTest.add(await startBundleSync({ namespaces: own }));
    await waitOk(own, 'one');
    await putConfigMap(own, 'one', rego('twins.one', 'allow := true'));
    await putConfigMap(own, 'two', rego('twins.two', 'allow := true'));
    await waitOk(own, 'two');
    const second = perTest.add(await startBundleSync({ namespaces: own }));
    const [a, b] = await waitFor('both to serve the same revision of everything', async () => {
      const [x, y] = await Promise.all([first, second].map((s) => download('policies.tar.gz', s)));
      if (x === undefined || y === undefined) return undefined;
      const complete =
        x.files.get(`${own}/one/p.rego`)?.includes('allow := true') === true &&
        x.files.has(`${own}/two/p.rego`);
      return complete && x.etag === y.etag ? ([x, y] as const) : undefined;
    });
    expect(b.response.bytes.equals(a.response.bytes)).to.equal(true);
    expect(a.response.bytes.length).to.be.greaterThan(100);
  });

  it('pushes into an OPA and serves bundles from one process when both are configured', async () => {
    await putConfigMap(ns, 'both', rego('both', 'allow := true'));
    const pushed = perTest.add(await extraOpa());
    const both = perTest.add(
      await startBundleSync({
        namespaces: ns,
        opa: pushed,
        args: ['--status-annotation=example.com/both-status'],
      }),
    );
    await waitDecision(pushed, 'bundles/e2e/both/allow', true);
    const bundle = await waitFor('the policy in the bundle', async () => {
      const b = await download('policies', both);
      return b.files.has(`${ns}/both/p.rego`) ? b : undefined;
    });
    expect(bundle.files.get(`${ns}/base/p.rego`)).to.include('package bundles.e2e.base');
    const ready = JSON.parse((await httpRequest(`${both.opsUrl}/ready`)).body) as {
      checks: Record<string, boolean>;
    };
    expect(ready.checks).to.deep.equal({
      ops: true,
      'bundle-server': true,
      status: true,
      opa: true,
      bundles: true,
      configmaps: true,
    });
    await waitOk(ns, 'both', 'example.com/both-status');
  });

  it('signs bundles: an OPA with the public key activates, one with a wrong key refuses', async () => {
    const signer = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(runDir(), 'bundle-signing.pem');
    writeFileSync(keyFile, signer.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const signing = perTest.add(
      await startBundleSync({
        namespaces: ns,
        args: [`--bundle-signing-key=${keyFile}`, '--bundle-signing-keyid=fleet'],
      }),
    );
    const signedOpa = async (name: string, publicKey: string): Promise<OpaServer> =>
      perTest.add(
        await opaWithConfig({
          labels: { id: name },
          services: { signed: { url: signing.bundleUrl } },
          keys: { fleet: { algorithm: 'RS256', key: publicKey } },
          bundles: {
            policies: {
              service: 'signed',
              resource: 'bundles/policies',
              polling: { min_delay_seconds: 1, max_delay_seconds: 2 },
              signing: { keyid: 'fleet' },
            },
          },
        }),
      );
    const good = await signedOpa(
      'signed-good',
      signer.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    );
    const bad = await signedOpa(
      'signed-bad',
      wrong.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    );
    await waitDecision(good, 'bundles/e2e/base/allow', true);
    // The wrong key never activates: wait until the OPA has downloaded the bundle and refused it (its
    // log names the verification), then its bundle health is failing and nothing is defined.
    await waitFor('the wrong-key OPA to refuse the signature', () =>
      /verif/i.test(logTail(bad.process, 200)) ? true : undefined,
    );
    expect((await bad.request('/health?bundles=true')).status).to.not.equal(200);
    expect(await evaluate(bad, 'bundles/e2e/base/allow')).to.equal(undefined);
  });
});
