// The data bundle of --bundle-replicated: the sidecar's layout, one root per collection, an empty
// collection as {}, nothing before the sources listed, no new revision for an unchanged state; and the
// flag's checks.
import { expect } from 'chai';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { ReplicatedBundlePublisher } from '../../src/bundles/replicated-bundle.js';
import { DesiredState } from '../../src/model/desired-state.js';
import { silentLogger } from '../../src/util/logger.js';
import { bundleFiles } from '../harness/bundles.js';
import { configProblems } from '../harness/config.js';

describe('--bundle-replicated: replicated collections as a data bundle', () => {
  function setup(): { state: DesiredState; registry: BundleRegistry; publisher: ReplicatedBundlePublisher } {
    const state = new DesiredState();
    const registry = new BundleRegistry();
    const publisher = new ReplicatedBundlePublisher({ state, registry, name: 'k8s', logger: silentLogger() });
    return { state, registry, publisher };
  }

  it('lays objects out as the sidecar pushes them, with a root per synced collection', async () => {
    const { state, registry, publisher } = setup();
    state.defineCollection('np', ['kubernetes', 'networkpolicies']);
    state.defineCollection('ns', ['kubernetes', 'namespaces']);
    state.defineCollection('later', ['kubernetes', 'pods']);
    state.setEntry('np', ['team-a', 'allow'], { metadata: { name: 'allow' } });
    state.setEntry('np', ['team-b', 'deny'], { metadata: { name: 'deny' } });
    state.markCollectionSynced('np');
    state.markCollectionSynced('ns');
    await publisher.rebuild();
    const bundle = registry.get('k8s');
    if (bundle === undefined) throw new Error('not published');
    const files = await bundleFiles(bundle.bytes);
    expect(JSON.parse(files.get('.manifest') ?? '{}')).to.deep.include({
      roots: ['kubernetes/namespaces', 'kubernetes/networkpolicies'],
    });
    expect(
      JSON.parse(files.get('kubernetes/networkpolicies/team-a/allow/data.json') ?? 'null'),
    ).to.deep.equal({
      metadata: { name: 'allow' },
    });
    expect(files.has('kubernetes/networkpolicies/team-b/deny/data.json')).to.equal(true);
    // An empty collection is {} (as the pushed OPA's PUT of an empty collection), one not yet listed is absent.
    expect(JSON.parse(files.get('kubernetes/namespaces/data.json') ?? 'null')).to.deep.equal({});
    expect([...files.keys()].some((f) => f.startsWith('kubernetes/pods'))).to.equal(false);
  });

  it('publishes a new revision only when the content changed', async () => {
    const { state, registry, publisher } = setup();
    state.defineCollection('np', ['kubernetes', 'networkpolicies']);
    state.setEntry('np', ['a', 'x'], { v: 1 });
    state.markCollectionSynced('np');
    await publisher.rebuild();
    const first = registry.get('k8s');
    await publisher.rebuild();
    expect(registry.get('k8s')).to.equal(first);
    state.setEntry('np', ['a', 'x'], { v: 2 });
    await publisher.rebuild();
    expect(registry.get('k8s')?.etag).to.not.equal(first?.etag);
  });

  it('checks the flag: a valid name, other than --bundle-name, replicated resources, and a server or folder', () => {
    const problemsOf = configProblems;
    expect(problemsOf('--bundle-replicated=k8s', '--replicate=v1/pods', '--bundle-addr=:1')).to.deep.equal(
      [],
    );
    expect(
      problemsOf('--bundle-replicated=policies', '--replicate=v1/pods', '--bundle-addr=:1'),
    ).to.deep.equal(['--bundle-replicated: "policies" is already the --bundle-name bundle of the policies']);
    expect(problemsOf('--bundle-replicated=k8s', '--namespaces=opa')).to.deep.equal([
      '--bundle-replicated needs --replicate or --replicate-cluster (the resources it holds)',
      '--bundle-replicated needs --bundle-addr or --bundles-dir',
    ]);
    expect(problemsOf('--bundle-replicated=Bad', '--replicate=v1/pods', '--bundle-addr=:1')).to.have.length(
      1,
    );
  });
});
