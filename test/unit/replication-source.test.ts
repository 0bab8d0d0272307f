// The replication source against fakes of our seams (a CollectionWatcher and a KubeReader serving
// discovery documents): where objects land, the seed-era by-name layout and its collisions, trimmed
// managedFields, the wrong-scope ConfigError, a CRD served later, the reconciliation after a restart,
// and that a throwing handler rejects run().
import { expect } from 'chai';
import type { KubernetesObject } from '@kubernetes/client-node';
import { Metrics } from '../../src/http/metrics.js';
import { DesiredState } from '../../src/model/desired-state.js';
import { ReplicationSource, type ReplicationOptions } from '../../src/sources/replication.js';
import { ConfigError, RetryableError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { FakeReader, FakeWatcher, until } from './kube-fakes.js';

const SERVICES = { group: '', version: 'v1', resource: 'services' };
const NAMESPACES = { group: '', version: 'v1', resource: 'namespaces' };
const NETPOL = { group: 'networking.k8s.io', version: 'v1', resource: 'networkpolicies' };
const WIDGETS = { group: 'example.com', version: 'v1', resource: 'widgets' };
const VERBS = ['get', 'list', 'watch'];

type Obj = KubernetesObject & { spec?: unknown; metadata?: { managedFields?: unknown } };

function obj(name: string, namespace?: string, extra: Partial<Obj> = {}): Obj {
  return {
    metadata: { name, ...(namespace === undefined ? {} : { namespace }), resourceVersion: '1' },
    ...extra,
  };
}

function serve(reader: FakeReader): void {
  reader.docs.set('/api/v1', {
    resources: [
      { name: 'services', namespaced: true, kind: 'Service', verbs: VERBS },
      { name: 'namespaces', namespaced: false, kind: 'Namespace', verbs: VERBS },
      { name: 'bindings', namespaced: true, kind: 'Binding', verbs: ['create'] },
    ],
  });
  reader.docs.set('/apis/networking.k8s.io/v1', {
    resources: [{ name: 'networkpolicies', namespaced: true, kind: 'NetworkPolicy', verbs: VERBS }],
  });
}

describe('ReplicationSource', () => {
  let state: DesiredState;
  let watcher: FakeWatcher;
  let reader: FakeReader;
  let metrics: Metrics;
  let controller: AbortController;

  function source(overrides: Partial<ReplicationOptions> = {}): ReplicationSource {
    return new ReplicationSource({
      api: reader,
      watcher,
      state,
      logger: silentLogger(),
      metrics,
      namespaced: [],
      cluster: [],
      path: ['kubernetes'],
      ignoreNamespaces: [],
      clusterByName: false,
      keepManagedFields: false,
      discoveryBackoff: { minMs: 1, maxMs: 2 },
      ...overrides,
    });
  }

  const entries = (key: string): Record<string, unknown> =>
    Object.fromEntries([...(state.collection(key)?.entries.entries() ?? [])].map(([id, e]) => [id, e.value]));

  beforeEach(() => {
    state = new DesiredState();
    watcher = new FakeWatcher();
    reader = new FakeReader();
    metrics = new Metrics();
    controller = new AbortController();
    serve(reader);
  });

  afterEach(() => controller.abort());

  it('is a restartable Part named replication', () => {
    const s = source();
    expect([s.name, s.onFailure]).to.deep.equal(['replication', 'restart']);
  });

  it('puts namespaced objects at [namespace, name] and cluster objects at [name], with apiVersion and kind', async () => {
    const s = source({ namespaced: [SERVICES, NETPOL], cluster: [NAMESPACES] });
    const run = s.run(controller.signal);
    const services = await watcher.session('/api/v1/services');
    const netpols = await watcher.session('/apis/networking.k8s.io/v1/networkpolicies');
    const namespaces = await watcher.session('/api/v1/namespaces');
    expect(state.collection('v1/services')?.path).to.deep.equal(['kubernetes', 'services']);
    services.list([obj('web', 'shop')]);
    netpols.list([obj('deny', 'shop')]);
    expect(s.ready()).to.equal(false);
    expect(state.sourcesSynced()).to.equal(false);
    namespaces.list([obj('shop')]);
    expect(s.ready()).to.equal(true);
    expect(state.sourcesSynced()).to.equal(true);
    expect(entries('v1/services')).to.deep.equal({
      'shop/web': {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web', namespace: 'shop', resourceVersion: '1' },
      },
    });
    expect(
      state.collection('networking.k8s.io/v1/networkpolicies')?.entries.get('shop/deny')?.value,
    ).to.include({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
    });
    expect(Object.keys(entries('v1/namespaces'))).to.deep.equal(['shop']);
    expect(state.collection('v1/services')?.synced).to.equal(true);
    services.delete(obj('web', 'shop'));
    expect(entries('v1/services')).to.deep.equal({});
    controller.abort();
    await run;
    expect(watcher.live()).to.deep.equal([]);
  });

  it('leaves out ignored namespaces of --replicate with a field selector, not of --replicate-cluster', async () => {
    const run = source({
      namespaced: [SERVICES],
      cluster: [NETPOL],
      ignoreNamespaces: ['kube-system', 'opa'],
    }).run(controller.signal);
    const services = await watcher.session('/api/v1/services');
    const netpols = await watcher.session('/apis/networking.k8s.io/v1/networkpolicies');
    expect(services.target.fieldSelector).to.equal('metadata.namespace!=kube-system,metadata.namespace!=opa');
    expect(netpols.target.fieldSelector).to.equal(undefined);
    controller.abort();
    await run;
  });

  it('drops managedFields unless asked to keep them', async () => {
    const managedFields = [{ manager: 'kubectl', operation: 'Apply' }];
    const run = source({ namespaced: [SERVICES] }).run(controller.signal);
    (await watcher.session('/api/v1/services')).list([
      obj('web', 'shop', { metadata: { name: 'web', namespace: 'shop', managedFields } }),
    ]);
    expect(entries('v1/services')['shop/web']).to.deep.equal({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
    });
    controller.abort();
    await run;

    state = new DesiredState();
    controller = new AbortController();
    const keep = source({ namespaced: [SERVICES], keepManagedFields: true }).run(controller.signal);
    (await watcher.session('/api/v1/services')).list([
      obj('web', 'shop', { metadata: { name: 'web', namespace: 'shop', managedFields } }),
    ]);
    expect((entries('v1/services')['shop/web'] as Obj).metadata?.managedFields).to.deep.equal(managedFields);
    controller.abort();
    await keep;
  });

  describe('--replicate-cluster-by-name (the seed-era layout)', () => {
    it('keys objects by name; on a collision the alphabetically first namespace wins, whatever the order', async () => {
      const run = source({ cluster: [NETPOL], clusterByName: true }).run(controller.signal);
      const session = await watcher.session('/apis/networking.k8s.io/v1/networkpolicies');
      const inB = obj('deny', 'b', { spec: 'from b' });
      const inA = obj('deny', 'a', { spec: 'from a' });
      session.list([inB, obj('only', 'c')]);
      expect(Object.keys(entries('networking.k8s.io/v1/networkpolicies')).sort()).to.deep.equal([
        'deny',
        'only',
      ]);
      expect((entries('networking.k8s.io/v1/networkpolicies').deny as Obj).spec).to.equal('from b');
      session.add(inA);
      expect((entries('networking.k8s.io/v1/networkpolicies').deny as Obj).spec).to.equal('from a');
      const collisions = await metrics.registry
        .getSingleMetric('opa_sync_replication_name_collisions_total')
        ?.get();
      expect(collisions?.values.map((v) => v.value)).to.deep.equal([1]);
      // A later event of the loser does not take the place.
      const changed: Obj = {
        ...inB,
        spec: 'from b, changed',
        metadata: { ...inB.metadata, resourceVersion: '2' },
      };
      session.update(changed);
      expect((entries('networking.k8s.io/v1/networkpolicies').deny as Obj).spec).to.equal('from a');
      // The winner gone: the other takes its place; both gone: the entry goes.
      session.delete(inA);
      expect((entries('networking.k8s.io/v1/networkpolicies').deny as Obj).spec).to.equal('from b, changed');
      session.delete(inB);
      expect(Object.keys(entries('networking.k8s.io/v1/networkpolicies'))).to.deep.equal(['only']);
      controller.abort();
      await run;
    });

    it('applies to --replicate-cluster only: --replicate keeps [namespace, name]', async () => {
      const run = source({ namespaced: [SERVICES], clusterByName: true }).run(controller.signal);
      (await watcher.session('/api/v1/services')).list([obj('web', 'a'), obj('web', 'b')]);
      expect(Object.keys(entries('v1/services')).sort()).to.deep.equal(['a/web', 'b/web']);
      controller.abort();
      await run;
    });
  });

  it('refuses a cluster-scoped resource given to --replicate, and one that cannot be watched, with one ConfigError', async () => {
    const bindings = { group: '', version: 'v1', resource: 'bindings' };
    let thrown: unknown;
    await source({ namespaced: [NAMESPACES, bindings, SERVICES] })
      .run(controller.signal)
      .catch((err: unknown) => {
        thrown = err;
      });
    expect(thrown).to.be.instanceOf(ConfigError);
    expect((thrown as ConfigError).problems).to.deep.equal([
      '--replicate=v1/namespaces: Namespace is cluster-scoped; use --replicate-cluster=v1/namespaces',
      'v1/bindings cannot be replicated: the API server does not allow list and watch on it',
    ]);
    expect(watcher.sessions).to.deep.equal([]);
  });

  it('fails run() when discovery cannot reach the API server at the start', async () => {
    reader.failures.push(new RetryableError('kube_unreachable', 'GET /api/v1: connect ECONNREFUSED'));
    let thrown: unknown;
    await source({ namespaced: [SERVICES] })
      .run(controller.signal)
      .catch((err: unknown) => {
        thrown = err;
      });
    expect(thrown).to.be.instanceOf(RetryableError);
  });

  it('replicates a resource served later (a CRD installed after the start); not ready until then', async () => {
    const s = source({ namespaced: [SERVICES, WIDGETS] });
    const run = s.run(controller.signal);
    (await watcher.session('/api/v1/services')).list([]);
    // The sinks need not wait for a resource that may never come, but /ready says it is missing.
    expect(state.sourcesSynced()).to.equal(true);
    expect(s.ready()).to.equal(false);
    expect(s.missing()).to.deep.equal(['example.com/v1/widgets']);
    await until(
      'a second look',
      () => reader.calls.filter((c) => c.path === '/apis/example.com/v1').length >= 2,
    );
    reader.docs.set('/apis/example.com/v1', {
      resources: [{ name: 'widgets', namespaced: true, kind: 'Widget', verbs: VERBS }],
    });
    const widgets = await watcher.session('/apis/example.com/v1/widgets');
    expect(s.missing()).to.deep.equal([]);
    expect(s.ready()).to.equal(false);
    widgets.list([obj('w1', 'shop')]);
    expect(s.ready()).to.equal(true);
    expect(entries('example.com/v1/widgets')['shop/w1']).to.include({
      apiVersion: 'example.com/v1',
      kind: 'Widget',
    });
    controller.abort();
    await run;
  });

  it('refuses with a ConfigError a resource served later with the wrong scope', async () => {
    let thrown: unknown;
    const run = source({ namespaced: [WIDGETS] })
      .run(controller.signal)
      .catch((err: unknown) => {
        thrown = err;
      });
    await until('a first look', () => reader.calls.length >= 1);
    reader.docs.set('/apis/example.com/v1', {
      resources: [{ name: 'widgets', namespaced: false, kind: 'Widget', verbs: VERBS }],
    });
    await run;
    expect((thrown as ConfigError).problems).to.deep.equal([
      '--replicate=example.com/v1/widgets: Widget is cluster-scoped; use --replicate-cluster=example.com/v1/widgets',
    ]);
  });

  it('after a restart, removes the objects the new list no longer shows (by-name layout included)', async () => {
    const s = source({ namespaced: [SERVICES], cluster: [NETPOL], clusterByName: true });
    const first = new AbortController();
    const run1 = s.run(first.signal);
    (await watcher.session('/api/v1/services')).list([obj('keep', 'a'), obj('gone', 'a')]);
    (await watcher.session('/apis/networking.k8s.io/v1/networkpolicies')).list([
      obj('deny', 'a', { spec: 'from a' }),
      obj('deny', 'b', { spec: 'from b' }),
    ]);
    first.abort();
    await run1;

    const run2 = s.run(controller.signal);
    const services = await watcher.session('/api/v1/services');
    const netpols = await watcher.session('/apis/networking.k8s.io/v1/networkpolicies');
    services.add(obj('keep', 'a'));
    expect(Object.keys(entries('v1/services')).sort()).to.deep.equal(['a/gone', 'a/keep']);
    services.listed();
    expect(Object.keys(entries('v1/services'))).to.deep.equal(['a/keep']);
    // Namespace a's object was deleted while not watched: b's takes the name.
    netpols.list([obj('deny', 'b', { spec: 'from b' })]);
    expect((entries('networking.k8s.io/v1/networkpolicies').deny as Obj).spec).to.equal('from b');
    expect(s.ready()).to.equal(true);
    controller.abort();
    await run2;
  });

  it('counts a failed watch in the metrics', async () => {
    const run = source({ namespaced: [SERVICES] }).run(controller.signal);
    (await watcher.session('/api/v1/services')).retrying(new Error('Premature close'), 1);
    const errors = await metrics.registry.getSingleMetric('opa_sync_watch_errors_total')?.get();
    expect(errors?.values.map((v) => v.value)).to.deep.equal([1]);
    controller.abort();
    await run;
  });

  it("shows each resource's object count, last event, watch restarts and last error in its snapshot", async () => {
    const s = source({ namespaced: [SERVICES] });
    const run = s.run(controller.signal);
    const services = await watcher.session('/api/v1/services');
    expect(s.snapshot()).to.deep.equal([
      {
        resource: 'v1/services',
        path: 'kubernetes/services',
        objects: 0,
        listed: false,
        notServed: false,
        lastEventAt: undefined,
        watchRestarts: 0,
        lastError: undefined,
      },
    ]);
    services.list([obj('web', 'shop'), obj('db', 'shop')]);
    services.retrying(new Error('Premature close'), 1);
    const [snap] = s.snapshot();
    expect(snap).to.deep.include({ objects: 2, listed: true, watchRestarts: 1 });
    expect(snap?.lastEventAt).to.be.a('string');
    expect(snap?.lastError?.message).to.equal('Premature close');
    controller.abort();
    await run;
  });

  it('rejects run() when a handler throws (here a sink listener), and stops its other watches', async () => {
    const run = source({ namespaced: [SERVICES, NETPOL] }).run(controller.signal);
    const services = await watcher.session('/api/v1/services');
    const netpols = await watcher.session('/apis/networking.k8s.io/v1/networkpolicies');
    const bug = new RangeError('Invalid string length');
    state.subscribe(() => {
      throw bug;
    });
    services.add(obj('web', 'shop'));
    let thrown: unknown;
    await run.catch((err: unknown) => {
      thrown = err;
    });
    expect(thrown).to.equal(bug);
    expect(netpols.signal.aborted).to.equal(true);
  });

  it('resolves when stopped during the first discovery', async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    const api = {
      getJson: async <T>(_path: string, options?: { signal?: AbortSignal | undefined }): Promise<T> => {
        await held;
        options?.signal?.throwIfAborted();
        return {} as T;
      },
    };
    const run = source({ namespaced: [SERVICES], api }).run(controller.signal);
    controller.abort();
    release();
    await run;
  });
});
