// Delta bundles of the replicated data bundle (--bundle-deltas), by OPA's rules: a delta is a
// `.manifest` (the same roots as the snapshot it applies to, the new revision) and a `patch.json` of
// JSON Patch ops (`upsert`, `remove`), data only, never empty. The publisher keeps the documents of the
// last few revisions; at each publish it makes the delta from each of them to the new one, so that an
// OPA whose `If-None-Match` names a recent revision (the one it activated) gets the change instead of
// the whole snapshot. Anything else (a revision too old or unknown, other roots, a delta no smaller
// than the snapshot) gets the snapshot. Removing an object whose parent (a namespace) ends up empty
// removes the parent, as the snapshot has no such key.
import { jsonPointer } from '../opa/client.js';
import { packBundle } from './archive.js';
import { canonicalJson } from './canonical-json.js';

/** One data document of a snapshot, below a collection root of `rootLength` segments. */
export interface SnapshotDocument {
  path: readonly string[];
  value: unknown;
  rootLength: number;
}

/** What a delta is made from: the documents of one published revision, keyed by JSON pointer. */
export interface DataSnapshot {
  etag: string;
  revision: string;
  roots: readonly string[];
  documents: ReadonlyMap<string, SnapshotDocument>;
}

export interface PatchOp {
  op: 'upsert' | 'remove';
  path: string;
  value?: unknown;
}

function sameRoots(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}

/** The ops that turn OPA's data of `from` into that of `to` (removes first, then upserts). */
export function patchOps(from: DataSnapshot, to: DataSnapshot): PatchOp[] {
  // Every ancestor of a document of `to` (and the document itself): what a remove must keep.
  const kept = new Set<string>();
  for (const doc of to.documents.values()) {
    for (let d = doc.rootLength; d <= doc.path.length; d += 1) kept.add(jsonPointer(doc.path.slice(0, d)));
  }
  const removes = new Set<string>();
  for (const [pointer, doc] of from.documents) {
    if (to.documents.has(pointer)) continue;
    for (let d = doc.rootLength; d <= doc.path.length; d += 1) {
      const prefix = jsonPointer(doc.path.slice(0, d));
      if (d === doc.path.length || !kept.has(prefix)) {
        removes.add(prefix);
        break;
      }
    }
  }
  const ops: PatchOp[] = [];
  // A remove inside another is covered by it (and would fail: the path no longer exists).
  const sorted = [...removes].sort();
  let last: string | undefined;
  for (const path of sorted) {
    if (last !== undefined && path.startsWith(`${last}/`)) continue;
    ops.push({ op: 'remove', path });
    last = path;
  }
  for (const [pointer, doc] of to.documents) {
    if (from.documents.get(pointer)?.value !== doc.value)
      ops.push({ op: 'upsert', path: pointer, value: doc.value });
  }
  return ops;
}

/**
 * The delta bundle from `from` to `to`, or undefined when OPA must get the snapshot: other roots, no
 * change (OPA would take an empty patch for a snapshot that wipes the roots), or not smaller.
 */
export async function deltaBundle(
  from: DataSnapshot,
  to: DataSnapshot,
  snapshotBytes: number,
): Promise<Buffer | undefined> {
  if (!sameRoots(from.roots, to.roots)) return undefined;
  const ops = patchOps(from, to);
  if (ops.length === 0) return undefined;
  const manifest = canonicalJson({ revision: to.revision, roots: to.roots }, 'the delta manifest');
  const patch = canonicalJson({ data: ops }, 'the delta patch');
  const bytes = await packBundle([
    { name: '/.manifest', content: Buffer.from(manifest, 'utf8') },
    { name: '/patch.json', content: Buffer.from(patch, 'utf8') },
  ]);
  return bytes.length < snapshotBytes ? bytes : undefined;
}

/** The snapshots of the last `limit` revisions, and the deltas from each of them to the newest. */
export class DeltaHistory {
  private readonly snapshots: DataSnapshot[] = [];

  constructor(private readonly limit = 8) {}

  /** Adds the new revision; returns the delta bundles to it, by the ETag they apply to. */
  async add(snapshot: DataSnapshot, snapshotBytes: number): Promise<Map<string, Buffer>> {
    const deltas = new Map<string, Buffer>();
    for (const old of this.snapshots) {
      if (old.etag === snapshot.etag) continue;
      const bytes = await deltaBundle(old, snapshot, snapshotBytes);
      if (bytes !== undefined) deltas.set(old.etag, bytes);
    }
    this.snapshots.push(snapshot);
    if (this.snapshots.length > this.limit) this.snapshots.shift();
    return deltas;
  }
}
