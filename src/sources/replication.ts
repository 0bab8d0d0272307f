// The replication source: lists and watches Kubernetes resources (`--replicate`, `--replicate-cluster`)
// and keeps each as a collection of the desired state, at `<replicate-path>/<resource>` with objects at
// `<namespace>/<name>` or `<name>` (kube-mgmt's layout), or, with --replicate-cluster-by-name, at
// `<name>` for every --replicate-cluster object (the seed-era layout; same-named objects collide).
import type { KubernetesObject } from '@kubernetes/client-node';
import { formatResource, type ResourceRef } from '../config.js';
import type { Metrics } from '../http/metrics.js';
import { KubeApiError } from '../kube/errors.js';
import type { CollectionWatcher, KubeReader, WatchHandlers } from '../kube/ports.js';
import { StaleWatches } from '../kube/stale-watches.js';
import { runTogether } from '../lifecycle/run-together.js';
import type { Part } from '../lifecycle/part.js';
import type { DesiredState } from '../model/desired-state.js';
import { Backoff, sleep, type BackoffOptions } from '../util/backoff.js';
import { ConfigError, isAbortError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export interface ReplicationOptions {
  api: KubeReader;
  watcher: CollectionWatcher;
  /** The source registers itself here when constructed (before any sink starts) as 'replication'. */
  state: DesiredState;
  logger: Logger;
  metrics?: Metrics | undefined;
  namespaced: readonly ResourceRef[];
  cluster: readonly ResourceRef[];
  path: readonly string[];
  ignoreNamespaces: readonly string[];
  clusterByName: boolean;
  keepManagedFields: boolean;
  /** Delays between looks for a resource the API server does not serve yet; by default 1 s up to 10 s. */
  discoveryBackoff?: BackoffOptions;
}

export interface Discovered {
  namespaced: boolean;
  kind: string;
  verbs: readonly string[];
}

interface ApiResourceList {
  resources?: { name: string; namespaced: boolean; kind: string; verbs?: string[] }[];
}

function apiPrefix(ref: ResourceRef): string {
  return ref.group === '' ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
}

/** Asks the API server about the resource: undefined when it does not (yet) serve it. */
export async function discover(
  api: KubeReader,
  ref: ResourceRef,
  signal?: AbortSignal,
): Promise<Discovered | undefined> {
  let list: ApiResourceList;
  try {
    list = await api.getJson<ApiResourceList>(apiPrefix(ref), { signal });
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return undefined;
    throw err;
  }
  const found = list.resources?.find((r) => r.name === ref.resource);
  if (!found) return undefined;
  return { namespaced: found.namespaced, kind: found.kind, verbs: found.verbs ?? [] };
}

type Obj = KubernetesObject & { metadata?: { managedFields?: unknown } };

/** One resource to replicate, as the flags name it. */
interface Resource {
  ref: ResourceRef;
  /** Given to --replicate-cluster (else --replicate). */
  clusterFlag: boolean;
  /** The collection key, `<group>/<version>/<resource>` as in the flags. */
  key: string;
}

/** What this source has put into one collection, kept across runs so a restart can remove the stale. */
interface Replicated {
  /** Every object applied, by `<namespace>/<name>` or `<name>`. */
  objects: Map<string, Obj>;
  layout: ByNameLayout | undefined;
}

/** What configuration must change for the resource to be replicated; empty when nothing. */
function problemsOf({ ref, clusterFlag }: Resource, discovered: Discovered): string[] {
  const problems: string[] = [];
  if (!discovered.verbs.includes('list') || !discovered.verbs.includes('watch')) {
    problems.push(
      `${formatResource(ref)} cannot be replicated: the API server does not allow list and watch on it`,
    );
  }
  if (!discovered.namespaced && !clusterFlag) {
    problems.push(
      `--replicate=${formatResource(ref)}: ${discovered.kind} is cluster-scoped; use --replicate-cluster=${formatResource(ref)}`,
    );
  }
  return problems;
}

/** What the web page shows of one replicated resource (read-only, made on request). */
export interface ReplicationSnapshot {
  resource: string;
  /** Where its objects are in OPA's data, '/'-separated. */
  path: string;
  objects: number;
  /** True once the first list is done. */
  listed: boolean;
  /** The API server does not serve it (yet): looked up again with backoff. */
  notServed: boolean;
  /** When the last object was added, changed or deleted (ISO 8601). */
  lastEventAt: string | undefined;
  /** Failed lists or watches, each restarted with backoff. */
  watchRestarts: number;
  lastError: { message: string; at: string } | undefined;
}

interface WatchStats {
  lastEventAt: string | undefined;
  watchRestarts: number;
  lastError: { message: string; at: string } | undefined;
}

export class ReplicationSource implements Part {
  readonly name = 'replication';
  readonly onFailure = 'restart';
  private readonly resources: readonly Resource[];
  private readonly replicated = new Map<string, Replicated>();
  private readonly pendingDiscovery = new Set<string>();
  private readonly log: Logger;
  private readonly announceListed: () => void;
  private readonly stats = new Map<string, WatchStats>();
  private readonly stale: StaleWatches;

  constructor(private readonly options: ReplicationOptions) {
    this.log = options.logger;
    this.stale = new StaleWatches(this.log);
    this.resources = [
      ...options.namespaced.map((ref) => ({ ref, clusterFlag: false, key: formatResource(ref) })),
      ...options.cluster.map((ref) => ({ ref, clusterFlag: true, key: formatResource(ref) })),
    ];
    this.announceListed = options.state.registerSource(this.name);
  }

  /**
   * True once every resource has been listed, a resource not served yet included, while no watch is
   * stale (heard nothing from the API server past the idle timeout, not back yet).
   */
  ready(): boolean {
    return this.stale.size === 0 && this.unlisted().length === 0;
  }

  /** Why not ready: resources not listed yet, the stale watches and since when. */
  notReady(): string[] {
    const unlisted = this.unlisted();
    return [
      ...(unlisted.length === 0 ? [] : [`not listed yet: ${unlisted.join(', ')}`]),
      ...this.stale.reasons(),
    ];
  }

  private unlisted(): string[] {
    return this.resources
      .filter((r) => this.options.state.collection(r.key)?.synced !== true)
      .map((r) => r.key);
  }

  /** What the web page shows: each resource's object count, last event, watch restarts, last error. */
  snapshot(): ReplicationSnapshot[] {
    return this.resources.map(({ key, ref }) => {
      const collection = this.options.state.collection(key);
      const stats = this.stats.get(key);
      return {
        resource: key,
        path: [...this.options.path, ref.resource].join('/'),
        objects: collection?.entries.size ?? 0,
        listed: collection?.synced === true,
        notServed: this.pendingDiscovery.has(key),
        lastEventAt: stats?.lastEventAt,
        watchRestarts: stats?.watchRestarts ?? 0,
        lastError: stats?.lastError,
      };
    });
  }

  private statsOf(key: string): WatchStats {
    let stats = this.stats.get(key);
    if (stats === undefined) {
      stats = { lastEventAt: undefined, watchRestarts: 0, lastError: undefined };
      this.stats.set(key, stats);
    }
    return stats;
  }

  /** Resources not served by the API server yet, for /ready. */
  missing(): string[] {
    return [...this.pendingDiscovery].sort();
  }

  /**
   * Checks each resource with API discovery, then watches it. A resource used with the wrong scope, or
   * that cannot be listed and watched, is a configuration error (ConfigError, every problem listed). A
   * resource the API server does not serve yet (a CRD installed later) is reported and looked up again
   * with backoff until it appears; the source counts as listed (for the sinks) once every resource
   * served at the start has been listed, and is ready once every resource has.
   */
  async run(signal: AbortSignal): Promise<void> {
    let found: { resource: Resource; discovered: Discovered | undefined }[];
    try {
      found = await Promise.all(
        this.resources.map(async (resource) => ({
          resource,
          discovered: await discover(this.options.api, resource.ref, signal),
        })),
      );
    } catch (err) {
      if (signal.aborted && isAbortError(err)) return;
      throw err;
    }
    const problems = found.flatMap(({ resource, discovered }) =>
      discovered === undefined ? [] : problemsOf(resource, discovered),
    );
    if (problems.length > 0) throw new ConfigError(problems);
    for (const { key, ref, clusterFlag } of this.resources) {
      if (this.replicated.has(key)) continue;
      this.options.state.defineCollection(key, [...this.options.path, ref.resource]);
      const byName = clusterFlag && this.options.clusterByName;
      this.replicated.set(key, {
        objects: new Map(),
        layout: byName ? new ByNameLayout(this, key) : undefined,
      });
    }
    this.log.info(
      {
        namespaced: this.options.namespaced.map(formatResource),
        cluster: this.options.cluster.map(formatResource),
        path: this.options.path.join('/'),
        layout: this.options.clusterByName ? 'cluster resources by name (seed-era)' : 'namespace/name',
        ignoreNamespaces: this.options.ignoreNamespaces,
      },
      'replicating resources',
    );
    this.pendingDiscovery.clear();
    for (const { resource, discovered } of found) {
      if (discovered === undefined) this.pendingDiscovery.add(resource.key);
    }
    let toList = found.length - this.pendingDiscovery.size;
    const servedOneListed = (): void => {
      toList -= 1;
      if (toList === 0) this.announceListed();
    };
    if (toList === 0) this.announceListed();
    await runTogether(
      signal,
      found.map(({ resource, discovered }) => async (s) => {
        const served = discovered ?? (await this.waitForResource(resource, s));
        if (served === undefined) return;
        await this.options.watcher.watch(
          this.target(resource, served),
          this.handlers(resource, served, discovered === undefined ? () => undefined : servedOneListed),
          s,
        );
      }),
    );
  }

  /** Looks the resource up with backoff until the API server serves it; undefined once `signal` aborts. */
  private async waitForResource(resource: Resource, signal: AbortSignal): Promise<Discovered | undefined> {
    const { key } = resource;
    // Bounded at 10 s by default: a CRD installed later is picked up soon, and discovery calls are cheap.
    const backoff = new Backoff(this.options.discoveryBackoff ?? { minMs: 1000, maxMs: 10_000 });
    for (;;) {
      const delay = backoff.next();
      this.log.error(
        { resource: key, retryInMs: delay },
        `the API server does not serve ${key}: check the resource name, or install its CustomResourceDefinition; looking again`,
      );
      try {
        await sleep(delay, signal);
      } catch {
        return undefined;
      }
      let discovered: Discovered | undefined;
      try {
        discovered = await discover(this.options.api, resource.ref, signal);
      } catch (err) {
        if (signal.aborted) return undefined;
        this.log.warn({ resource: key, err: messageOf(err) }, 'API discovery failed');
        continue;
      }
      if (discovered === undefined) continue;
      const problems = problemsOf(resource, discovered);
      if (problems.length > 0) throw new ConfigError(problems);
      this.pendingDiscovery.delete(key);
      this.log.info({ resource: key }, 'the resource is served now: replicating it');
      return discovered;
    }
  }

  private target(resource: Resource, discovered: Discovered): { path: string; fieldSelector?: string } {
    const { ref, clusterFlag } = resource;
    const path = `${apiPrefix(ref)}/${ref.resource}`;
    // kube-mgmt applies the ignored namespaces to --replicate only, as a server-side field selector.
    if (clusterFlag || !discovered.namespaced || this.options.ignoreNamespaces.length === 0) return { path };
    return {
      path,
      fieldSelector: this.options.ignoreNamespaces.map((ns) => `metadata.namespace!=${ns}`).join(','),
    };
  }

  private handlers(resource: Resource, discovered: Discovered, listed: () => void): WatchHandlers<Obj> {
    const { key, ref } = resource;
    const replicated = this.replicated.get(key) as Replicated;
    const apiVersion = ref.group === '' ? ref.version : `${ref.group}/${ref.version}`;
    const log = this.log.child({ resource: key });
    // What an earlier run applied and this run's list has not shown (yet): removed once listed.
    const unseen = new Set(replicated.objects.keys());
    const stats = this.statsOf(key);
    const seen = (): void => {
      stats.lastEventAt = new Date().toISOString();
    };
    const forget = (id: string, obj: Obj): void => {
      if (!replicated.objects.delete(id)) return;
      if (replicated.layout) replicated.layout.remove(obj);
      else this.options.state.deleteEntry(key, entryPathOf(obj));
    };
    const upsert = (obj: Obj): void => {
      // List items come without apiVersion and kind; watch events carry them: make both alike.
      obj.apiVersion ??= apiVersion;
      obj.kind ??= discovered.kind;
      seen();
      this.trim(obj);
      const entryPath = entryPathOf(obj);
      const id = entryPath.join('/');
      unseen.delete(id);
      replicated.objects.set(id, obj);
      if (replicated.layout) replicated.layout.upsert(obj);
      else this.options.state.setEntry(key, entryPath, obj);
    };
    return {
      add: upsert,
      update: upsert,
      delete: (obj) => {
        seen();
        const id = entryPathOf(obj).join('/');
        unseen.delete(id);
        forget(id, obj);
      },
      listed: () => {
        for (const id of unseen) {
          const obj = replicated.objects.get(id);
          if (obj !== undefined) forget(id, obj);
        }
        if (unseen.size > 0) log.info({ removed: unseen.size }, 'objects gone while not watched: removed');
        unseen.clear();
        log.info({ objects: this.options.state.collection(key)?.entries.size ?? 0 }, 'initial list done');
        this.options.state.markCollectionSynced(key);
        listed();
      },
      retrying: (err, retryInMs) => {
        this.options.metrics?.watchErrors.inc();
        stats.watchRestarts += 1;
        stats.lastError = { message: messageOf(err), at: new Date().toISOString() };
        log.warn({ err: messageOf(err), retryInMs }, 'watch failed, restarting');
      },
      stale: (since, err) => this.stale.mark(key, since, err),
      fresh: () => this.stale.clear(key),
    };
  }

  /** managedFields is bookkeeping of the API server, often most of an object: dropped unless asked for. */
  private trim(obj: Obj): void {
    if (!this.options.keepManagedFields && obj.metadata) delete obj.metadata.managedFields;
  }

  /** For the by-name layout: a collision found between two namespaces. */
  collision(key: string, name: string, kept: string, dropped: string): void {
    this.options.metrics?.replicationCollisions.inc({ collection: key });
    this.log.warn(
      { resource: key, name, kept: `${kept}/${name}`, dropped: `${dropped}/${name}` },
      `--replicate-cluster-by-name: ${kept}/${name} and ${dropped}/${name} have the same name; OPA gets the one in namespace ${kept} (first in alphabetical order)`,
    );
  }

  setEntry(key: string, name: string, obj: Obj): void {
    this.options.state.setEntry(key, [name], obj);
  }

  deleteEntry(key: string, name: string): void {
    this.options.state.deleteEntry(key, [name]);
  }
}

function entryPathOf(obj: Obj): string[] {
  const name = obj.metadata?.name ?? '';
  const namespace = obj.metadata?.namespace;
  return namespace ? [namespace, name] : [name];
}

/**
 * The seed-era layout keys objects by name only. When names collide across namespaces the object of the
 * alphabetically first namespace wins, whatever the order of events, so every replica agrees.
 */
class ByNameLayout {
  private readonly byName = new Map<string, Map<string, Obj>>();

  constructor(
    private readonly source: ReplicationSource,
    private readonly key: string,
  ) {}

  upsert(obj: Obj): void {
    const name = obj.metadata?.name ?? '';
    const namespace = obj.metadata?.namespace ?? '';
    let all = this.byName.get(name);
    if (!all) this.byName.set(name, (all = new Map<string, Obj>()));
    const isNew = !all.has(namespace);
    all.set(namespace, obj);
    const winner = this.winner(all);
    if (isNew && all.size > 1) {
      const dropped = winner === namespace ? [...all.keys()].find((ns) => ns !== namespace) : namespace;
      this.source.collision(this.key, name, winner, dropped ?? '');
    }
    this.source.setEntry(this.key, name, all.get(winner) as Obj);
  }

  remove(obj: Obj): void {
    const name = obj.metadata?.name ?? '';
    const all = this.byName.get(name);
    if (!all) return;
    all.delete(obj.metadata?.namespace ?? '');
    if (all.size === 0) {
      this.byName.delete(name);
      this.source.deleteEntry(this.key, name);
    } else {
      this.source.setEntry(this.key, name, all.get(this.winner(all)) as Obj);
    }
  }

  private winner(all: Map<string, Obj>): string {
    return [...all.keys()].sort()[0] as string;
  }
}
