// Property: after any sequence of object adds, updates and deletes (coalesced and batched as they come,
// with small batches so a burst spans several JSON Patches), a real OPA holds exactly the collection.
import { expect } from 'chai';
import fc from 'fast-check';
import { DesiredState } from '../../src/model/desired-state.js';
import { OpaClient } from '../../src/opa/client.js';
import { CollectionSync } from '../../src/opa/collection-sync.js';
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
