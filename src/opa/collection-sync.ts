// Makes OPA hold each replicated collection exactly: one PUT of the whole collection after the initial
// list (and after OPA lost it), then the changed objects as JSON Patch batches on the collection. Changes
// are coalesced per object between batches, and over a short window: a collection is patched at most once
// every `windowMs` (a change after a quiet spell goes at once), or at once when `windowOps` objects wait,
// so churn makes one request of many ops instead of one request per op. A failed patch falls back to a
// full PUT.
import type { Metrics } from '../http/metrics.js';
import type { Collection, CollectionEntry, DesiredState } from '../model/desired-state.js';
import { sleep } from '../util/backoff.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { OpaHttpError, jsonPointer, type JsonPatchOp, type OpaClient } from './client.js';

export type CollectionApi = Pick<OpaClient, 'putData' | 'patchData'>;

/** What this module reads of the desired state (the pusher may hand it a view that leaves objects out). */
export type CollectionReader = Pick<DesiredState, 'collection' | 'collectionKeys'>;

interface Applied {
  /** False until a full PUT succeeded, and again after OPA lost the collection or a patch failed. */
  loaded: boolean;
  entries: Map<string, CollectionEntry>;
  /** Entries under each first path segment (namespace), so an emptied namespace is removed whole. */
  perParent: Map<string, number>;
}

const DEFAULT_BATCH = 1000;

/** How changes of a collection are gathered into one patch request. */
export interface CoalesceWindow {
  /** At most one patch request per collection in this many ms (0: no waiting). */
  windowMs: number;
  /** A patch goes at once, window or not, when this many objects wait. */
  windowOps: number;
}

/**
 * P3 (`npm run bench -- p3`, 10k objects, 200 updates/s, changes ~5 ms apart), on a quiet machine: 10 ms
 * made ~2 ops per request (3,080 requests for 6,000 updates; opa-sync 3.0–3.8 s and OPA 1.4–1.65 s of
 * CPU), 15 ms ~3 (2,026–2,046 requests; 2.2–2.6 s and 0.8–1.0 s) with the p99 of "visible in OPA" still
 * 19 ms; 5 ms and less hardly coalesce at that rate. It adds at most 15 ms to a change.
 */
export const DEFAULT_WINDOW: CoalesceWindow = { windowMs: 15, windowOps: 500 };

function buildTree(entries: Iterable<CollectionEntry>): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const { entryPath, value } of entries) {
    let node = root;
    entryPath.slice(0, -1).forEach((segment) => {
      node = (node[segment] ??= {}) as Record<string, unknown>;
    });
    node[entryPath[entryPath.length - 1] as string] = value;
  }
  return root;
}

function parentCounts(entries: Iterable<CollectionEntry>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { entryPath } of entries) {
    if (entryPath.length > 1)
      counts.set(entryPath[0] as string, (counts.get(entryPath[0] as string) ?? 0) + 1);
  }
  return counts;
}

export class CollectionSync {
  private readonly applied = new Map<string, Applied>();
  private readonly dirty = new Map<string, Set<string>>();
  /** performance.now() when each collection's last patch request was sent. */
  private readonly lastPatchAt = new Map<string, number>();

  constructor(
    private readonly state: CollectionReader,
    private readonly client: CollectionApi,
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
    private readonly batchSize = DEFAULT_BATCH,
    private readonly window: CoalesceWindow = DEFAULT_WINDOW,
  ) {}

  /** One object changed; the next sync of its collection patches it. */
  markDirty(key: string, id: string): void {
    let set = this.dirty.get(key);
    if (!set) this.dirty.set(key, (set = new Set()));
    set.add(id);
  }

  /** After OPA lost what we pushed (or may have): every collection is PUT whole again. */
  forgetAll(): void {
    for (const a of this.applied.values()) a.loaded = false;
  }

  /** True when every collection has been loaded into OPA at least once since the last full push. */
  allLoaded(): boolean {
    return this.state.collectionKeys().every((k) => this.applied.get(k)?.loaded === true);
  }

  /** Brings one collection up to date. Returns true when work is left (a fallback to a full PUT). */
  async sync(key: string, signal: AbortSignal): Promise<boolean> {
    const collection = this.state.collection(key);
    if (!collection?.synced) return false;
    let applied = this.applied.get(key);
    if (!applied)
      this.applied.set(key, (applied = { loaded: false, entries: new Map(), perParent: new Map() }));
    if (!applied.loaded) {
      await this.putWhole(collection, applied, signal);
      return false;
    }
    const waiting = this.dirty.get(key);
    if (!waiting || waiting.size === 0) return false;
    // Within the window of the last patch (a change after a quiet spell goes at once): wait for the
    // rest of it, so that what else changes meanwhile goes in the same request.
    const wait = (this.lastPatchAt.get(key) ?? -Infinity) + this.window.windowMs - performance.now();
    if (wait > 0 && waiting.size < this.window.windowOps) await sleep(wait, signal);
    const ids = this.dirty.get(key);
    this.dirty.delete(key);
    if (!ids || ids.size === 0 || !applied.loaded) {
      if (ids) this.dirty.set(key, ids);
      return !applied.loaded;
    }
    this.lastPatchAt.set(key, performance.now());
    try {
      await this.patch(collection, applied, [...ids].sort(), signal);
      return false;
    } catch (err) {
      if (!(err instanceof OpaHttpError)) throw err;
      this.logger.warn(
        { collection: key, err: messageOf(err) },
        'patch refused by OPA; loading the whole collection again',
      );
      applied.loaded = false;
      return true;
    }
  }

