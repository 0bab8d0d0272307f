// The desired state: the one in-memory model of everything OPA should hold — policy modules and data
// documents grouped by origin, and replicated Kubernetes collections — with one change notification.
// Sources write it; sinks (OPA push, bundles) only read it. It also knows whether every source has
// listed what it watches, so that no sink acts on a partial first picture.
import type { ErrorCode } from '../util/error-codes.js';
import { originKey, type Origin } from './origin.js';

/** A Rego module; `id` is OPA's policy id, e.g. `<ns>/<name>/<key>` for a ConfigMap key. */
export interface PolicyModule {
  id: string;
  text: string;
}

/** A JSON document at a path of OPA's data tree (path segments, never empty). */
export interface DataDocument {
  path: readonly string[];
  value: unknown;
}

/** Input of an origin that could not be turned into a module or document (bad JSON, binaryData, …). */
export interface OriginProblem {
  /** The ConfigMap key (or file) concerned. */
  key: string;
  code: ErrorCode;
  message: string;
}

export interface OriginState {
  origin: Origin;
  modules: readonly PolicyModule[];
  documents: readonly DataDocument[];
  /**
   * The data subtree that belongs to this origin alone (e.g. `[ns, name]` for a data ConfigMap): removed
   * as a whole when the origin goes away.
   */
  dataRoot?: readonly string[];
  problems: readonly OriginProblem[];
  /** The bundle the origin belongs to when opa-sync serves bundles (label openpolicyagent.org/bundle). */
  bundle?: string | undefined;
}

/** One replicated object, at `entryPath` below its collection: `[namespace, name]` or `[name]`. */
export interface CollectionEntry {
  entryPath: readonly string[];
  value: object;
}

/** A replicated resource: where it lives in OPA's data, and its objects by entry id. */
export interface Collection {
  key: string;
  /** Where the collection lives in OPA's data, e.g. `['kubernetes', 'networkpolicies']`. */
  path: readonly string[];
  entries: Map<string, CollectionEntry>;
  /** True once the source has listed every object: before that no sink uses it. */
  synced: boolean;
}

/** What changed. Sinks read the current state when they work; a change only says where to look. */
export type Change =
  | { kind: 'origin'; key: string }
  /** One object of a collection was set or deleted. */
  | { kind: 'entry'; collection: string; entryId: string }
  /** A collection was defined or has been listed: its whole content is to be looked at. */
  | { kind: 'collection'; collection: string }
  /** Every registered source has listed what it watches. */
  | { kind: 'sources-synced' };

export type ChangeListener = (change: Change) => void;

export function entryId(entryPath: readonly string[]): string {
  return entryPath.join('/');
}

export class DesiredState {
  private readonly origins = new Map<string, OriginState>();
  private readonly collections = new Map<string, Collection>();
  private readonly listeners = new Set<ChangeListener>();
  private readonly sources = new Map<string, boolean>();

  // ---- origins

  /** Replaces everything the origin contributes. */
  set(state: OriginState): void {
    const key = originKey(state.origin);
    this.origins.set(key, state);
    this.notify({ kind: 'origin', key });
  }

  /** Forgets the origin: sinks remove what it contributed. */
  delete(origin: Origin): void {
    const key = originKey(origin);
    if (this.origins.delete(key)) this.notify({ kind: 'origin', key });
  }

  get(key: string): OriginState | undefined {
    return this.origins.get(key);
  }

  keys(): string[] {
    return [...this.origins.keys()].sort();
  }

  get size(): number {
    return this.origins.size;
  }

  // ---- replicated collections

  defineCollection(key: string, path: readonly string[]): void {
    if (this.collections.has(key)) throw new Error(`collection ${key} is defined twice`);
    this.collections.set(key, { key, path, entries: new Map(), synced: false });
    this.notify({ kind: 'collection', collection: key });
  }

  setEntry(key: string, entryPath: readonly string[], value: object): void {
    const id = entryId(entryPath);
    this.definedCollection(key).entries.set(id, { entryPath, value });
    this.notify({ kind: 'entry', collection: key, entryId: id });
  }

  deleteEntry(key: string, entryPath: readonly string[]): void {
    const id = entryId(entryPath);
    if (this.definedCollection(key).entries.delete(id)) {
      this.notify({ kind: 'entry', collection: key, entryId: id });
    }
  }

  markCollectionSynced(key: string): void {
    const c = this.definedCollection(key);
    if (c.synced) return;
    c.synced = true;
    this.notify({ kind: 'collection', collection: key });
  }

  collection(key: string): Collection | undefined {
    return this.collections.get(key);
  }

  collectionKeys(): string[] {
    return [...this.collections.keys()].sort();
  }

  // ---- sources

  /**
   * A source announces itself before it starts; the returned function marks it as listed. Once every
   * registered source is, sinks get a `sources-synced` change (once).
   *
   * @example
   * const listed = state.registerSource('configmaps');
   * await initialList();
   * listed();
   */
  registerSource(name: string): () => void {
    if (this.sources.has(name)) throw new Error(`source ${name} is registered twice`);
    this.sources.set(name, false);
    return () => {
      if (this.sources.get(name) === true) return;
      this.sources.set(name, true);
      if (this.sourcesSynced()) this.notify({ kind: 'sources-synced' });
    };
  }

  /** True when every registered source has listed what it watches (and when there is none). */
  sourcesSynced(): boolean {
    for (const synced of this.sources.values()) if (!synced) return false;
    return true;
  }

  // ---- changes

  subscribe(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private definedCollection(key: string): Collection {
    const c = this.collections.get(key);
    if (!c) throw new Error(`collection ${key} is not defined`);
    return c;
  }

  private notify(change: Change): void {
    for (const listener of this.listeners) listener(change);
  }
}
