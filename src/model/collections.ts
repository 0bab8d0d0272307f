// Replicated collections of the desired state: for each replicated resource, the data path it lives at
// in OPA and its objects, each at an entry path below it (`[namespace, name]` or `[name]`). Sources
// write entries; the OPA sink reads them. Changes are notified per entry so that sinks can batch them.

export interface CollectionEntry {
  /** Path below the collection: `[namespace, name]` or `[name]`. */
  entryPath: readonly string[];
  value: object;
}

export interface Collection {
  key: string;
  /** Where the collection lives in OPA's data, e.g. `['kubernetes', 'networkpolicies']`. */
  path: readonly string[];
  entries: Map<string, CollectionEntry>;
  /** True once the source has listed every object: before that nothing is pushed. */
  synced: boolean;
}

/** `entryId` is undefined when the whole collection changed (defined, synced). */
export type CollectionListener = (key: string, entryId: string | undefined) => void;

export function entryId(entryPath: readonly string[]): string {
  return entryPath.join('/');
}

export class ReplicatedCollections {
  private readonly collections = new Map<string, Collection>();
  private readonly listeners = new Set<CollectionListener>();

  define(key: string, path: readonly string[]): void {
    if (this.collections.has(key)) throw new Error(`collection ${key} is defined twice`);
    this.collections.set(key, { key, path, entries: new Map(), synced: false });
  }

  setEntry(key: string, entryPath: readonly string[], value: object): void {
    const id = entryId(entryPath);
    this.collection(key).entries.set(id, { entryPath, value });
    this.notify(key, id);
  }

  deleteEntry(key: string, entryPath: readonly string[]): void {
    const id = entryId(entryPath);
    if (this.collection(key).entries.delete(id)) this.notify(key, id);
  }

  markSynced(key: string): void {
    const c = this.collection(key);
    if (c.synced) return;
    c.synced = true;
    this.notify(key, undefined);
  }

  get(key: string): Collection | undefined {
    return this.collections.get(key);
  }

  keys(): string[] {
    return [...this.collections.keys()].sort();
  }

  subscribe(listener: CollectionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private collection(key: string): Collection {
    const c = this.collections.get(key);
    if (!c) throw new Error(`collection ${key} is not defined`);
    return c;
  }

  private notify(key: string, id: string | undefined): void {
    for (const listener of this.listeners) listener(key, id);
  }
}
