// Policies whose rules sit where replicated objects go: `package kubernetes.networkpolicies` with a rule
// `foo`, and a NetworkPolicy in namespace `foo`. OPA refuses base data at a path that a rule defines
// (and a rule at a path that base data holds), so one of the two must give way. The policy wins: the
// objects under the rule's path are left out of the collection while a loaded module defines it (a
// cluster user who may create a namespace cannot unload an administrator's policy), the rest of the
// collection is replicated, and the conflict is reported on the policy's status. This module keeps those
// exclusions, reads OPA's refusals for them, and gives collection-sync.ts a view of the desired state
// without the excluded objects.
import type { Collection, CollectionEntry, DesiredState } from '../model/desired-state.js';
import { isPathPrefix } from '../util/paths.js';
import type { CollectionReader } from './collection-sync.js';
import type { OpaErrorBody } from './errors.js';

/** A rule that OPA says conflicts with base data at `path` (a data path), defined in `moduleId`. */
export interface DataConflict {
  moduleId: string;
  path: string[];
}

/** Objects of one collection left out because a module defines a rule at or inside their path. */
export interface Exclusion {
  collection: string;
  /** Below the collection's path: `[namespace]`, `[namespace, name, …]`, or `[]` for all of it. */
  relPath: readonly string[];
  moduleId: string;
  /** The module's text when the conflict was found (undefined: not known). */
  text: string | undefined;
}

const CONFLICT_MESSAGE = /^conflicting rule for data path (\S+) found$/;
// A refused data write has no errors[]: its message lists them, "N error(s) occurred: <file>:<row>: …".
const CONFLICT_IN_TEXT = /(\S+):\d+: rego_compile_error: conflicting rule for data path (\S+) found/g;

function dataPath(text: string): string[] {
  return text.split('/').filter((s) => s !== '');
}

/** The rule/data conflicts named in OPA's refusal: its errors[] (a policy PUT) or its message (a data write). */
export function parseConflicts(body: OpaErrorBody): DataConflict[] {
  const found: DataConflict[] = [];
  for (const e of body.errors ?? []) {
    const err = e as { message?: unknown; location?: { file?: unknown } } | null;
    const match = typeof err?.message === 'string' ? CONFLICT_MESSAGE.exec(err.message) : null;
    const file = err?.location?.file;
    if (match?.[1] !== undefined && typeof file === 'string') {
      found.push({ moduleId: file, path: dataPath(match[1]) });
    }
  }
  for (const match of body.message.matchAll(CONFLICT_IN_TEXT)) {
    const [, file, path] = match;
    if (file !== undefined && path !== undefined) found.push({ moduleId: file, path: dataPath(path) });
  }
  return found;
}

function overlaps(a: readonly string[], b: readonly string[]): boolean {
  return isPathPrefix(a, b) || isPathPrefix(b, a);
}

/** A read-only Map of the collection's entries without the excluded ones (no copy is made). */
class EntriesWithout extends Map<string, CollectionEntry> {
  constructor(
    private readonly all: ReadonlyMap<string, CollectionEntry>,
    private readonly excluded: (entry: CollectionEntry) => boolean,
  ) {
    super();
  }

  override get(id: string): CollectionEntry | undefined {
    const entry = this.all.get(id);
    return entry === undefined || this.excluded(entry) ? undefined : entry;
  }

  override has(id: string): boolean {
    return this.get(id) !== undefined;
  }

  override get size(): number {
    let n = 0;
    for (const entry of this.all.values()) if (!this.excluded(entry)) n += 1;
    return n;
  }

  override *entries(): MapIterator<[string, CollectionEntry]> {
    for (const [id, entry] of this.all) if (!this.excluded(entry)) yield [id, entry];
  }

  override *keys(): MapIterator<string> {
    for (const [id] of this.entries()) yield id;
  }

  override *values(): MapIterator<CollectionEntry> {
    for (const [, entry] of this.entries()) yield entry;
  }

  override [Symbol.iterator](): MapIterator<[string, CollectionEntry]> {
    return this.entries();
  }

  override forEach(
    fn: (value: CollectionEntry, key: string, map: Map<string, CollectionEntry>) => void,
  ): void {
    for (const [id, entry] of this.entries()) fn(entry, id, this);
  }

