// The ConfigMap source against a fake of our CollectionWatcher seam: which collections it watches for
// each role, what becomes a policy or a data document (labels, the seed-era --policies mode,
// kube-root-ca.crt), that our own status annotation changes nothing, deletions, the listed signal, the
// reconciliation after a restart, and that a throwing handler rejects run().
import { expect } from 'chai';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { DesiredState, type Change } from '../../src/model/desired-state.js';
import { originKey } from '../../src/model/origin.js';
import { ConfigMapSource, type ConfigMapSourceOptions } from '../../src/sources/configmaps.js';
import { silentLogger } from '../../src/util/logger.js';
import { FakeWatcher, until } from './kube-fakes.js';

const POLICY = 'openpolicyagent.org/policy';
const DATA = 'openpolicyagent.org/data';
const NS_PATH = '/api/v1/namespaces/opa/configmaps';
const POLICY_SELECTOR = `${POLICY}=rego`;
const DATA_SELECTOR = `${DATA}=opa`;

function cm(
  name: string,
  data: Record<string, string>,
  labels: Record<string, string> = {},
  extra: { annotations?: Record<string, string>; resourceVersion?: string; namespace?: string } = {},
): V1ConfigMap {
  return {
    metadata: {
      namespace: extra.namespace ?? 'opa',
      name,
      labels,
      resourceVersion: extra.resourceVersion ?? '1',
      ...(extra.annotations === undefined ? {} : { annotations: extra.annotations }),
    },
    data,
  };
}

const policyKey = (name: string, ns = 'opa'): string =>
  originKey({ kind: 'configmap', role: 'policy', namespace: ns, name });
const dataKey = (name: string, ns = 'opa'): string =>
  originKey({ kind: 'configmap', role: 'data', namespace: ns, name });

