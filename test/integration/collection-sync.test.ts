// Property: after any sequence of object adds, updates and deletes (coalesced and batched as they come,
// with small batches so a burst spans several JSON Patches), a real OPA holds exactly the collection.
// And the coalescing window: changes made within it go to OPA in one JSON Patch request.
import { expect } from 'chai';
import fc from 'fast-check';
import { DesiredState } from '../../src/model/desired-state.js';
import { OpaClient } from '../../src/opa/client.js';
import { CollectionSync, type CollectionApi, type CoalesceWindow } from '../../src/opa/collection-sync.js';
import { silentLogger } from '../../src/util/logger.js';
import { extraOpa, type OpaServer } from '../harness/index.js';

type Op =
  | { kind: 'set'; ns: string; name: string; v: number }
  | { kind: 'delete'; ns: string; name: string }
  | { kind: 'sync' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('set' as const),
      ns: fc.constantFrom('a', 'b', 'c'),
      name: fc.constantFrom('x', 'y', 'z.1'),
      v: fc.nat(5),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('delete' as const),
      ns: fc.constantFrom('a', 'b', 'c'),
      name: fc.constantFrom('x', 'y', 'z.1'),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('sync' as const) }) },
);

describe('collection sync against a real OPA (property)', function () {
  this.timeout(120_000);
  let opa: OpaServer;
  let client: OpaClient;
  let run = 0;

  before(async () => {
    opa = await extraOpa();
    client = new OpaClient({ url: `${opa.url}/v1`, timeoutMs: 5000, logger: silentLogger() });
  });
  after(async () => {
    client?.close();
    await opa?.stop();
  });

  it('OPA equals the collection after any sequence of changes, with namespaces appearing and emptying', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 30 }), fc.boolean(), async (ops, namespaced) => {
        run += 1;
        const collections = new DesiredState();
        const key = `test/v1/things${run}`;
        const path = ['prop', `things${run}`];
        collections.defineCollection(key, path);
        const sync = new CollectionSync(collections, client, silentLogger(), undefined, 2);
        collections.subscribe((change) => {
          if (change.kind === 'entry') sync.markDirty(change.collection, change.entryId);
        });
        const signal = new AbortController().signal;
        const entryPath = (op: { ns: string; name: string }): string[] =>
          namespaced ? [op.ns, op.name] : [`${op.ns}-${op.name}`];

        let fallbacks = 0;
        // The initial list: a few objects before the collection is synced and loaded whole.
        collections.setEntry(key, entryPath({ ns: 'a', name: 'x' }), { v: -1 });
        collections.markCollectionSynced(key);
        await sync.sync(key, signal);
        for (const op of ops) {
          if (op.kind === 'set')
            collections.setEntry(key, entryPath(op), { v: op.v, at: `${op.ns}/${op.name}` });
          else if (op.kind === 'delete') collections.deleteEntry(key, entryPath(op));
          else while (await sync.sync(key, signal)) fallbacks += 1;
        }
        while (await sync.sync(key, signal)) fallbacks += 1;
        // Every batch was a valid patch: no fallback to a whole PUT was needed.
        expect(fallbacks).to.equal(0);

        const want: Record<string, unknown> = {};
        for (const entry of collections.collection(key)?.entries.values() ?? []) {
          let node = want;
          for (const seg of entry.entryPath.slice(0, -1))
            node = (node[seg] ??= {}) as Record<string, unknown>;
          node[entry.entryPath[entry.entryPath.length - 1] as string] = entry.value;
        }
        const got = (
          JSON.parse((await opa.request(`/v1/data/${path.join('/')}`)).body) as { result?: unknown }
        ).result;
        expect(got).to.deep.equal(want);
        expect(sync.allLoaded()).to.equal(true);
      }),
      { numRuns: 60 },
    );
  });
});

describe('collection sync: changes within the window go in one PATCH (real OPA)', function () {
  this.timeout(60_000);
  let opa: OpaServer;
  let client: OpaClient;

  before(async () => {
    opa = await extraOpa();
    client = new OpaClient({ url: `${opa.url}/v1`, timeoutMs: 5000, logger: silentLogger() });
  });
  after(async () => {
    client?.close();
    await opa?.stop();
  });

  /** A collection with one object loaded, its sync, and every patch request it makes (ops per request). */
  async function loaded(name: string, window: CoalesceWindow) {
    const state = new DesiredState();
    const key = `test/v1/${name}`;
    const path = ['coalesce', name];
    state.defineCollection(key, path);
    const patches: number[] = [];
    const counting: CollectionApi = {
      putData: (p, v, s) => client.putData(p, v, s),
      patchData: (p, ops, s) => {
        patches.push(ops.length);
        return client.patchData(p, ops, s);
      },
    };
    const sync = new CollectionSync(state, counting, silentLogger(), undefined, 1000, window);
    state.subscribe((change) => {
      if (change.kind === 'entry') sync.markDirty(change.collection, change.entryId);
    });
    state.setEntry(key, ['ns', 'first'], { v: 0 });
    state.markCollectionSynced(key);
    const signal = new AbortController().signal;
    await sync.sync(key, signal);
    const inOpa = async (): Promise<unknown> =>
      (JSON.parse((await opa.request(`/v1/data/${path.join('/')}`)).body) as { result?: unknown }).result;
    const want = (): Record<string, Record<string, unknown>> => {
      const tree: Record<string, Record<string, unknown>> = {};
      for (const e of state.collection(key)?.entries.values() ?? [])
        (tree[e.entryPath[0] as string] ??= {})[e.entryPath[1] as string] = e.value;
      return tree;
    };
    return { state, key, sync, signal, patches, inOpa, want };
  }

  it('a change after a quiet spell goes at once; what changes within the window after it goes in one request', async () => {
    const c = await loaded('window', { windowMs: 200, windowOps: 1000 });
    c.state.setEntry(c.key, ['ns', 'a'], { v: 1 });
    let started = performance.now();
    await c.sync.sync(c.key, c.signal);
    expect(performance.now() - started, 'the first change did not wait').to.be.below(150);
    expect(c.patches).to.deep.equal([1]);

    // 30 changes, some of them while the sync waits out the window: one request holds them all.
    for (let i = 0; i < 20; i++) c.state.setEntry(c.key, [`ns${i % 3}`, `o${i}`], { v: i });
    const late = setTimeout(() => {
      for (let i = 20; i < 30; i++) c.state.setEntry(c.key, [`ns${i % 3}`, `o${i}`], { v: i });
      c.state.deleteEntry(c.key, ['ns', 'first']);
    }, 50);
    started = performance.now();
    await c.sync.sync(c.key, c.signal);
    clearTimeout(late);
    expect(performance.now() - started, 'waited for the window').to.be.at.least(100);
    expect(c.patches).to.deep.equal([1, 31]);
    expect(await c.inOpa()).to.deep.equal(c.want());
  });

  it('as many waiting objects as windowOps go at once, window or not; nothing is lost', async () => {
    const c = await loaded('ops', { windowMs: 10_000, windowOps: 5 });
    c.state.setEntry(c.key, ['ns', 'a'], { v: 1 });
    await c.sync.sync(c.key, c.signal);
    for (let i = 0; i < 7; i++) c.state.setEntry(c.key, ['other', `o${i}`], { v: i });
    const started = performance.now();
    await c.sync.sync(c.key, c.signal);
    expect(performance.now() - started).to.be.below(5000);
    expect(c.patches).to.deep.equal([1, 7]);
    expect(await c.inOpa()).to.deep.equal(c.want());
  });
});
