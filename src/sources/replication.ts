// The replication source: lists and watches Kubernetes resources (`--replicate`, `--replicate-cluster`)
// and keeps each as a collection of the desired state, at `<replicate-path>/<resource>` with objects at
// `<namespace>/<name>` or `<name>` (kube-mgmt's layout), or, with --replicate-cluster-by-name, at
// `<name>` for every --replicate-cluster object (the seed-era layout; same-named objects collide).
import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import { formatResource, type ResourceRef } from '../config.js';
import type { Metrics } from '../http/metrics.js';
import { KubeApiError, type KubeRawClient } from '../kube/raw-client.js';
import { watchCollection, type WatchedCollection } from '../kube/watch-collection.js';
import type { DesiredState } from '../model/desired-state.js';
import { Backoff, sleep } from '../util/backoff.js';
import { PermanentError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export interface ReplicationOptions {
  kubeConfig: KubeConfig;
  raw: KubeRawClient;
  state: DesiredState;
  logger: Logger;
  metrics?: Metrics | undefined;
  namespaced: readonly ResourceRef[];
  cluster: readonly ResourceRef[];
  path: readonly string[];
  ignoreNamespaces: readonly string[];
  clusterByName: boolean;
  keepManagedFields: boolean;
}

interface Discovered {
  namespaced: boolean;
  kind: string;
}

interface ApiResourceList {
  resources?: { name: string; namespaced: boolean; kind: string; verbs?: string[] }[];
}

/** A problem that configuration must fix: replication of this resource cannot start. */
export class ReplicationConfigError extends PermanentError {
  constructor(message: string) {
    super('replication_config', message);
  }
}

function apiPrefix(ref: ResourceRef): string {
  return ref.group === '' ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
}

/** Asks the API server about the resource: undefined when it does not (yet) serve it. */
export async function discover(raw: KubeRawClient, ref: ResourceRef): Promise<Discovered | undefined> {
  let list: ApiResourceList;
  try {
    list = await raw.getJson<ApiResourceList>(apiPrefix(ref));
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return undefined;
    throw err;
  }
  const found = list.resources?.find((r) => r.name === ref.resource);
  if (!found) return undefined;
  const verbs = found.verbs ?? [];
  if (!verbs.includes('list') || !verbs.includes('watch')) {
    throw new ReplicationConfigError(
      `${formatResource(ref)} cannot be replicated: the API server does not allow list and watch on it`,
    );
  }
  return { namespaced: found.namespaced, kind: found.kind };
}

type Obj = KubernetesObject & { metadata?: { managedFields?: unknown } };

export class ReplicationSource {
  private readonly watches: WatchedCollection[] = [];
  private readonly pendingDiscovery = new Set<string>();
  private readonly log: Logger;

  constructor(private readonly options: ReplicationOptions) {
    this.log = options.logger;
  }

  /** Resources listed twice, or both namespaced and cluster-wide, are configuration errors. */
  static check(namespaced: readonly ResourceRef[], cluster: readonly ResourceRef[]): string[] {
    const seen = new Set<string>();
    const problems: string[] = [];
    for (const ref of [...namespaced, ...cluster]) {
      const key = ref.resource;
      if (seen.has(key)) {
        problems.push(
          `resource "${ref.resource}" is replicated twice (--replicate and --replicate-cluster would write the same data path)`,
        );
      }
      seen.add(key);
    }
    return problems;
  }

  /**
   * Checks each resource with API discovery, then starts its watch. A resource used with the wrong scope
   * is a configuration error (thrown). A resource the API server does not serve yet (a CRD installed
   * later) is reported and looked up again with backoff until it appears.
   */
  async start(signal: AbortSignal): Promise<void> {
    const all = [
      ...this.options.namespaced.map((ref) => ({ ref, clusterFlag: false })),
      ...this.options.cluster.map((ref) => ({ ref, clusterFlag: true })),
    ];
    const found = await Promise.all(
      all.map(async (r) => ({ ...r, discovered: await discover(this.options.raw, r.ref) })),
    );
    const problems: string[] = [];
    for (const { ref, clusterFlag, discovered } of found) {
      if (discovered && !discovered.namespaced && !clusterFlag) {
        problems.push(
          `--replicate=${formatResource(ref)}: ${discovered.kind} is cluster-scoped; use --replicate-cluster=${formatResource(ref)}`,
        );
      }
    }
    if (problems.length > 0) throw new ReplicationConfigError(problems.join('; '));
    for (const { ref, clusterFlag, discovered } of found) {
      const key = formatResource(ref);
      this.options.state.defineCollection(key, [...this.options.path, ref.resource]);
      if (discovered) {
        this.startWatch(ref, clusterFlag, discovered);
      } else {
        this.pendingDiscovery.add(key);
        void this.waitForResource(ref, clusterFlag, signal);
      }
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
  }

  isSynced(): boolean {
    return this.pendingDiscovery.size === 0 && this.watches.every((w) => w.isSynced());
  }

  /** Resources not served by the API server yet, for /ready. */
  missing(): string[] {
    return [...this.pendingDiscovery].sort();
  }

  async stop(): Promise<void> {
    await Promise.all(this.watches.map((w) => w.stop()));
  }

  private async waitForResource(ref: ResourceRef, clusterFlag: boolean, signal: AbortSignal): Promise<void> {
    const key = formatResource(ref);
    // Bounded at 10 s: a CRD installed later is picked up soon, and discovery calls are cheap.
    const backoff = new Backoff({ minMs: 1000, maxMs: 10_000 });
    for (;;) {
      const delay = backoff.next();
      this.log.error(
        { resource: key, retryInMs: delay },
        `the API server does not serve ${key}: check the resource name, or install its CustomResourceDefinition; looking again`,
      );
      try {
        await sleep(delay, signal);
      } catch {
        return;
      }
      try {
        const discovered = await discover(this.options.raw, ref);
        if (!discovered) continue;
        if (!discovered.namespaced && !clusterFlag) {
          this.log.error(
            { resource: key },
            `--replicate=${key}: ${discovered.kind} is cluster-scoped; use --replicate-cluster`,
          );
          return;
        }
        this.pendingDiscovery.delete(key);
        this.log.info({ resource: key }, 'the resource is served now: replicating it');
        this.startWatch(ref, clusterFlag, discovered);
        return;
      } catch (err) {
        this.log.warn({ resource: key, err: messageOf(err) }, 'API discovery failed');
      }
    }
  }

  private startWatch(ref: ResourceRef, clusterFlag: boolean, discovered: Discovered): void {
    const key = formatResource(ref);
    const path = `${apiPrefix(ref)}/${ref.resource}`;
    // kube-mgmt applies the ignored namespaces to --replicate only, as a server-side field selector.
    const fieldSelector =
      !clusterFlag && discovered.namespaced && this.options.ignoreNamespaces.length > 0
        ? this.options.ignoreNamespaces.map((ns) => `metadata.namespace!=${ns}`).join(',')
        : undefined;
    const apiVersion = ref.group === '' ? ref.version : `${ref.group}/${ref.version}`;
    const list = async (): Promise<KubernetesListObject<Obj>> => {
      const result = await this.options.raw.getJson<KubernetesListObject<Obj>>(path, { fieldSelector });
      // List items come without apiVersion and kind; watch events carry them: make both alike.
      for (const item of result.items) {
        item.apiVersion ??= apiVersion;
        item.kind ??= discovered.kind;
      }
      return result;
    };
    const layout = clusterFlag && this.options.clusterByName ? new ByNameLayout(this, key) : undefined;
    const upsert = (obj: Obj): void => {
      this.trim(obj);
      if (layout) layout.upsert(obj);
      else this.options.state.setEntry(key, entryPathOf(obj), obj);
    };
    const remove = (obj: Obj): void => {
      if (layout) layout.remove(obj);
      else this.options.state.deleteEntry(key, entryPathOf(obj));
    };
    const watch = watchCollection<Obj>({
      kubeConfig: this.options.kubeConfig,
      path,
      list,
      fieldSelector,
      handlers: { add: upsert, update: upsert, delete: remove },
      logger: this.log.child({ resource: key }),
      onError: () => this.options.metrics?.watchErrors.inc(),
    });
    this.watches.push(watch);
    void watch.synced.then(() => {
      const count = this.options.state.collection(key)?.entries.size ?? 0;
      this.log.info({ resource: key, objects: count }, 'initial list done');
      this.options.state.markCollectionSynced(key);
    });
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
