// The sidecar against the real kube-apiserver and a real OPA: kube-mgmt's own e2e scenarios, dependency
// order across keys and ConfigMaps, precise removals, bad input isolated to its ConfigMap, OPA restarts,
// and opa-sync running as a ServiceAccount that may only touch ConfigMaps in the watched namespace.
import { expect } from 'chai';
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { controlPlane, createNamespace, extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import { startOpaSync, type OpaSyncProcess } from '../harness/opa-sync.js';
import { CONFIGMAP_RULES, serviceAccountKubeconfig } from '../harness/rbac.js';
import { httpRequest } from '../harness/http.js';

const POLICY = { 'openpolicyagent.org/policy': 'rego' };
const DATA = { 'openpolicyagent.org/data': 'opa' };
const STATUS = 'openpolicyagent.org/policy-status';
const OK = '{"status":"ok"}';

interface StatusError {
  code: string;
  message: string;
  errors?: { code: string; message: string; location?: { file: string; row: number; col: number } }[];
}

describe('sidecar: ConfigMaps into OPA (real OPA + kube-apiserver)', function () {
  this.timeout(120_000);
  let kc: KubeConfig;
  let core: CoreV1Api;
  let ns: string;
  let other: string;
  let opa: OpaServer;
  let sync: OpaSyncProcess;
  let kubeconfig: string;

  async function put(
    namespace: string,
    name: string,
    content: Record<string, string>,
    labels: Record<string, string> = POLICY,
    binaryData?: Record<string, string>,
  ): Promise<void> {
    const body: V1ConfigMap = {
      metadata: { name, labels },
      data: content,
      ...(binaryData ? { binaryData } : {}),
    };
    try {
      await core.replaceNamespacedConfigMap({ name, namespace, body });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await core.createNamespacedConfigMap({ namespace, body });
    }
  }

  async function annotation(namespace: string, name: string, key = STATUS): Promise<string | undefined> {
    const cm = await core.readNamespacedConfigMap({ name, namespace });
    return cm.metadata?.annotations?.[key];
  }

  function waitStatus(
    namespace: string,
    name: string,
    accept: (value: string) => boolean,
    key = STATUS,
  ): Promise<string> {
    return waitFor(`status of ${namespace}/${name}`, async () => {
      const value = await annotation(namespace, name, key);
      return value !== undefined && accept(value) ? value : undefined;
    });
  }

  const waitOk = (namespace: string, name: string): Promise<string> =>
    waitStatus(namespace, name, (v) => v === OK);

  function errorOf(value: string): StatusError | StatusError[] {
    const parsed = JSON.parse(value) as { status: string; error: StatusError | StatusError[] };
    expect(parsed.status).to.equal('error');
    return parsed.error;
  }

  async function policyIds(server: OpaServer = opa): Promise<string[]> {
    const res = await server.request('/v1/policies');
    return (JSON.parse(res.body) as { result: { id: string }[] }).result.map((p) => p.id).sort();
  }

  async function data(path: string, server: OpaServer = opa): Promise<unknown> {
    const res = await server.request(`/v1/data/${path}`);
    return (JSON.parse(res.body) as { result?: unknown }).result;
  }

  async function evaluate(path: string, input: unknown = {}): Promise<unknown> {
    const res = await opa.request(`/v1/data/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input }),
    });
    return (JSON.parse(res.body) as { result?: unknown }).result;
  }

  before(async () => {
    kc = (await controlPlane()).kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    ns = await createNamespace('sidecar');
    other = await createNamespace('unwatched');
    opa = await extraOpa();
    // Least privilege: a Role in the watched namespace only, with what opa-sync needs there.
    kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    sync = await startOpaSync([
      `--kubeconfig=${kubeconfig}`,
      `--opa-url=${opa.url}/v1`,
      `--namespaces=${ns}`,
      '--opa-resync-interval=1s',
      '--log-level=debug',
    ]);
  });

  after(async () => {
    await sync?.stop();
    await opa?.stop();
  });

  it('runs as a ServiceAccount that cannot read ConfigMaps outside the watched namespace', async () => {
    const { KubeConfig: Kc } = await import('@kubernetes/client-node');
    const restricted = new Kc();
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
    await put(ns, 'policy-include', { 'include.rego': 'package e2e.include\n\nallow := true\n' });
    await put(ns, 'data-include', { 'include.json': '{"a": [1, "x"]}' }, DATA);
    await put(
      ns,
      'policy-wrong-value',
      { 'x.rego': 'package e2e.wrong\n\nallow := true\n' },
      { 'openpolicyagent.org/policy': 'nope' },
    );
    await put(ns, 'policy-unlabelled', { 'x.rego': 'package e2e.unlabelled\n\nallow := true\n' }, {});

    expect(await waitOk(ns, 'policy-include')).to.equal(OK);
    expect(await waitOk(ns, 'data-include')).to.equal(OK);
    expect(await evaluate('e2e/include/allow')).to.equal(true);
    expect(await data(`${ns}/data-include/include.json`)).to.deep.equal({ a: [1, 'x'] });

    const ids = await policyIds();
    expect(ids).to.include(`${ns}/policy-include/include.rego`);
    expect(ids.filter((id) => id.includes('wrong-value') || id.includes('unlabelled'))).to.deep.equal([]);
    expect(await annotation(ns, 'policy-wrong-value')).to.equal(undefined);
    expect(await annotation(ns, 'policy-unlabelled')).to.equal(undefined);
  });

  it('loads a two-key ConfigMap whose keys depend on each other; a missing dependency ends in error', async () => {
    // a.rego sorts first and needs b.rego's function: the first attempt fails, the retry succeeds.
    await put(ns, 'multi-ok', {
      'a.rego': 'package e2e.multi.a\n\nimport data.e2e.multi.b\n\nallow if b.positive(1)\n',
      'b.rego': 'package e2e.multi.b\n\npositive(x) if x > 0\n',
    });
    await put(ns, 'multi-missing', {
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
    await put(ns, 'order-b', {
      'b.rego': 'package e2e.order.b\n\nimport data.e2e.order.a\n\nallow if a.double(2) == 4\n',
    });
    const before = errorOf(await waitStatus(ns, 'order-b', (v) => v !== OK)) as StatusError;
    expect(before.errors?.[0]?.message).to.match(/undefined function/);

    // Let B's retry backoff grow past a second, so only the "retry at once when another module loads" rule
    // can make it ok quickly.
    await new Promise((resolve) => setTimeout(resolve, 4500));
    await put(ns, 'order-a', { 'a.rego': 'package e2e.order.a\n\ndouble(x) := 2 * x\n' });
    await waitOk(ns, 'order-a');
    const aOkAt = Date.now();
    await waitFor(
      'order-b to become ok',
      async () => ((await annotation(ns, 'order-b')) === OK ? true : undefined),
      {
        timeoutMs: 10_000,
        intervalMs: 50,
      },
    );
    expect(Date.now() - aOkAt, 'B loads right after A, not at its next backoff step').to.be.below(1000);
    expect(await evaluate('e2e/order/b/allow')).to.equal(true);
  });

  it('unloads when the label is removed and reloads when it is added back', async () => {
    await put(ns, 'toggle', { 't.rego': 'package e2e.toggle\n\nallow := true\n' });
    await waitOk(ns, 'toggle');
    const id = `${ns}/toggle/t.rego`;
    expect(await policyIds()).to.include(id);

    await put(ns, 'toggle', { 't.rego': 'package e2e.toggle\n\nallow := true\n' }, {});
    await waitFor('the module to be unloaded', async () =>
      !(await policyIds()).includes(id) ? true : undefined,
    );

    await put(ns, 'toggle', { 't.rego': 'package e2e.toggle\n\nallow := true\n' });
    await waitFor('the module to be loaded again', async () =>
      (await policyIds()).includes(id) ? true : undefined,
    );
  });

  it('deletes a key removed on update, and removes exactly the path of a deleted data ConfigMap', async () => {
    await put(ns, 'keys', {
      'one.rego': 'package e2e.keys.one\n\nx := 1\n',
      'two.rego': 'package e2e.keys.two\n\nx := 2\n',
    });
    await waitOk(ns, 'keys');
    await put(ns, 'keys', { 'one.rego': 'package e2e.keys.one\n\nx := 1\n' });
    await waitFor('two.rego to be gone', async () =>
      !(await policyIds()).includes(`${ns}/keys/two.rego`) ? true : undefined,
    );
    expect(await policyIds()).to.include(`${ns}/keys/one.rego`);

    await put(ns, 'data-keep', { 'keep.json': '{"keep": true}' }, DATA);
    await put(ns, 'data-drop', { 'a.json': '{"a": 1}', 'b.json': '{"b": 2}' }, DATA);
    await waitOk(ns, 'data-keep');
    await waitOk(ns, 'data-drop');
    await put(ns, 'data-drop', { 'a.json': '{"a": 1}' }, DATA);
    await waitFor('b.json to be removed', async () =>
      ((await data(`${ns}/data-drop`)) as Record<string, unknown>)['b.json'] === undefined ? true : undefined,
    );
    expect(await data(`${ns}/data-drop`)).to.deep.equal({ 'a.json': { a: 1 } });

    await core.deleteNamespacedConfigMap({ name: 'data-drop', namespace: ns });
    await waitFor('the deleted ConfigMap path to be gone', async () =>
      (await data(`${ns}/data-drop`)) === undefined ? true : undefined,
    );
    expect(await data(`${ns}/data-keep/keep.json`)).to.deep.equal({ keep: true });
    expect(await data(`${ns}/data-include/include.json`)).to.deep.equal({ a: [1, 'x'] });
  });

  it("puts OPA's exact compile error (file, row, col) on the broken ConfigMap only", async () => {
    await put(ns, 'broken', { 'broken.rego': 'package e2e.broken\n\nallow if {\n  input.x ==\n}\n' });
    const error = errorOf(await waitStatus(ns, 'broken', (v) => v !== OK)) as StatusError;
    expect(error.code).to.equal('invalid_parameter');
    expect(error.message).to.equal('error(s) occurred while compiling module(s)');
    const location = error.errors?.[0]?.location;
    expect(location?.file).to.equal(`${ns}/broken/broken.rego`);
    expect(location?.row).to.be.a('number').greaterThan(0);
    expect(location?.col).to.be.a('number').greaterThan(0);
    // Everything else is still loaded and ok.
    expect(await annotation(ns, 'policy-include')).to.equal(OK);
    expect(await annotation(ns, 'multi-ok')).to.equal(OK);
    expect(await evaluate('e2e/include/allow')).to.equal(true);
  });

  it('ignores a labelled ConfigMap in a namespace that is not watched', async () => {
    const admin = core;
    await admin.createNamespacedConfigMap({
      namespace: other,
      body: {
        metadata: { name: 'intruder', labels: POLICY },
        data: { 'x.rego': 'package e2e.intruder\n\nallow := true\n' },
      },
    });
    await put(ns, 'after-intruder', { 'x.rego': 'package e2e.after\n\nallow := true\n' });
    await waitOk(ns, 'after-intruder');
    expect((await policyIds()).filter((id) => id.startsWith(`${other}/`))).to.deep.equal([]);
    expect(await evaluate('e2e/intruder/allow')).to.equal(undefined);
    expect(await annotation(other, 'intruder')).to.equal(undefined);
  });

  describe('bad input, each a clear error on its own ConfigMap', () => {
    it('invalid JSON and a top-level array in data ConfigMaps name the key', async () => {
      await put(ns, 'bad-json', { 'bad.json': '{"a": ', 'good.json': '{"fine": true}' }, DATA);
      await put(ns, 'bad-array', { 'list.json': '[1, 2]' }, DATA);
      const badJson = errorOf(await waitStatus(ns, 'bad-json', (v) => v !== OK)) as StatusError;
      expect(badJson.code).to.equal('invalid_json');
      expect(badJson.message).to.match(/^key "bad\.json" is not valid JSON: /);
      expect(await data(`${ns}/bad-json/good.json`)).to.deep.equal({ fine: true });
      const array = errorOf(await waitStatus(ns, 'bad-array', (v) => v !== OK)) as StatusError;
      expect(array).to.deep.equal({
        code: 'invalid_data',
        message: 'key "list.json" must hold a JSON object, not an array',
      });
    });

    it('an empty policy carries OPA’s error; a policy near the 1 MiB limit loads', async () => {
      await put(ns, 'empty', { 'empty.rego': '' });
      const empty = errorOf(await waitStatus(ns, 'empty', (v) => v !== OK)) as StatusError;
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
      await put(ns, 'big', { 'big.rego': text });
      expect(await waitStatus(ns, 'big', (v) => v === OK || v.startsWith('{"status":"error"'))).to.equal(OK);
      expect(await evaluate('e2e/big/r0')).to.equal('x'.repeat(80));
    });

    it('keys with dots and dashes load; a key with non-ASCII letters is refused by the API server', async () => {
      await put(ns, 'odd-keys', {
        'my.policy-v1.rego': 'package e2e.odd.one\n\nallow := true\n',
        'another_one-2.rego': 'package e2e.odd.two\n\nallow := true\n',
      });
      await waitOk(ns, 'odd-keys');
      expect(await policyIds()).to.include.members([
        `${ns}/odd-keys/my.policy-v1.rego`,
        `${ns}/odd-keys/another_one-2.rego`,
      ]);
      const err = await core
        .createNamespacedConfigMap({
          namespace: ns,
          body: {
            metadata: { name: 'non-ascii', labels: POLICY },
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
      await put(ns, 'binary', { 'ok.rego': 'package e2e.binary\n\nallow := true\n' }, POLICY, {
        'blob.bin': Buffer.from('x').toString('base64'),
      });
      const error = errorOf(await waitStatus(ns, 'binary', (v) => v !== OK)) as StatusError;
      expect(error.code).to.equal('binary_data_not_loaded');
      expect(error.message).to.include('"blob.bin"');
      expect(await evaluate('e2e/binary/allow')).to.equal(true);
    });

    it('several failing keys give an array of errors', async () => {
      await put(ns, 'two-broken', {
        'a.rego': 'package e2e.tb.a\n\nallow if {',
        'b.rego': 'package e2e.tb.b\n\nx := [',
      });
      const errors = errorOf(await waitStatus(ns, 'two-broken', (v) => v !== OK));
      expect(errors).to.be.an('array').with.length(2);
      const files = (errors as StatusError[]).map((e) => e.errors?.[0]?.location?.file);
      expect(files).to.deep.equal([`${ns}/two-broken/a.rego`, `${ns}/two-broken/b.rego`]);
    });
  });

  it('does not reload when only the status annotation (or any annotation) changes', async () => {
    await waitOk(ns, 'policy-include');
    const loadsBefore = sync
      .logLines()
      .filter((l) => l.msg === 'loaded' && l.origin === `configmap ${ns}/policy-include`).length;
    await core.patchNamespacedConfigMap({
      name: 'policy-include',
      namespace: ns,
      body: [{ op: 'add', path: '/metadata/annotations/touched', value: 'yes' }],
    });
    // Give the watch time to deliver the event, then prove nothing was loaded for it.
    await put(ns, 'marker-after-touch', { 'm.rego': 'package e2e.marker\n\nallow := true\n' });
    await waitOk(ns, 'marker-after-touch');
    const loadsAfter = sync
      .logLines()
      .filter((l) => l.msg === 'loaded' && l.origin === `configmap ${ns}/policy-include`).length;
    expect(loadsAfter).to.equal(loadsBefore);
  });

  it('serves /health, /ready and Prometheus /metrics', async () => {
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
    const idsBefore = (await policyIds()).filter((id) => id.startsWith(`${ns}/`));
    expect(idsBefore.length).to.be.greaterThan(5);
    await opa.restart();
    const restartedAt = Date.now();
    expect((await policyIds()).filter((id) => id.startsWith(`${ns}/`))).to.deep.equal([]);
    await waitFor(
      'all policies back',
      async () => {
        const ids = (await policyIds()).filter((id) => id.startsWith(`${ns}/`));
        return ids.length === idsBefore.length ? ids : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    const elapsed = Date.now() - restartedAt;
    expect(elapsed, 'policies back within twice the 1 s resync interval').to.be.below(2_000);
    expect(await data(`${ns}/data-keep/keep.json`)).to.deep.equal({ keep: true });
    expect(await evaluate('e2e/multi/a/allow')).to.equal(true);
    expect(await annotation(ns, 'policy-include')).to.equal(OK);
  });

  it('keeps watching after the API server restarts', async () => {
    const cp = await controlPlane();
    await cp.stopApiServer();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await cp.startApiServer();
    await put(ns, 'after-apiserver-restart', { 'r.rego': 'package e2e.restart\n\nallow := true\n' });
    await waitFor(
      'the new ConfigMap to be loaded',
      async () => ((await annotation(ns, 'after-apiserver-restart')) === OK ? true : undefined),
      {
        timeoutMs: 60_000,
      },
    );
    expect(await evaluate('e2e/restart/allow')).to.equal(true);
  });

  it('stops cleanly on SIGTERM', async () => {
    const extra = await startOpaSync([
      `--kubeconfig=${kubeconfig}`,
      `--opa-url=${opa.url}/v1`,
      `--namespaces=${ns}`,
    ]);
    await extra.process.stop(10_000);
    expect(await extra.process.exited).to.equal('exit 0');
  });
});

describe('sidecar: flags that change what is loaded (real OPA + kube-apiserver)', function () {
  this.timeout(120_000);
  let core: CoreV1Api;
  let opa: OpaServer;
  const running: OpaSyncProcess[] = [];

  before(async () => {
    core = (await controlPlane()).kubeConfig().makeApiClient(CoreV1Api);
    opa = await extraOpa();
  });
  after(async () => {
    await Promise.all(running.map((r) => r.stop()));
    await opa?.stop();
  });

  async function policyIds(): Promise<string[]> {
    const res = await opa.request('/v1/policies');
    return (JSON.parse(res.body) as { result: { id: string }[] }).result.map((p) => p.id).sort();
  }

  async function start(ns: string, args: string[]): Promise<void> {
    const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    running.push(
      await startOpaSync([
        `--kubeconfig=${kubeconfig}`,
        `--opa-url=${opa.url}/v1`,
        `--namespaces=${ns}`,
        ...args,
      ]),
    );
  }

  async function annotations(ns: string, name: string): Promise<Record<string, string>> {
    return (await core.readNamespacedConfigMap({ name, namespace: ns })).metadata?.annotations ?? {};
  }

  it('custom --policy-label/--policy-value/--data-label/--data-value; default-labelled ConfigMaps ignored', async () => {
    const ns = await createNamespace('labels');
    await start(ns, [
      '--policy-label=example.com/policy',
      '--policy-value=yes',
      '--data-label=example.com/data',
      '--data-value=yes',
    ]);
    const create = (
      name: string,
      labels: Record<string, string>,
      data: Record<string, string>,
    ): Promise<V1ConfigMap> =>
      core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name, labels }, data } });
    await create(
      'custom-policy',
      { 'example.com/policy': 'yes' },
      { 'p.rego': 'package labels.custom\n\nallow := true\n' },
    );
    await create('custom-data', { 'example.com/data': 'yes' }, { 'd.json': '{"custom": true}' });
    await create('default-policy', POLICY, { 'p.rego': 'package labels.default\n\nallow := true\n' });
    await create('default-data', DATA, { 'd.json': '{"default": true}' });
    await waitFor('custom ConfigMaps ok', async () =>
      (await annotations(ns, 'custom-policy'))[STATUS] === OK &&
      (await annotations(ns, 'custom-data'))[STATUS] === OK
        ? true
        : undefined,
    );
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
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: { name: 'p', labels: POLICY },
        data: { 'p.rego': 'package annot.p\n\nallow := true\n' },
      },
    });
    const got = await waitFor('both annotations', async () => {
      const a = await annotations(ns, 'p');
      return a['example.com/status'] !== undefined && a['openpolicyagent.org/kube-mgmt-status'] !== undefined
        ? a
        : undefined;
    });
    expect(got).to.deep.equal({ 'openpolicyagent.org/kube-mgmt-status': OK, 'example.com/status': OK });
  });

  it('seed-era --policies: every ConfigMap of the namespace is a policy, but kube-root-ca.crt and non-.rego keys are skipped', async () => {
    const ns = await createNamespace('seed');
    const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
    // What the article does: a plain ConfigMap, no label.
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: { name: 'plain' },
        data: { 'plain.rego': 'package seed.plain\n\nallow := true\n', 'README.md': '# not rego' },
      },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'kube-root-ca.crt' }, data: { 'ca.crt': '-----BEGIN CERTIFICATE-----' } },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'app-settings' }, data: { 'settings.json': '{}' } },
    });
    const proc = await startOpaSync([
      `--kubeconfig=${kubeconfig}`,
      `--opa-url=${opa.url}/v1`,
      `--policies=${ns}`,
    ]);
    running.push(proc);
    await waitFor('plain to be ok', async () =>
      (await annotations(ns, 'plain'))[STATUS] === OK ? true : undefined,
    );
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
