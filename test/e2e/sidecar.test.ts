// The sidecar against the real kube-apiserver and a real OPA: kube-mgmt's own e2e scenarios, dependency
// order across keys and ConfigMaps, precise removals, bad input isolated to its ConfigMap, OPA restarts,
// and opa-sync running as a ServiceAccount that may only touch ConfigMaps in the watched namespace.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { KubeConfig, CoreV1Api, NetworkingV1Api, type V1NetworkPolicy } from '@kubernetes/client-node';
import { controlPlane, createNamespace, extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import type { OpaSyncProcess } from '../harness/opa-sync.js';
import { CONFIGMAP_RULES, serviceAccountKubeconfig } from '../harness/rbac.js';
import { httpRequest } from '../harness/http.js';
import {
  DATA_LABEL,
  OK,
  POLICY_LABEL,
  STATUS,
  adminCore,
  annotationsOf,
  cleanupAfterAll,
  cleanupAfterEach,
  countLog,
  evaluate as evaluateIn,
  opaData,
  policyIds as policyIdsOf,
  putConfigMap,
  scrapeMetric,
  startSync,
  statusOf,
  waitError,
  waitLog,
  waitOk,
  waitPolicy,
  waitStatus,
} from '../harness/e2e.js';

interface StatusError {
  code: string;
  message: string;
  errors?: { code: string; message: string; location?: { file: string; row: number; col: number } }[];
}

function errorOf(value: string): StatusError | StatusError[] {
  const parsed = JSON.parse(value) as { status: string; error: StatusError | StatusError[] };
  expect(parsed.status).to.equal('error');
  return parsed.error;
}

describe('sidecar: ConfigMaps into OPA (real OPA + kube-apiserver)', function () {
  this.timeout(120_000);
  const suite = cleanupAfterAll();
  let ns: string;
  let other: string;
  let opa: OpaServer;
  let sync: OpaSyncProcess;
  let kubeconfig: string;

  const put = (
    name: string,
    data: Record<string, string>,
    labels: Record<string, string> = POLICY_LABEL,
    binaryData?: Record<string, string>,
  ): Promise<void> => putConfigMap(ns, name, data, { labels, ...(binaryData ? { binaryData } : {}) });
  const policyIds = (): Promise<string[]> => policyIdsOf(opa);
  const data = (path: string): Promise<unknown> => opaData(opa, path);
  const evaluate = (path: string, input: unknown = {}): Promise<unknown> => evaluateIn(opa, path, input);
  const loadsOf = (name: string): number =>
    countLog(sync, (l) => l.msg === 'loaded' && l.origin === `configmap ${ns}/${name}`);

  // ConfigMaps that several tests expect to be there and loaded; each of those puts them first (a no-op
  // when they are already there as they should be).
  const INCLUDE = { 'include.rego': 'package e2e.include\n\nallow := true\n' };
  const INCLUDE_DATA = { 'include.json': '{"a": [1, "x"]}' };
  const MULTI_OK = {
    // a.rego sorts first and needs b.rego's function: the first attempt fails, the retry succeeds.
    'a.rego': 'package e2e.multi.a\n\nimport data.e2e.multi.b\n\nallow if b.positive(1)\n',
    'b.rego': 'package e2e.multi.b\n\npositive(x) if x > 0\n',
  };
  async function baseline(): Promise<void> {
    await put('policy-include', INCLUDE);
    await put('data-include', INCLUDE_DATA, DATA_LABEL);
    await put('multi-ok', MULTI_OK);
    await Promise.all(['policy-include', 'data-include', 'multi-ok'].map((name) => waitOk(ns, name)));
  }

  before(async () => {
    ns = await createNamespace('sidecar');
    other = await createNamespace('unwatched');
    opa = suite.add(await extraOpa());
    // Least privilege: a Role in the watched namespace only, with what opa-sync needs there.
    kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    sync = suite.add(
      await startSync({
        kubeconfig,
        opa,
        namespaces: ns,
        args: ['--opa-resync-interval=1s', '--log-level=debug'],
      }),
    );
  });

  it('runs as a ServiceAccount that cannot read ConfigMaps outside the watched namespace', async () => {
    const restricted = new KubeConfig();
    restricted.loadFromFile(kubeconfig);
    const api = restricted.makeApiClient(CoreV1Api);
    const err = await api.listNamespacedConfigMap({ namespace: other }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as { code?: number }).code).to.equal(403);
    expect((await api.listNamespacedConfigMap({ namespace: ns })).items).to.be.an('array');
  });

  it('loads labelled policy and data ConfigMaps, ignores a wrong label value and unlabelled ones', async () => {
    await put('policy-include', INCLUDE);
    await put('data-include', INCLUDE_DATA, DATA_LABEL);
    await put(
      'policy-wrong-value',
      { 'x.rego': 'package e2e.wrong\n\nallow := true\n' },
      { 'openpolicyagent.org/policy': 'nope' },
    );
    await put('policy-unlabelled', { 'x.rego': 'package e2e.unlabelled\n\nallow := true\n' }, {});

    expect(await waitOk(ns, 'policy-include')).to.equal(OK);
    expect(await waitOk(ns, 'data-include')).to.equal(OK);
    expect(await evaluate('e2e/include/allow')).to.equal(true);
    expect(await data(`${ns}/data-include/include.json`)).to.deep.equal({ a: [1, 'x'] });

    const ids = await policyIds();
    expect(ids).to.include(`${ns}/policy-include/include.rego`);
    expect(ids.filter((id) => id.includes('wrong-value') || id.includes('unlabelled'))).to.deep.equal([]);
    expect(await statusOf(ns, 'policy-wrong-value')).to.equal(undefined);
    expect(await statusOf(ns, 'policy-unlabelled')).to.equal(undefined);
  });

  it('loads a two-key ConfigMap whose keys depend on each other; a missing dependency ends in error', async () => {
    await put('multi-ok', MULTI_OK);
    await put('multi-missing', {
      'a.rego': 'package e2e.missing.a\n\nimport data.e2e.missing.nowhere\n\nallow if nowhere.f(1)\n',
    });
    expect(await waitOk(ns, 'multi-ok')).to.equal(OK);
    expect(await evaluate('e2e/multi/a/allow')).to.equal(true);

    const failed = errorOf(await waitStatus(ns, 'multi-missing', (v) => v.startsWith('{"status":"error"')));
    expect(failed).to.not.be.an('array');
    const single = failed as StatusError;
    expect(single.code).to.equal('invalid_parameter');
    expect(single.errors?.[0]?.location?.file).to.equal(`${ns}/multi-missing/a.rego`);
  });

  it('heals the order across ConfigMaps: B (needs A) first shows an error, then both are ok once A exists', async () => {
    await put('order-b', {
      'b.rego': 'package e2e.order.b\n\nimport data.e2e.order.a\n\nallow if a.double(2) == 4\n',
    });
    const before = errorOf(await waitError(ns, 'order-b')) as StatusError;
    expect(before.errors?.[0]?.message).to.match(/undefined function/);

    // Let B's retry backoff grow past a second, so only the "retry at once when another module loads" rule
    // can make it ok quickly: with retries after ~1 s and ~2 s (backoff from 1 s, doubling), the third
    // failed load leaves ~4 s until the next one.
    const failedLoads = (l: Record<string, unknown>): boolean =>
      l.msg === 'loaded with errors' && l.origin === `configmap ${ns}/order-b`;
    await waitLog(sync, 'the third failed load of order-b', failedLoads, { count: 3 });
    await put('order-a', { 'a.rego': 'package e2e.order.a\n\ndouble(x) := 2 * x\n' });
    await waitOk(ns, 'order-a');
    const aOkAt = Date.now();
    await waitFor(
      'order-b to become ok',
      async () => ((await statusOf(ns, 'order-b')) === OK ? true : undefined),
      {
        timeoutMs: 10_000,
        intervalMs: 50,
      },
    );
    expect(Date.now() - aOkAt, 'B loads right after A, not at its next backoff step').to.be.below(1000);
    expect(await evaluate('e2e/order/b/allow')).to.equal(true);
  });

  it('unloads when the label is removed and reloads when it is added back', async () => {
    await put('toggle', { 't.rego': 'package e2e.toggle\n\nallow := true\n' });
    await waitOk(ns, 'toggle');
    const id = `${ns}/toggle/t.rego`;
    expect(await policyIds()).to.include(id);

    await put('toggle', { 't.rego': 'package e2e.toggle\n\nallow := true\n' }, {});
    await waitPolicy(opa, id, false);

    await put('toggle', { 't.rego': 'package e2e.toggle\n\nallow := true\n' });
    await waitPolicy(opa, id);
  });

  it('deletes a key removed on update, and removes exactly the path of a deleted data ConfigMap', async () => {
    await baseline();
    await put('keys', {
      'one.rego': 'package e2e.keys.one\n\nx := 1\n',
      'two.rego': 'package e2e.keys.two\n\nx := 2\n',
    });
    await waitOk(ns, 'keys');
    await put('keys', { 'one.rego': 'package e2e.keys.one\n\nx := 1\n' });
    await waitPolicy(opa, `${ns}/keys/two.rego`, false);
    expect(await policyIds()).to.include(`${ns}/keys/one.rego`);

    await put('data-keep', { 'keep.json': '{"keep": true}' }, DATA_LABEL);
    await put('data-drop', { 'a.json': '{"a": 1}', 'b.json': '{"b": 2}' }, DATA_LABEL);
    await waitOk(ns, 'data-keep');
    await waitOk(ns, 'data-drop');
    await put('data-drop', { 'a.json': '{"a": 1}' }, DATA_LABEL);
    await waitFor('b.json to be removed', async () =>
      ((await data(`${ns}/data-drop`)) as Record<string, unknown>)['b.json'] === undefined ? true : undefined,
    );
    expect(await data(`${ns}/data-drop`)).to.deep.equal({ 'a.json': { a: 1 } });

    await (await adminCore()).deleteNamespacedConfigMap({ name: 'data-drop', namespace: ns });
    await waitFor('the deleted ConfigMap path to be gone', async () =>
      (await data(`${ns}/data-drop`)) === undefined ? true : undefined,
    );
    expect(await data(`${ns}/data-keep/keep.json`)).to.deep.equal({ keep: true });
    expect(await data(`${ns}/data-include/include.json`)).to.deep.equal({ a: [1, 'x'] });
  });

  it("puts OPA's exact compile error (file, row, col) on the broken ConfigMap only", async () => {
    await baseline();
    await put('broken', { 'broken.rego': 'package e2e.broken\n\nallow if {\n  input.x ==\n}\n' });
    const error = errorOf(await waitError(ns, 'broken')) as StatusError;
    expect(error.code).to.equal('invalid_parameter');
    expect(error.message).to.equal('error(s) occurred while compiling module(s)');
    const location = error.errors?.[0]?.location;
    expect(location?.file).to.equal(`${ns}/broken/broken.rego`);
    expect(location?.row).to.be.a('number').greaterThan(0);
    expect(location?.col).to.be.a('number').greaterThan(0);
    // Everything else is still loaded and ok.
    expect(await statusOf(ns, 'policy-include')).to.equal(OK);
    expect(await statusOf(ns, 'multi-ok')).to.equal(OK);
    expect(await evaluate('e2e/include/allow')).to.equal(true);
  });

  it('ignores a labelled ConfigMap in a namespace that is not watched', async () => {
    await putConfigMap(other, 'intruder', { 'x.rego': 'package e2e.intruder\n\nallow := true\n' });
    await put('after-intruder', { 'x.rego': 'package e2e.after\n\nallow := true\n' });
    await waitOk(ns, 'after-intruder');
    expect((await policyIds()).filter((id) => id.startsWith(`${other}/`))).to.deep.equal([]);
    expect(await evaluate('e2e/intruder/allow')).to.equal(undefined);
    expect(await statusOf(other, 'intruder')).to.equal(undefined);
  });

  describe('bad input, each a clear error on its own ConfigMap', () => {
    it('invalid JSON and a top-level array in data ConfigMaps name the key', async () => {
      await put('bad-json', { 'bad.json': '{"a": ', 'good.json': '{"fine": true}' }, DATA_LABEL);
      await put('bad-array', { 'list.json': '[1, 2]' }, DATA_LABEL);
      const badJson = errorOf(await waitError(ns, 'bad-json')) as StatusError;
      expect(badJson.code).to.equal('invalid_json');
      expect(badJson.message).to.match(/^key "bad\.json" is not valid JSON: /);
      expect(await data(`${ns}/bad-json/good.json`)).to.deep.equal({ fine: true });
      const array = errorOf(await waitError(ns, 'bad-array')) as StatusError;
      expect(array).to.deep.equal({
        code: 'invalid_data',
        message: 'key "list.json" must hold a JSON object, not an array',
      });
    });

    it('data nested 6,000 deep ends in a clear error; nothing stops, and a new opa-sync gets ready with it', async () => {
      await baseline();
      const deep = `${'{"a":'.repeat(6000)}1${'}'.repeat(6000)}`;
      // JSON.parse accepts it; OPA would too (its limit is 10,000 levels).
      expect(() => JSON.parse(deep) as unknown).not.to.throw();
      await put('deep', { 'deep.json': deep, 'fine.json': '{"fine": true}' }, DATA_LABEL);
      expect(errorOf(await waitError(ns, 'deep'))).to.deep.equal({
        code: 'data_too_deep',
        message: 'key "deep.json" is nested deeper than 1000 levels: not loaded',
      });
      expect(await data(`${ns}/deep/fine.json`)).to.deep.equal({ fine: true });
      // Everything else goes on: a new policy loads, no part was restarted, opa-sync is ready.
      await put('after-deep', { 'a.rego': 'package e2e.afterdeep\n\nallow := true\n' });
      await waitOk(ns, 'after-deep');
      const health = JSON.parse((await httpRequest(`${sync.opsUrl}/health`)).body) as {
        parts: Record<string, { restarts: number }>;
      };
      expect(health.parts['opa']?.restarts).to.equal(0);
      expect((await httpRequest(`${sync.opsUrl}/ready`)).status).to.equal(200);
      // Started while the ConfigMap exists, another opa-sync gets ready too.
      const again = await startSync({ kubeconfig, opa, namespaces: ns });
      await again.stop();
    });

    it('an empty policy carries OPA’s error; a policy near the 1 MiB limit loads', async () => {
      await put('empty', { 'empty.rego': '' });
      const empty = errorOf(await waitError(ns, 'empty')) as StatusError;
      expect(empty.code).to.equal('invalid_parameter');
      expect(empty.message).to.match(/empty module/);

      const rules: string[] = ['package e2e.big', ''];
      let size = 0;
      for (let i = 0; size < 1_000_000; i += 1) {
        const line = `r${i} := "${'x'.repeat(80)}"`;
        rules.push(line);
        size += line.length + 1;
      }
      const text = `${rules.join('\n')}\n`;
      expect(text.length).to.be.within(1_000_000, 1_048_000);
      await put('big', { 'big.rego': text });
      expect(await waitStatus(ns, 'big', (v) => v === OK || v.startsWith('{"status":"error"'))).to.equal(OK);
      expect(await evaluate('e2e/big/r0')).to.equal('x'.repeat(80));
    });

    it('keys with dots and dashes load; a key with non-ASCII letters is refused by the API server', async () => {
      await put('odd-keys', {
        'my.policy-v1.rego': 'package e2e.odd.one\n\nallow := true\n',
        'another_one-2.rego': 'package e2e.odd.two\n\nallow := true\n',
      });
      await waitOk(ns, 'odd-keys');
      expect(await policyIds()).to.include.members([
        `${ns}/odd-keys/my.policy-v1.rego`,
        `${ns}/odd-keys/another_one-2.rego`,
      ]);
      const err = await (
        await adminCore()
      )
        .createNamespacedConfigMap({
          namespace: ns,
          body: {
            metadata: { name: 'non-ascii', labels: POLICY_LABEL },
            data: { 'règle.rego': 'package e2e.nonascii\n' },
          },
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect((err as { code?: number }).code).to.equal(422);
    });

    it('binaryData keys are reported, not loaded, and the text keys still load', async () => {
      await put('binary', { 'ok.rego': 'package e2e.binary\n\nallow := true\n' }, POLICY_LABEL, {
        'blob.bin': Buffer.from('x').toString('base64'),
      });
      const error = errorOf(await waitError(ns, 'binary')) as StatusError;
      expect(error.code).to.equal('binary_data_not_loaded');
      expect(error.message).to.include('"blob.bin"');
      expect(await evaluate('e2e/binary/allow')).to.equal(true);
    });

    it('several failing keys give an array of errors', async () => {
      await put('two-broken', {
        'a.rego': 'package e2e.tb.a\n\nallow if {',
        'b.rego': 'package e2e.tb.b\n\nx := [',
      });
      const errors = errorOf(await waitError(ns, 'two-broken'));
      expect(errors).to.be.an('array').with.length(2);
      const files = (errors as StatusError[]).map((e) => e.errors?.[0]?.location?.file);
      expect(files).to.deep.equal([`${ns}/two-broken/a.rego`, `${ns}/two-broken/b.rego`]);
    });
  });

  it('does not reload when only the status annotation (or any annotation) changes', async () => {
    await baseline();
    const loadsBefore = loadsOf('policy-include');
    await (
      await adminCore()
    ).patchNamespacedConfigMap({
      name: 'policy-include',
      namespace: ns,
      body: [{ op: 'add', path: '/metadata/annotations/touched', value: 'yes' }],
    });
    // No fixed wait: a ConfigMap changed after the touch is loaded, so the watch has delivered the touch
    // (events come in order) and opa-sync has handled it; nothing was loaded for it.
    await put('marker-after-touch', { 'm.rego': 'package e2e.marker\n\nallow := true\n' });
    await waitOk(ns, 'marker-after-touch');
    expect(loadsOf('policy-include')).to.equal(loadsBefore);
  });

  it('serves /health, /ready and Prometheus /metrics', async () => {
    // Something loaded, and something OPA refused to compile.
    await baseline();
    await put('metrics-broken', { 'x.rego': 'package e2e.metrics\n\nallow if {' });
    await waitError(ns, 'metrics-broken');
    const health = await httpRequest(`${sync.opsUrl}/health`);
    expect(health.status).to.equal(200);
    const parts = (JSON.parse(health.body) as { parts: Record<string, { phase: string; restarts: number }> })
      .parts;
    for (const name of ['ops', 'status', 'opa', 'configmaps']) {
      expect(parts[name], name).to.deep.include({ phase: 'running', restarts: 0 });
    }
    const ready = await httpRequest(`${sync.opsUrl}/ready`);
    expect(ready.status).to.equal(200);
    // One check per part: the ops server, the status writer, the OPA push, the ConfigMap source.
    expect(JSON.parse(ready.body)).to.deep.equal({
      ready: true,
      checks: { ops: true, status: true, opa: true, configmaps: true },
    });
    const metrics = (await httpRequest(`${sync.opsUrl}/metrics`)).body;
    expect(metrics).to.match(/^opa_sync_loads_total\{kind="policy",result="ok"\} [1-9]/m);
    expect(metrics).to.match(/^opa_sync_load_errors_total\{code="invalid_parameter"\} [1-9]/m);
    expect(metrics).to.include('opa_sync_opa_request_duration_seconds_bucket');
    expect(metrics).to.include('opa_sync_queue_depth');
  });

  it('pushes everything again after OPA is killed (-9) and restarted, within twice the resync interval', async () => {
    await baseline();
    await put('data-keep', { 'keep.json': '{"keep": true}' }, DATA_LABEL);
    await waitOk(ns, 'data-keep');
    const idsBefore = (await policyIds()).filter((id) => id.startsWith(`${ns}/`));
    expect(idsBefore).to.include.members([
      `${ns}/policy-include/include.rego`,
      `${ns}/multi-ok/a.rego`,
      `${ns}/multi-ok/b.rego`,
    ]);
    // A module no ConfigMap backs, outside the watched namespace: opa-sync never puts it back, so its
    // absence shows OPA lost its state. (Checking that the namespace's modules are gone would race opa-sync,
    // which may have pushed them again before the check runs.)
    const marker = `${ns}-restart-marker/m.rego`;
    const put1 = await opa.request(`/v1/policies/${marker}`, {
      method: 'PUT',
      body: 'package e2e.restartmarker\n\nallow := true\n',
    });
    expect(put1.status, marker).to.equal(200);
    await opa.restart();
    const restartedAt = Date.now();
    expect(await policyIds(), 'OPA restarted empty').not.to.include(marker);
    await waitFor(
      'all policies back',
      async () => {
        const ids = (await policyIds()).filter((id) => id.startsWith(`${ns}/`));
        return JSON.stringify(ids) === JSON.stringify(idsBefore) ? ids : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const elapsed = Date.now() - restartedAt;
    expect(elapsed, 'policies back within twice the 1 s resync interval').to.be.below(2_000);
    expect(await data(`${ns}/data-keep/keep.json`)).to.deep.equal({ keep: true });
    expect(await data(`${ns}/data-include/include.json`)).to.deep.equal({ a: [1, 'x'] });
    expect(await evaluate('e2e/multi/a/allow')).to.equal(true);
    expect(await statusOf(ns, 'policy-include')).to.equal(OK);
  });

  it('counts an OPA restart in opa_sync_opa_restarts_detected_total, also when OPA was down at a check', async () => {
    await baseline();
    const restarts = (): Promise<number> => scrapeMetric(sync, 'opa_sync_opa_restarts_detected_total');
    const allBack = async (): Promise<void> => {
      await waitFor('the policies back in OPA', async () =>
        (await policyIds()).includes(`${ns}/multi-ok/b.rego`) ? true : undefined,
      );
    };
    const before = await restarts();
    // OPA stays down until opa-sync's check has failed on it: the restart cannot fit between two checks.
    const unreachable = (l: Record<string, unknown>): boolean => l.msg === 'OPA is not reachable';
    const seenDown = countLog(sync, unreachable);
    await opa.restart(() => waitLog(sync, 'opa-sync seeing OPA down', unreachable, { count: seenDown + 1 }));
    await allBack();
    await waitFor('the restart to be counted', async () =>
      (await restarts()) === before + 1 ? true : undefined,
    );
    // A restart quicker than the check interval counts once too.
    await opa.restart();
    await allBack();
    await waitFor('the second restart to be counted', async () =>
      (await restarts()) === before + 2 ? true : undefined,
    );
    expect(await statusOf(ns, 'policy-include')).to.equal(OK);
    // The web page's OPA push view says the same.
    const page = JSON.parse((await httpRequest(`${sync.opsUrl}/ui/state.json`)).body) as {
      opa: { restartsDetected: number; lastRestartAt?: string; lastFullPushAt?: string; reachable: boolean };
    };
    expect(page.opa.restartsDetected).to.equal(await restarts());
    expect(page.opa.reachable).to.equal(true);
    expect(Date.parse(page.opa.lastFullPushAt ?? '')).to.be.at.least(
      Date.parse(page.opa.lastRestartAt ?? ''),
    );
  });

  it('keeps watching after the API server restarts', async () => {
    const cp = await controlPlane();
    const watchErrors = (): Promise<number> => scrapeMetric(sync, 'opa_sync_watch_errors_total');
    const errorsBefore = await watchErrors();
    await cp.stopApiServer();
    // Not a fixed pause: the API server stays down until opa-sync has seen its watch fail, so the
    // restart-with-backoff path is what brings it back.
    await waitFor('opa-sync to see its watch fail', async () =>
      (await watchErrors()) > errorsBefore ? true : undefined,
    );
    await cp.startApiServer();
    await put('after-apiserver-restart', { 'r.rego': 'package e2e.restart\n\nallow := true\n' });
    await waitStatus(ns, 'after-apiserver-restart', (v) => v === OK, { timeoutMs: 60_000 });
    expect(await evaluate('e2e/restart/allow')).to.equal(true);
  });

  it('stops cleanly on SIGTERM', async () => {
    const extra = await startSync({ kubeconfig, opa, namespaces: ns });
    await extra.process.stop(10_000);
    expect(await extra.process.exited).to.equal('exit 0');
  });
});

describe('sidecar: removals leave nothing behind, and nothing more is removed (real OPA + kube-apiserver)', function () {
  this.timeout(120_000);
  const suite = cleanupAfterAll();
  const perTest = cleanupAfterEach();
  let opa: OpaServer;

  before(async () => {
    opa = suite.add(await extraOpa());
  });

  /** opa-sync for a fresh namespace, as a ServiceAccount that may only touch ConfigMaps there. */
  async function start(
    prefix: string,
    args: string[] = [],
  ): Promise<{ ns: string; sync: OpaSyncProcess; kubeconfig: string }> {
    const ns = await createNamespace(prefix);
    const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    const sync = perTest.add(
      await startSync({ kubeconfig, opa, namespaces: ns, args: ['--opa-resync-interval=1s', ...args] }),
    );
    return { ns, sync, kubeconfig };
  }

  const deleteCm = async (ns: string, name: string): Promise<void> => {
    await (await adminCore()).deleteNamespacedConfigMap({ name, namespace: ns });
  };

  it('removes the status annotation(s) when a ConfigMap stops being a policy, and writes them when it is one again', async () => {
    const kubeMgmt = 'openpolicyagent.org/kube-mgmt-status';
    const retries = 'openpolicyagent.org/kube-mgmt-retries';
    const { ns } = await start('unlabel', [`--status-annotation=${STATUS},${kubeMgmt}`]);
    const text = { 't.rego': 'package e2e.unlabel\n\nallow := true\n' };
    await putConfigMap(ns, 'toggle', text);
    await waitOk(ns, 'toggle');
    expect(await annotationsOf(ns, 'toggle')).to.deep.equal({ [STATUS]: OK, [kubeMgmt]: OK, [retries]: '0' });

    await putConfigMap(ns, 'toggle', text, { labels: {} });
    await waitPolicy(opa, `${ns}/toggle/t.rego`, false);
    await waitFor('the annotations removed', async () =>
      Object.keys(await annotationsOf(ns, 'toggle')).length === 0 ? true : undefined,
    );

    await putConfigMap(ns, 'toggle', text);
    await waitOk(ns, 'toggle');
    expect(await annotationsOf(ns, 'toggle')).to.deep.equal({ [STATUS]: OK, [kubeMgmt]: OK, [retries]: '0' });
  });

  it('deleting a ConfigMap whose package others use unloads them (their status names it), removes it, and they heal when it is back', async () => {
    const { ns } = await start('depends');
    const lib = { 'lib.rego': 'package e2e.dep.lib\n\ndouble(x) := 2 * x\n' };
    await putConfigMap(ns, 'lib', lib);
    await waitOk(ns, 'lib');
    await putConfigMap(ns, 'app', {
      'app.rego':
        'package e2e.dep.app\n\nimport data.e2e.dep.lib\n\nfour := lib.double(2)\n\nquad(x) := lib.double(lib.double(x))\n',
    });
    // A module that needs the one that needs lib: unloaded too, in the right order.
    await putConfigMap(ns, 'app2', {
      'app2.rego': 'package e2e.dep.app2\n\nimport data.e2e.dep.app\n\neight := app.quad(2)\n',
    });
    // A module that has nothing to do with it stays.
    await putConfigMap(ns, 'other', { 'o.rego': 'package e2e.dep.other\n\nallow := true\n' });
    await Promise.all(['app', 'app2', 'other'].map((name) => waitOk(ns, name)));
    expect(await evaluateIn(opa, 'e2e/dep/app/four')).to.equal(4);

    await (await adminCore()).deleteNamespacedConfigMap({ name: 'lib', namespace: ns });
    await waitPolicy(opa, `${ns}/lib/lib.rego`, false);
    const ids = (await policyIdsOf(opa)).filter((id) => id.startsWith(`${ns}/`));
    expect(ids, 'app and app2 unloaded, other kept').to.deep.equal([`${ns}/other/o.rego`]);
    const status = JSON.parse(await waitError(ns, 'app')) as {
      error: { code: string; message: string; errors?: { message: string }[] };
    };
    expect(status.error.code).to.equal('dependency_removed');
    expect(status.error.message).to.include(`needs module ${ns}/lib/lib.rego (of configmap ${ns}/lib)`);
    expect(status.error.errors?.[0]?.message).to.match(/undefined function data\.e2e\.dep\.lib\.double/);
    // app2 needs app's function: unloaded before app, and it says so too.
    const status2 = JSON.parse(await waitError(ns, 'app2')) as { error: { code: string; message: string } };
    expect(status2.error.code).to.equal('dependency_removed');
    expect(status2.error.message).to.include(`needs module ${ns}/app/app.rego (of configmap ${ns}/app)`);
    expect(await statusOf(ns, 'other')).to.equal(OK);
    expect(await evaluateIn(opa, 'e2e/dep/app/four')).to.equal(undefined);

    await putConfigMap(ns, 'lib', lib);
    await Promise.all(['lib', 'app', 'app2'].map((name) => waitOk(ns, name)));
    expect(await evaluateIn(opa, 'e2e/dep/app2/eight')).to.equal(8);
  });

  it('at start, removes the modules of a watched namespace that no ConfigMap backs (left by an earlier run), and nothing else', async () => {
    const { ns, sync, kubeconfig } = await start('orphans');
    const lib = { 'lib.rego': 'package e2e.orphan.lib\n\nf(x) := x + 1\n' };
    await putConfigMap(ns, 'keep', { 'k.rego': 'package e2e.orphan.keep\n\nallow := true\n' });
    await putConfigMap(ns, 'gone', { 'g.rego': 'package e2e.orphan.gone\n\nallow := true\n' });
    await putConfigMap(ns, 'lib', lib);
    await putConfigMap(ns, 'app', {
      'app.rego': 'package e2e.orphan.app\n\nimport data.e2e.orphan.lib\n\ntwo := lib.f(1)\n',
    });
    await Promise.all(['keep', 'gone', 'lib', 'app'].map((name) => waitOk(ns, name)));
    // Modules that are not opa-sync's: another namespace's, and one under the prefix of another shape.
    const foreign = [`${ns}-other/x/y.rego`, `${ns}/not-a-configmap`];
    for (const id of foreign) {
      const res = await opa.request(`/v1/policies/${id}`, {
        method: 'PUT',
        body: `package e2e.orphan.foreign${foreign.indexOf(id)}\n\nallow := true\n`,
      });
      expect(res.status, id).to.equal(200);
    }
    // opa-sync stops; meanwhile two ConfigMaps are deleted; OPA keeps running.
    await sync.stop();
    await (await adminCore()).deleteNamespacedConfigMap({ name: 'gone', namespace: ns });
    await (await adminCore()).deleteNamespacedConfigMap({ name: 'lib', namespace: ns });

    perTest.add(await startSync({ kubeconfig, opa, namespaces: ns }));
    // Ready means done: no waiting.
    const ids = await policyIdsOf(opa);
    expect(ids.filter((id) => id.startsWith(`${ns}/`) || id.startsWith(`${ns}-other/`))).to.deep.equal([
      `${ns}-other/x/y.rego`,
      `${ns}/keep/k.rego`,
      `${ns}/not-a-configmap`,
    ]);
    // app needed the module left behind: unloaded, and its status says why.
    const status = JSON.parse(await waitError(ns, 'app')) as { error: { code: string; message: string } };
    expect(status.error.code).to.equal('dependency_removed');
    expect(status.error.message).to.include(`needs module ${ns}/lib/lib.rego`);
    expect(await statusOf(ns, 'keep')).to.equal(OK);
    for (const id of foreign) await opa.request(`/v1/policies/${id}`, { method: 'DELETE' });
  });

  it("removes data.<ns> once the namespace's last data ConfigMap is deleted, but not another owner's data", async () => {
    const { ns } = await start('prune');
    await putConfigMap(ns, 'd1', { 'a.json': '{"a": 1}' }, { labels: DATA_LABEL });
    await putConfigMap(ns, 'd2', { 'b.json': '{"b": 2}' }, { labels: DATA_LABEL });
    await waitOk(ns, 'd1');
    await waitOk(ns, 'd2');

    await deleteCm(ns, 'd1');
    await waitFor('d1 gone from OPA', async () =>
      (await opaData(opa, `${ns}/d1`)) === undefined ? true : undefined,
    );
    expect(await opaData(opa, ns)).to.deep.equal({ d2: { 'b.json': { b: 2 } } });

    await deleteCm(ns, 'd2');
    await waitFor(`data.${ns} gone from OPA`, async () =>
      (await opaData(opa, ns)) === undefined ? true : undefined,
    );
    // The rest of OPA's data is untouched: opa-sync's marker is still there.
    expect(await opaData(opa, 'opa_sync/marker')).to.not.equal(undefined);

    // Another owner's document in the same namespace's subtree stays, and so does the subtree.
    const put = await opa.request(`/v1/data/${ns}/foreign`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: '{"mine": true}',
    });
    expect(put.status).to.equal(204);
    await putConfigMap(ns, 'd3', { 'c.json': '{"c": 3}' }, { labels: DATA_LABEL });
    await waitOk(ns, 'd3');
    await deleteCm(ns, 'd3');
    await waitFor('d3 gone from OPA', async () =>
      (await opaData(opa, `${ns}/d3`)) === undefined ? true : undefined,
    );
    expect(await opaData(opa, ns)).to.deep.equal({ foreign: { mine: true } });
  });
});

describe('sidecar: status writes, one per outcome (real OPA + kube-apiserver)', function () {
  this.timeout(120_000);
  const suite = cleanupAfterAll();
  let opa: OpaServer;
  let ns: string;
  let sync: OpaSyncProcess;

  before(async () => {
    opa = suite.add(await extraOpa());
    ns = await createNamespace('writes');
    const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    sync = suite.add(await startSync({ kubeconfig, opa, namespaces: ns, args: ['--log-level=debug'] }));
  });

  const writes = (): Promise<number> => scrapeMetric(sync, 'opa_sync_status_writes_total', { result: 'ok' });
  const failedLoads = (name: string) => (l: Record<string, unknown>) =>
    l.msg === 'loaded with errors' && l.origin === `configmap ${ns}/${name}`;

  it('retries a failing policy with backoff without patching its unchanged annotation again', async () => {
    const before = await writes();
    await putConfigMap(ns, 'failing', {
      'f.rego': 'package e2e.failing\n\nimport data.e2e.nowhere\n\nallow if nowhere.f(1)\n',
    });
    const status = await waitError(ns, 'failing');
    // The first load and two retries (after ~1 s and ~2 s), each with the same error.
    await waitLog(sync, 'three failed loads', failedLoads('failing'), { count: 3 });
    expect(await statusOf(ns, 'failing')).to.equal(status);
    expect((await writes()) - before, 'one PATCH for the three equal outcomes').to.equal(1);
  });

  it('still writes the status of a ConfigMap created again, and restores one changed by someone else', async () => {
    const text = { 'r.rego': 'package e2e.recreated\n\nallow := true\n' };
    await putConfigMap(ns, 'recreated', text);
    await waitOk(ns, 'recreated');
    await (await adminCore()).deleteNamespacedConfigMap({ name: 'recreated', namespace: ns });
    await putConfigMap(ns, 'recreated', text);
    expect(await waitOk(ns, 'recreated')).to.equal(OK);

    await (
      await adminCore()
    ).patchNamespacedConfigMap({
      name: 'recreated',
      namespace: ns,
      body: [
        { op: 'replace', path: `/metadata/annotations/${STATUS.replace('/', '~1')}`, value: 'hand-made' },
      ],
    });
    expect(await waitOk(ns, 'recreated')).to.equal(OK);
  });
});

describe('sidecar + replication: a policy whose rule sits where replicated objects go (real OPA + kube-apiserver)', function () {
  this.timeout(180_000);
  const suite = cleanupAfterAll();
  const COLLECTION = 'networking.k8s.io/v1/networkpolicies';
  let opa: OpaServer;
  let ns: string;
  let sync: OpaSyncProcess;
  let net: NetworkingV1Api;

  before(async () => {
    opa = suite.add(await extraOpa());
    ns = await createNamespace('collide');
    net = (await controlPlane()).kubeConfig().makeApiClient(NetworkingV1Api);
    sync = suite.add(
      await startSync({
        opa,
        namespaces: ns,
        args: [`--replicate-cluster=${COLLECTION}`, '--opa-resync-interval=1s'],
      }),
    );
  });

  /** A namespace whose name is also a Rego rule name (no dash). */
  async function ruleNamedNamespace(): Promise<string> {
    const name = `clash${randomBytes(4).toString('hex')}`;
    await (
      await adminCore()
    ).createNamespace({ body: { metadata: { name, labels: { 'opa-sync-test': 'true' } } } });
    return name;
  }
  const np = (name: string): V1NetworkPolicy => ({ metadata: { name }, spec: { podSelector: {} } });
  const conflicts = (): Promise<number> =>
    scrapeMetric(sync, 'opa_sync_replication_conflicts', { collection: COLLECTION });
  const ready = async (): Promise<void> => {
    await waitFor('opa-sync /ready', async () =>
      (await httpRequest(`${sync.opsUrl}/ready`)).status === 200 ? true : undefined,
    );
  };
  const conflictOf = async (name: string): Promise<{ code: string; message: string }> =>
    (JSON.parse(await waitError(ns, name)) as { error: { code: string; message: string } }).error;

  it('policy first, then the object: the policy stays, the object is left out (status, metric), and nothing is wedged, also after an OPA restart', async () => {
    const clash = await ruleNamedNamespace();
    const other = await createNamespace('np-other');
    await putConfigMap(ns, 'np-policy', {
      'p.rego': `package kubernetes.networkpolicies\n\n${clash} := "a rule"\n`,
    });
    await putConfigMap(ns, 'bystander', { 'b.rego': 'package e2e.bystander\n\nallow := true\n' });
    await waitOk(ns, 'np-policy');
    await waitOk(ns, 'bystander');

    await net.createNamespacedNetworkPolicy({ namespace: clash, body: np('shadowed') });
    await net.createNamespacedNetworkPolicy({ namespace: other, body: np('kept') });
    const error = await conflictOf('np-policy');
    expect(error.code).to.equal('replicated_data_conflict');
    expect(error.message).to.include(`data.kubernetes.networkpolicies.${clash}`);
    expect(error.message).to.include(COLLECTION);
    // The rest of replication goes on; the policy's rule is what OPA answers there.
    await waitFor('the other NetworkPolicy in OPA', async () =>
      (await opaData(opa, `kubernetes/networkpolicies/${other}/kept`)) === undefined ? undefined : true,
    );
    expect(await evaluateIn(opa, `kubernetes/networkpolicies/${clash}`)).to.equal('a rule');
    expect(await conflicts()).to.equal(1);
    await ready();
    const health = JSON.parse((await httpRequest(`${sync.opsUrl}/health`)).body) as {
      parts: Record<string, { restarts: number }>;
    };
    expect(health.parts['opa']?.restarts, 'the OPA push never failed').to.equal(0);

    // OPA restarts: everything comes back the same way, and opa-sync is ready again.
    await opa.restart();
    await waitFor('replication back after the restart', async () =>
      (await opaData(opa, `kubernetes/networkpolicies/${other}/kept`)) === undefined ? undefined : true,
    );
    await waitPolicy(opa, `${ns}/np-policy/p.rego`);
    await ready();
    expect(await evaluateIn(opa, `kubernetes/networkpolicies/${clash}`)).to.equal('a rule');
    // Every other origin goes on.
    await putConfigMap(ns, 'after', { 'a.rego': 'package e2e.afterclash\n\nallow := true\n' });
    await waitOk(ns, 'after');

    // The policy is deleted: the object is replicated from then on.
    await (await adminCore()).deleteNamespacedConfigMap({ name: 'np-policy', namespace: ns });
    await waitFor('the shadowed NetworkPolicy in OPA', async () =>
      (await opaData(opa, `kubernetes/networkpolicies/${clash}/shadowed`)) === undefined ? undefined : true,
    );
    await waitPolicy(opa, `${ns}/np-policy/p.rego`, false);
    expect(await conflicts()).to.equal(0);
  });

  it('object first, then the policy: the object makes way, the policy loads, and its status says so', async () => {
    const clash = await ruleNamedNamespace();
    await net.createNamespacedNetworkPolicy({ namespace: clash, body: np('first') });
    await waitFor('the NetworkPolicy in OPA', async () =>
      (await opaData(opa, `kubernetes/networkpolicies/${clash}/first`)) === undefined ? undefined : true,
    );
    await putConfigMap(ns, 'late-policy', {
      'p.rego': `package kubernetes.networkpolicies\n\n${clash} := "the rule"\n`,
    });
    const error = await conflictOf('late-policy');
    expect(error.code).to.equal('replicated_data_conflict');
    expect(error.message).to.include('(1 now)');
    expect(await evaluateIn(opa, `kubernetes/networkpolicies/${clash}`)).to.equal('the rule');
    await ready();
  });
});

describe('sidecar: flags that change what is loaded (real OPA + kube-apiserver)', function () {
  this.timeout(120_000);
  const suite = cleanupAfterAll();
  const perTest = cleanupAfterEach();
  let opa: OpaServer;

  before(async () => {
    opa = suite.add(await extraOpa());
  });

  const policyIds = (): Promise<string[]> => policyIdsOf(opa);
  const annotations = annotationsOf;

  /** opa-sync for one namespace, as a ServiceAccount that may only touch ConfigMaps there. */
  async function start(
    ns: string,
    args: string[],
    namespaces: string | undefined = ns,
  ): Promise<OpaSyncProcess> {
    const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    return perTest.add(
      await startSync({ kubeconfig, opa, ...(namespaces === undefined ? {} : { namespaces }), args }),
    );
  }

  it('custom --policy-label/--policy-value/--data-label/--data-value; default-labelled ConfigMaps ignored', async () => {
    const ns = await createNamespace('labels');
    await start(ns, [
      '--policy-label=example.com/policy',
      '--policy-value=yes',
      '--data-label=example.com/data',
      '--data-value=yes',
    ]);
    const create = (name: string, labels: Record<string, string>, data: Record<string, string>) =>
      putConfigMap(ns, name, data, { labels });
    await create(
      'custom-policy',
      { 'example.com/policy': 'yes' },
      { 'p.rego': 'package labels.custom\n\nallow := true\n' },
    );
    await create('custom-data', { 'example.com/data': 'yes' }, { 'd.json': '{"custom": true}' });
    await create('default-policy', POLICY_LABEL, { 'p.rego': 'package labels.default\n\nallow := true\n' });
    await create('default-data', DATA_LABEL, { 'd.json': '{"default": true}' });
    await waitOk(ns, 'custom-policy');
    await waitOk(ns, 'custom-data');
    const ids = (await policyIds()).filter((id) => id.startsWith(`${ns}/`));
    expect(ids).to.deep.equal([`${ns}/custom-policy/p.rego`]);
    const dataRes = JSON.parse((await opa.request(`/v1/data/${ns}`)).body) as { result: unknown };
    expect(dataRes.result).to.deep.equal({ 'custom-data': { 'd.json': { custom: true } } });
    expect(await annotations(ns, 'default-policy')).to.deep.equal({});
  });

  it('--status-annotation writes the given keys instead of the default', async () => {
    const ns = await createNamespace('annot');
    await start(ns, [
      '--status-annotation=openpolicyagent.org/kube-mgmt-status',
      '--status-annotation=example.com/status',
    ]);
    await putConfigMap(ns, 'p', { 'p.rego': 'package annot.p\n\nallow := true\n' });
    const got = await waitFor('both annotations', async () => {
      const a = await annotations(ns, 'p');
      return a['example.com/status'] !== undefined && a['openpolicyagent.org/kube-mgmt-status'] !== undefined
        ? a
        : undefined;
    });
    // kube-mgmt's retries key goes with kube-mgmt's status key: "0", for ok and error alike.
    expect(got).to.deep.equal({
      'openpolicyagent.org/kube-mgmt-status': OK,
      'openpolicyagent.org/kube-mgmt-retries': '0',
      'example.com/status': OK,
    });
    await putConfigMap(ns, 'p', { 'p.rego': 'package annot.p\n\nallow if {' });
    await waitError(ns, 'p', 'openpolicyagent.org/kube-mgmt-status');
    expect((await annotations(ns, 'p'))['openpolicyagent.org/kube-mgmt-retries']).to.equal('0');
  });

  it('seed-era --policies: every ConfigMap of the namespace is a policy, but kube-root-ca.crt and non-.rego keys are skipped', async () => {
    const ns = await createNamespace('seed');
    const plain = { labels: {} };
    // What the article does: a plain ConfigMap, no label.
    await putConfigMap(
      ns,
      'plain',
      { 'plain.rego': 'package seed.plain\n\nallow := true\n', 'README.md': '# not rego' },
      plain,
    );
    await putConfigMap(ns, 'kube-root-ca.crt', { 'ca.crt': '-----BEGIN CERTIFICATE-----' }, plain);
    await putConfigMap(ns, 'app-settings', { 'settings.json': '{}' }, plain);
    const proc = await start(ns, [`--policies=${ns}`], undefined);
    await waitOk(ns, 'plain');
    expect((await policyIds()).filter((id) => id.startsWith(`${ns}/`))).to.deep.equal([
      `${ns}/plain/plain.rego`,
    ]);
    expect(await annotations(ns, 'kube-root-ca.crt')).to.deep.equal({});
    // A ConfigMap of the namespace without any .rego key is not a policy: not annotated either.
    expect(await annotations(ns, 'app-settings')).to.deep.equal({});
    const warnings = proc
      .logLines()
      .filter((l) => l.level === 40)
      .map((l) => String(l.msg));
    expect(warnings.some((w) => w.includes('--policies'))).to.equal(true);
  });
});