  override set(): this {
    throw new TypeError('a view of a collection is read-only');
  }

  override delete(): boolean {
    throw new TypeError('a view of a collection is read-only');
  }

  override clear(): void {
    throw new TypeError('a view of a collection is read-only');
  }
}

export class ReplicationConflicts {
  private readonly byCollection = new Map<string, Exclusion[]>();

  constructor(private readonly state: DesiredState) {}

  /** The desired state as collection-sync.ts is to see it: without the excluded objects. */
  readonly view: CollectionReader = {
    collectionKeys: () => this.state.collectionKeys(),
    collection: (key) => {
      const collection = this.state.collection(key);
      const exclusions = this.byCollection.get(key);
      if (collection === undefined || exclusions === undefined) return collection;
      const view: Collection = {
        key: collection.key,
        path: collection.path,
        synced: collection.synced,
        entries: new EntriesWithout(collection.entries, (e) =>
          exclusions.some((x) => overlaps(x.relPath, e.entryPath)),
        ),
      };
      return view;
    },
  };

  /** Where a conflicting data path falls in a replicated collection, if it does. */
  locate(path: readonly string[]): { collection: string; relPath: string[] } | undefined {
    for (const key of this.state.collectionKeys()) {
      const collection = this.state.collection(key);
      if (collection === undefined) continue;
      if (isPathPrefix(collection.path, path))
        return { collection: key, relPath: path.slice(collection.path.length) };
      // A rule above the collection: none of it can be written.
      if (isPathPrefix(path, collection.path)) return { collection: key, relPath: [] };
    }
    return undefined;
  }

  /** Records an exclusion; false when one just like it is there already. */
  add(exclusion: Exclusion): boolean {
    const list = this.byCollection.get(exclusion.collection) ?? [];
    const same = list.find(
      (x) => x.moduleId === exclusion.moduleId && x.relPath.join('/') === exclusion.relPath.join('/'),
    );
    if (same !== undefined) {
      same.text ??= exclusion.text;
      return false;
    }
    list.push(exclusion);
    this.byCollection.set(exclusion.collection, list);
    return true;
  }

  /**
   * Drops the exclusions of a module (removed, or loaded with another text than `text`; all of them when
   * `text` is undefined). Returns them, so the objects they kept out can be replicated again.
   */
  release(moduleId: string, keepText?: string): Exclusion[] {
    const released: Exclusion[] = [];
    for (const [key, list] of this.byCollection) {
      const kept = list.filter((x) => {
        const keep = x.moduleId !== moduleId || (keepText !== undefined && x.text === keepText);
        if (!keep) released.push(x);
        return keep;
      });
      if (kept.length === 0) this.byCollection.delete(key);
      else this.byCollection.set(key, kept);
    }
    return released;
  }

  /** Drops the exclusions of modules that `isOurs` does not know (they are found again if still there). */
  releaseForeign(isOurs: (moduleId: string) => boolean): Exclusion[] {
    const foreign = new Set<string>();
    for (const list of this.byCollection.values()) {
      for (const x of list) if (!isOurs(x.moduleId)) foreign.add(x.moduleId);
    }
    return [...foreign].flatMap((id) => this.release(id));
  }

  /** The ids of the collection's objects at or inside `relPath` (or containing it). */
  idsUnder(collection: string, relPath: readonly string[]): string[] {
    const ids: string[] = [];
    for (const [id, entry] of this.state.collection(collection)?.entries ?? []) {
      if (overlaps(relPath, entry.entryPath)) ids.push(id);
    }
    return ids;
  }

  /** The exclusions a module causes. */
  ofModule(moduleId: string): Exclusion[] {
    return [...this.byCollection.values()].flat().filter((x) => x.moduleId === moduleId);
  }

  /** How many objects of the collection are left out now. */
  excludedCount(collection: string): number {
    const exclusions = this.byCollection.get(collection);
    if (exclusions === undefined) return 0;
    let n = 0;
    for (const entry of this.state.collection(collection)?.entries.values() ?? []) {
      if (exclusions.some((x) => overlaps(x.relPath, entry.entryPath))) n += 1;
    }
    return n;
  }
}
