// Delta bundles (--bundle-deltas): the patch turns OPA's data of one revision into the next's exactly
// (checked with OPA's patch semantics on random collections), is never empty, and a delta goes only to
// a client that asks for deltas and names a revision it has a delta from; everyone else gets the
// snapshot. The archive is what OPA reads: `.manifest` with the same roots, and `patch.json`.
import { expect } from 'chai';
import fc from 'fast-check';
import request from 'supertest';
import { prefersDelta } from '../../src/bundles/bundle-request.js';
import {
  DeltaHistory,
  deltaBundle,
  patchOps,
  type DataSnapshot,
  type PatchOp,
} from '../../src/bundles/delta.js';
import { Fleet } from '../../src/bundles/fleet.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { createBundleApp } from '../../src/bundles/server.js';
import { Metrics } from '../../src/http/metrics.js';
import { jsonPointer } from '../../src/opa/client.js';
import { silentLogger } from '../../src/util/logger.js';
import { bundleFiles } from '../harness/bundles.js';

const ROOT = ['kubernetes', 'networkpolicies'];
type Objects = Record<string, Record<string, number>>;

/** A snapshot as the replicated bundle makes it: one document per object, `{}` for an empty collection. */
function snapshot(objects: Objects, etag: string): DataSnapshot {
  const documents = new Map<string, { path: string[]; value: unknown; rootLength: number }>();
  const empty = {};
  for (const [ns, byName] of Object.entries(objects)) {
    for (const [name, v] of Object.entries(byName)) {
      const path = [...ROOT, ns, name];
      documents.set(jsonPointer(path), { path, value: { v }, rootLength: ROOT.length });
    }
  }
  if (documents.size === 0)
    documents.set(jsonPointer(ROOT), { path: ROOT, value: empty, rootLength: ROOT.length });
  return { etag: `"${etag}"`, revision: etag, roots: ['kubernetes/networkpolicies'], documents };
}

/** The data tree OPA holds after loading a snapshot. */
function tree(s: DataSnapshot): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const doc of s.documents.values()) setAt(out, doc.path, structuredClone(doc.value));
  return out;
}

function setAt(root: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = root;
  for (const seg of path.slice(0, -1)) {
    const next = node[seg];
    if (typeof next !== 'object' || next === null) node[seg] = {};
    node = node[seg] as Record<string, unknown>;
  }
  node[path.at(-1) ?? ''] = value;
}

/** OPA's patch semantics: upsert creates missing parents; remove needs the path to exist. */
function apply(root: Record<string, unknown>, ops: PatchOp[]): void {
  for (const op of ops) {
    const path = op.path.split('/').slice(1);
    if (op.op === 'upsert') {
      setAt(root, path, structuredClone(op.value));
      continue;
    }
    let node = root;
    for (const seg of path.slice(0, -1)) node = node[seg] as Record<string, unknown>;
    const last = path.at(-1) ?? '';
    if (node === undefined || !(last in node)) throw new Error(`remove of a missing path ${op.path}`);
    delete node[last];
  }
}

const objectsArb: fc.Arbitrary<Objects> = fc.dictionary(
  fc.constantFrom('a', 'b', 'c'),
  fc.dictionary(fc.constantFrom('x', 'y', 'z'), fc.integer({ min: 0, max: 2 }), { minKeys: 1 }),
);