describe('ConfigMapSource', () => {
  let state: DesiredState;
  let watcher: FakeWatcher;
  let controller: AbortController;
  let changes: Change[];

  function source(overrides: Partial<ConfigMapSourceOptions> = {}): ConfigMapSource {
    return new ConfigMapSource({
      watcher,
      state,
      logger: silentLogger(),
      namespaces: { all: false, names: ['opa'] },
      policies: { enabled: true, label: POLICY, value: 'rego', requireLabel: true },
      data: { enabled: true, label: DATA, value: 'opa' },
      ...overrides,
    });
  }

  beforeEach(() => {
    state = new DesiredState();
    watcher = new FakeWatcher();
    controller = new AbortController();
    changes = [];
    state.subscribe((c) => changes.push(c));
  });

  afterEach(() => controller.abort());

  it('is a restartable Part named configmaps', () => {
    const s = source();
    expect(s.name).to.equal('configmaps');
    expect(s.onFailure).to.equal('restart');
  });

  it('watches each namespace once per role, with server-side label selectors', async () => {
    const run = source({ namespaces: { all: false, names: ['opa', 'team-a'] } }).run(controller.signal);
    await until('four watches', () => watcher.live().length === 4);
    expect(watcher.live().map((s) => s.target)).to.deep.equal([
      { path: NS_PATH, labelSelector: POLICY_SELECTOR },
      { path: NS_PATH, labelSelector: DATA_SELECTOR },
      { path: '/api/v1/namespaces/team-a/configmaps', labelSelector: POLICY_SELECTOR },
      { path: '/api/v1/namespaces/team-a/configmaps', labelSelector: DATA_SELECTOR },
    ]);
    controller.abort();
    await run;
    expect(watcher.live()).to.deep.equal([]);
  });

  it('watches every namespace through /api/v1/configmaps with --namespaces=*', async () => {
    const run = source({
      namespaces: { all: true, names: [] },
      data: { enabled: false, label: DATA, value: 'opa' },
    }).run(controller.signal);
    const session = await watcher.session('/api/v1/configmaps', POLICY_SELECTOR);
    session.list([cm('p', { 'a.rego': 'package a' }, { [POLICY]: 'rego' }, { namespace: 'elsewhere' })]);
    expect(state.get(policyKey('p', 'elsewhere'))?.modules.map((m) => m.id)).to.deep.equal([
      'elsewhere/p/a.rego',
    ]);
    controller.abort();
    await run;
  });

  it('turns a policy ConfigMap into modules and a data ConfigMap into documents', async () => {
    const run = source().run(controller.signal);
    const policies = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const data = await watcher.session(NS_PATH, DATA_SELECTOR);
    policies.list([cm('p', { 'b.rego': 'package b', 'a.rego': 'package a' }, { [POLICY]: 'rego' })]);
    data.list([cm('d', { 'x.json': '{"k":1}', 'bad.json': '[' }, { [DATA]: 'opa' })]);
    expect(state.get(policyKey('p'))?.modules).to.deep.equal([
      { id: 'opa/p/a.rego', text: 'package a' },
      { id: 'opa/p/b.rego', text: 'package b' },
    ]);
    const d = state.get(dataKey('d'));
    expect(d?.documents).to.deep.equal([{ path: ['opa', 'd', 'x.json'], value: { k: 1 } }]);
    expect(d?.dataRoot).to.deep.equal(['opa', 'd']);
    expect(d?.problems.map((p) => [p.key, p.code])).to.deep.equal([['bad.json', 'invalid_json']]);
    controller.abort();
    await run;
  });

  it('counts as listed (for the sinks and for ready) only once every watch has listed', async () => {
    const s = source();
    const run = s.run(controller.signal);
    const policies = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const data = await watcher.session(NS_PATH, DATA_SELECTOR);
    policies.list([]);
    expect(s.ready()).to.equal(false);
    expect(state.sourcesSynced()).to.equal(false);
    data.list([]);
    expect(s.ready()).to.equal(true);
    expect(state.sourcesSynced()).to.equal(true);
    expect(changes.filter((c) => c.kind === 'sources-synced')).to.have.lengthOf(1);
    controller.abort();
    await run;
  });

  it('registers itself with the state when constructed, before it runs', () => {
    source();
    expect(state.sourcesSynced()).to.equal(false);
  });

  describe('the seed-era --policies mode (every ConfigMap of the namespace, labelled or not)', () => {
    const seedEra = { enabled: true, label: POLICY, value: 'rego', requireLabel: false };

    it('watches without a label selector and loads only the .rego keys of unlabelled ConfigMaps', async () => {
      const run = source({ policies: seedEra }).run(controller.signal);
      const session = await until('the unselected policy watch', () =>
        watcher.live().find((w) => w.target.labelSelector === undefined),
      );
      expect(session.target).to.deep.equal({ path: NS_PATH, labelSelector: undefined });
      session.list([
        cm('unlabelled', { 'main.rego': 'package main', 'README.md': '# notes' }),
        cm('labelled', { 'x.txt': 'package x' }, { [POLICY]: 'rego' }),
        cm('not-rego', { 'settings.yaml': 'a: 1' }),
        cm('kube-root-ca.crt', { 'ca.crt': '---', 'odd.rego': 'package odd' }),
        cm('a-data-map', { 'x.json': '{}' }, { [DATA]: 'opa' }),
      ]);
      expect(state.get(policyKey('unlabelled'))?.modules.map((m) => m.id)).to.deep.equal([
        'opa/unlabelled/main.rego',
      ]);
      // A labelled ConfigMap is a policy in every key, as with the label required.
      expect(state.get(policyKey('labelled'))?.modules.map((m) => m.id)).to.deep.equal([
        'opa/labelled/x.txt',
      ]);
      expect(state.get(policyKey('not-rego'))).to.equal(undefined);
      expect(state.get(policyKey('kube-root-ca.crt'))).to.equal(undefined);
      // The data label wins: a data ConfigMap is data only, as in kube-mgmt.
      expect(state.get(policyKey('a-data-map'))).to.equal(undefined);
      controller.abort();
      await run;
    });

    it('drops a policy that gains the data label', async () => {
      const run = source({ policies: seedEra }).run(controller.signal);
      const session = await until('the unselected policy watch', () =>
        watcher.live().find((w) => w.target.labelSelector === undefined),
      );
      session.list([cm('m', { 'a.rego': 'package a' })]);
      expect(state.get(policyKey('m'))).to.not.equal(undefined);
      session.update(cm('m', { 'a.rego': 'package a' }, { [DATA]: 'opa' }, { resourceVersion: '2' }));
      expect(state.get(policyKey('m'))).to.equal(undefined);
      controller.abort();
      await run;
    });
  });

  it('ignores updates that change only annotations (our status) or the resourceVersion', async () => {
    const run = source().run(controller.signal);
    const session = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const labels = { [POLICY]: 'rego' };
    session.list([cm('p', { 'a.rego': 'package a' }, labels)]);
    const before = changes.length;
    session.update(
      cm('p', { 'a.rego': 'package a' }, labels, {
        resourceVersion: '2',
        annotations: { 'openpolicyagent.org/policy-status': '{"status":"ok"}' },
      }),
    );
    expect(changes.length).to.equal(before);
    session.update(cm('p', { 'a.rego': 'package a2' }, labels, { resourceVersion: '3' }));
    expect(changes.slice(before)).to.deep.equal([{ kind: 'origin', key: policyKey('p') }]);
    expect(state.get(policyKey('p'))?.modules[0]?.text).to.equal('package a2');
    // A label change counts too (the bundle label moves a ConfigMap to another bundle).
    session.update(
      cm(
        'p',
        { 'a.rego': 'package a2' },
        { ...labels, 'openpolicyagent.org/bundle': 'b' },
        { resourceVersion: '4' },
      ),
    );
    expect(state.get(policyKey('p'))?.bundle).to.equal('b');
    controller.abort();
    await run;
  });

  it('removes an origin when its ConfigMap is deleted', async () => {
    const run = source().run(controller.signal);
    const data = await watcher.session(NS_PATH, DATA_SELECTOR);
    const d = cm('d', { 'x.json': '{}' }, { [DATA]: 'opa' });
    data.list([d]);
    expect(state.keys()).to.deep.equal([dataKey('d')]);
    data.delete(d);
    expect(state.keys()).to.deep.equal([]);
    // A second delete (e.g. a relist after the watch event) changes nothing.
    const before = changes.length;
    data.delete(d);
    expect(changes.length).to.equal(before);
    controller.abort();
    await run;
  });

  it('after a restart, removes what the new lists no longer show, and keeps what did not change', async () => {
    const s = source();
    const labels = { [POLICY]: 'rego' };
    const first = new AbortController();
    const run1 = s.run(first.signal);
    const p1 = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const d1 = await watcher.session(NS_PATH, DATA_SELECTOR);
    p1.list([cm('keep', { 'a.rego': 'package a' }, labels), cm('gone', { 'g.rego': 'package g' }, labels)]);
    d1.list([cm('data-gone', { 'x.json': '{}' }, { [DATA]: 'opa' })]);
    first.abort();
    await run1;
    expect(state.keys()).to.have.lengthOf(3);

    const run2 = s.run(controller.signal);
    const p2 = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const d2 = await watcher.session(NS_PATH, DATA_SELECTOR);
    const before = changes.length;
    p2.list([cm('keep', { 'a.rego': 'package a' }, labels, { resourceVersion: '7' })]);
    // Nothing is removed before every watch of the new run has listed.
    expect(state.keys()).to.have.lengthOf(3);
    d2.list([]);
    expect(state.keys()).to.deep.equal([policyKey('keep')]);
    expect(changes.slice(before)).to.deep.equal([
      { kind: 'origin', key: policyKey('gone') },
      { kind: 'origin', key: dataKey('data-gone') },
    ]);
    expect(s.ready()).to.equal(true);
    controller.abort();
    await run2;
  });

  it('rejects run() when a handler throws (here a sink listener), and stops its other watches', async () => {
    const s = source();
    const run = s.run(controller.signal);
    const policies = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const data = await watcher.session(NS_PATH, DATA_SELECTOR);
    const bug = new RangeError('Invalid string length');
    state.subscribe(() => {
      throw bug;
    });
    policies.add(cm('p', { 'a.rego': 'package a' }, { [POLICY]: 'rego' }));
    let thrown: unknown;
    await run.catch((err: unknown) => {
      thrown = err;
    });
    expect(thrown).to.equal(bug);
    expect(data.signal.aborted).to.equal(true);
    expect(watcher.live()).to.deep.equal([]);
  });

  it('resolves at once when stopped before it starts', async () => {
    controller.abort();
    await source().run(controller.signal);
  });

  it('tells what it saw of each ConfigMap before changing the state: its annotations, also when its watch reports it deleted', async () => {
    const seen: [string, Record<string, string> | null | undefined, boolean][] = [];
    const s = source({
      onAnnotations: (ref, annotations) =>
        seen.push([
          `${ref.namespace}/${ref.name}`,
          annotations,
          state.get(policyKey(ref.name)) !== undefined,
        ]),
    });
    const run = s.run(controller.signal);
    const policies = await watcher.session(NS_PATH, POLICY_SELECTOR);
    const status = { 'openpolicyagent.org/policy-status': '{"status":"ok"}' };
    policies.list([cm('p', { 'p.rego': 'package p' }, { [POLICY]: 'rego' }, { annotations: status })]);
    // The label removed: the API server reports it deleted, as it was before (label included).
    policies.delete(
      cm('p', { 'p.rego': 'package p' }, { [POLICY]: 'rego' }, { annotations: status, resourceVersion: '2' }),
    );
    policies.add(cm('q', { 'q.rego': 'package q' }, { [POLICY]: 'rego' }));
    // Really deleted: the same event. Both may still exist, holding what is not known (the status writer
    // finds out with its PATCH).
    policies.delete(cm('q', { 'q.rego': 'package q' }, { [POLICY]: 'rego' }, { resourceVersion: '3' }));
    expect(seen).to.deep.equal([
      ['opa/p', status, false],
      ['opa/p', null, true],
      ['opa/q', {}, false],
      ['opa/q', null, true],
    ]);
    controller.abort();
    await run;
  });
});
