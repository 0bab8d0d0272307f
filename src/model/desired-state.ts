// The desired state: one in-memory model of every policy module and data document that OPA should
// hold, grouped by origin, with change notifications. Sources write it; sinks only read it.
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
  code: string;
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

export type ChangeListener = (key: string) => void;

export class DesiredState {
  private readonly origins = new Map<string, OriginState>();
  private readonly listeners = new Set<ChangeListener>();

  /** Replaces everything the origin contributes. */
  set(state: OriginState): void {
    const key = originKey(state.origin);
    this.origins.set(key, state);
    this.notify(key);
  }

  /** Forgets the origin: sinks remove what it contributed. */
  delete(origin: Origin): void {
    const key = originKey(origin);
    if (this.origins.delete(key)) this.notify(key);
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

  subscribe(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(key: string): void {
    for (const listener of this.listeners) listener(key);
  }
}