describe('delta bundles of the replicated data bundle', () => {
  it("turns OPA's data of any revision into the next one's exactly (OPA's patch semantics)", () => {
    fc.assert(
      fc.property(objectsArb, objectsArb, (before, after) => {
        const from = snapshot(before, 'from');
        const to = snapshot(after, 'to');
        // Values of unchanged objects are the same objects, as in the desired state.
        for (const [pointer, doc] of to.documents) {
          const old = from.documents.get(pointer);
          if (old !== undefined && JSON.stringify(old.value) === JSON.stringify(doc.value)) {
            (to.documents as Map<string, typeof doc>).set(pointer, old);
          }
        }
        const data = tree(from);
        apply(data, patchOps(from, to));
        expect(data).to.deep.equal(tree(to));
      }),
      { numRuns: 300 },
    );
  });

  it('removes a namespace whose last object went, and writes nothing for unchanged objects', () => {
    const from = snapshot({ a: { x: 1 }, b: { y: 1 } }, 'f');
    const to = snapshot({ b: { y: 1 } }, 't');
    (to.documents as Map<string, unknown>).set(
      '/kubernetes/networkpolicies/b/y',
      from.documents.get('/kubernetes/networkpolicies/b/y'),
    );
    expect(patchOps(from, to)).to.deep.equal([{ op: 'remove', path: '/kubernetes/networkpolicies/a' }]);
  });

  it('is never empty, and never for other roots: the snapshot is sent then', async () => {
    const s = snapshot({ a: { x: 1 } }, 's');
    expect(await deltaBundle(s, { ...s, etag: '"other"' }, 1_000_000)).to.equal(undefined);
    expect(
      await deltaBundle(s, { ...snapshot({ a: { x: 2 } }, 't'), roots: ['kubernetes'] }, 1_000_000),
    ).to.equal(undefined);
  });

  it('is a .manifest with the same roots and the new revision, and a patch.json', async () => {
    const bytes = await deltaBundle(
      snapshot({ a: { x: 1 } }, 'r1'),
      snapshot({ a: { x: 2 } }, 'r2'),
      1_000_000,
    );
    if (bytes === undefined) throw new Error('no delta');
    const files = await bundleFiles(bytes);
    expect([...files.keys()].sort()).to.deep.equal(['.manifest', 'patch.json']);
    expect(JSON.parse(files.get('.manifest') ?? '')).to.deep.equal({
      revision: 'r2',
      roots: ['kubernetes/networkpolicies'],
    });
    expect(JSON.parse(files.get('patch.json') ?? '')).to.deep.equal({
      data: [{ op: 'upsert', path: '/kubernetes/networkpolicies/a/x', value: { v: 2 } }],
    });
  });

  it('reads OPA’s Prefer header: only modes with delta ask for deltas', () => {
    expect(prefersDelta('modes=snapshot,delta')).to.equal(true);
    expect(prefersDelta('modes=snapshot,delta;wait=30')).to.equal(true);
    expect(prefersDelta('wait=30')).to.equal(false);
    expect(prefersDelta('modes=snapshot')).to.equal(false);
    expect(prefersDelta(undefined)).to.equal(false);
  });

  it('sends a delta only to a client that asks for one and names a revision it has a delta from', async () => {
    const history = new DeltaHistory(2);
    const registry = new BundleRegistry();
    const metrics = new Metrics({ processMetrics: false });
    const snapshotBytes = Buffer.alloc(100_000, 1);
    const publish = async (objects: Objects, rev: string): Promise<void> => {
      const s = snapshot(objects, rev);
      const deltas = await history.add(s, snapshotBytes.length);
      registry.publish({ name: 'k8s', bytes: snapshotBytes, etag: s.etag, revision: rev, deltas });
    };
    await publish({ a: { x: 1 } }, 'r1');
    await publish({ a: { x: 2 } }, 'r2');
    await publish({ a: { x: 3 } }, 'r3');
    await publish({ a: { x: 4 } }, 'r4');
    registry.markBuilt();
    const app = createBundleApp({
      registry,
      fleet: new Fleet(metrics, () => undefined),
      metrics,
      logger: silentLogger(),
    });
    const get = (headers: Record<string, string>) =>
      request(app)
        .get('/bundles/k8s')
        .set(headers)
        .buffer(true)
        .parse((res, done) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => done(null, Buffer.concat(chunks)));
        });
    const delta = await get({ 'if-none-match': '"r3"', prefer: 'modes=snapshot,delta' });
    expect(delta.status).to.equal(200);
    expect(delta.headers.etag).to.equal('"r4"');
    const files = await bundleFiles(delta.body as Buffer);
    expect(files.has('patch.json')).to.equal(true);
    // No delta asked for; an unknown revision; one too old for the history of 2 (r1); no ETag at all.
    for (const headers of [
      { 'if-none-match': '"r3"' },
      { 'if-none-match': '"unknown"', prefer: 'modes=snapshot,delta' },
      { 'if-none-match': '"r1"', prefer: 'modes=snapshot,delta' },
      { prefer: 'modes=snapshot,delta' },
    ]) {
      const res = await get(headers);
      expect((res.body as Buffer).equals(snapshotBytes), JSON.stringify(headers)).to.equal(true);
    }
    expect(
      (await metrics.registry.getSingleMetric('opa_sync_bundle_deltas_total')?.get())?.values[0]?.value,
    ).to.equal(1);
  });
});
