// The one module that loads @kubernetes/client-node at run time: it reads the kubeconfig (a file, or
// the in-cluster service account) and builds the implementations of our Kubernetes seams (ports.ts).
// app.ts imports it dynamically, only when a Kubernetes source is configured: client-node costs about
// 75 MB of memory and most of the start-up time, which folder mode does not pay.
import {
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { KubeAdapters, WatchTarget } from './ports.js';
import { KubeRawClient } from './raw-client.js';
import { RestartingWatcher } from './watch-collection.js';
import type { BackoffOptions } from '../util/backoff.js';

/** Where the credentials come from: a kubeconfig file (--kubeconfig), or the pod's service account. */
export type KubeConfigSource = { kind: 'file'; path: string } | { kind: 'in-cluster' };

export interface KubeAdapterOptions {
  /** Bound on each call opa-sync makes itself: discovery, lists, status patches. */
  timeoutMs: number;
  /** Server-side bound on one watch request; the watch then reconnects from its last resourceVersion. */
  watchTimeoutSeconds?: number;
  /** Delays between restarts of a failed list or watch. */
  watchBackoff?: BackoffOptions;
}

/** A Watch that asks for bookmarks and a server-side timeout on every watch request. */
class BoundedWatch extends Watch {
  constructor(
    config: KubeConfig,
    private readonly timeoutSeconds: number,
  ) {
    super(config);
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.timeoutSeconds },
      callback,
      done,
    );
  }
}

function loadKubeConfig(from: KubeConfigSource): KubeConfig {
  const kc = new KubeConfig();
  if (from.kind === 'file') kc.loadFromFile(from.path);
  else kc.loadFromCluster();
  return kc;
}

/**
 * Builds the watcher, status patcher and API reader over one kubeconfig. Throws when the kubeconfig
 * cannot be read (a missing file, no service account): a configuration problem of the caller's.
 *
 * @example
 * const { createKubeAdapters } = await import('./kube/client-node-adapter.js');
 * const kube = createKubeAdapters({ kind: 'file', path: config.kubeconfig }, { timeoutMs: 15_000 });
 * new ConfigMapSource({ watcher: kube.watcher, state, ... });
 */
export function createKubeAdapters(from: KubeConfigSource, options: KubeAdapterOptions): KubeAdapters {
  const kubeConfig = loadKubeConfig(from);
  const raw = new KubeRawClient(kubeConfig, options.timeoutMs);
  const watch = new BoundedWatch(kubeConfig, options.watchTimeoutSeconds ?? 300);
  const watcher = new RestartingWatcher({
    informer: <T extends KubernetesObject>(target: WatchTarget, signal: AbortSignal) =>
      new ListWatch<T>(
        target.path,
        watch,
        // List items come as the API server sends them (no client-side model objects), like watch events.
        () =>
          raw.getJson<KubernetesListObject<T>>(target.path, {
            query: { labelSelector: target.labelSelector, fieldSelector: target.fieldSelector },
            signal,
          }),
        false,
        target.labelSelector,
        target.fieldSelector,
      ),
    ...(options.watchBackoff === undefined ? {} : { backoff: options.watchBackoff }),
    stopGraceMs: options.timeoutMs,
  });
  return { watcher, patcher: raw, api: raw };
}