  /** One call to OPA, counted and timed. */
  private async measured(call: () => Promise<void>): Promise<void> {
    const timer = this.metrics?.loadDuration.startTimer({ kind: 'collection' });
    try {
      await call();
      this.metrics?.loads.inc({ kind: 'collection', result: 'ok' });
    } catch (err) {
      this.metrics?.loads.inc({ kind: 'collection', result: 'error' });
      throw err;
    } finally {
      timer?.();
    }
  }

  private async putWhole(collection: Collection, applied: Applied, signal: AbortSignal): Promise<void> {
    const started = Date.now();
    const snapshot = new Map(collection.entries);
    // Everything changed so far is in the snapshot; only later events need a patch.
    this.dirty.delete(collection.key);
    // On failure nothing was taken: every entry is still to be loaded by the next full PUT.
    await this.measured(() => this.client.putData(collection.path, buildTree(snapshot.values()), signal));
    applied.entries = snapshot;
    applied.perParent = parentCounts(snapshot.values());
    applied.loaded = true;
    this.metrics?.replicatedObjects.set({ collection: collection.key }, snapshot.size);
    this.logger.info(
      { collection: collection.key, objects: snapshot.size, tookMs: Date.now() - started },
      'loaded the whole collection into OPA',
    );
  }

  private async patch(
    collection: Collection,
    applied: Applied,
    ids: string[],
    signal: AbortSignal,
  ): Promise<void> {
    let ops: JsonPatchOp[] = [];
    let commits: (() => void)[] = [];
    const flush = async (): Promise<void> => {
      if (ops.length === 0) return;
      await this.measured(() => this.client.patchData(collection.path, ops, signal));
      for (const commit of commits) commit();
      for (const [parent, by] of delta) {
        const n = (applied.perParent.get(parent) ?? 0) + by;
        if (n > 0) applied.perParent.set(parent, n);
        else applied.perParent.delete(parent);
      }
      delta.clear();
      this.logger.debug({ collection: collection.key, ops: ops.length }, 'patched collection');
      ops = [];
      commits = [];
    };
    // How the ops so far change each parent's count (applied.perParent is the count before them).
    const delta = new Map<string, number>();
    const countOf = (parent: string): number =>
      (applied.perParent.get(parent) ?? 0) + (delta.get(parent) ?? 0);
    const change = (parent: string, by: number): void => {
      delta.set(parent, (delta.get(parent) ?? 0) + by);
    };
    for (const id of ids) {
      const desired = collection.entries.get(id);
      const have = applied.entries.get(id);
      if (desired?.value === have?.value) continue;
      const entryPath = (desired ?? have)?.entryPath;
      if (entryPath === undefined) continue;
      const parent = entryPath.length > 1 ? (entryPath[0] as string) : undefined;
      const count = parent === undefined ? 0 : countOf(parent);
      if (desired && !have) {
        if (parent !== undefined && count === 0) {
          ops.push({
            op: 'add',
            path: jsonPointer([parent]),
            value: buildTree([{ ...desired, entryPath: entryPath.slice(1) }]),
          });
        } else {
          ops.push({ op: 'add', path: jsonPointer(entryPath), value: desired.value });
        }
        if (parent !== undefined) change(parent, 1);
        commits.push(() => applied.entries.set(id, desired));
      } else if (desired && have) {
        ops.push({ op: 'replace', path: jsonPointer(entryPath), value: desired.value });
        commits.push(() => applied.entries.set(id, desired));
      } else {
        // The last object of a namespace takes the namespace's key with it: OPA equals the cluster.
        if (parent !== undefined && count <= 1) ops.push({ op: 'remove', path: jsonPointer([parent]) });
        else ops.push({ op: 'remove', path: jsonPointer(entryPath) });
        if (parent !== undefined) change(parent, -1);
        commits.push(() => applied.entries.delete(id));
      }
      if (ops.length >= this.batchSize) await flush();
    }
    await flush();
    this.metrics?.replicatedObjects.set({ collection: collection.key }, applied.entries.size);
  }
}
