// The one module that loads @kubernetes/client-node at run time: it reads the kubeconfig (a file, or
// the in-cluster service account) with client-node's KubeConfig, which also authenticates every request,
// and builds the implementations of our Kubernetes seams (ports.ts) over our own raw client and
// list-watch informer (client-node's ListWatch and Watch are not used).
// app.ts imports it dynamically, only when a Kubernetes source is configured: client-node costs about
// 75 MB of memory and most of the start-up time, which folder mode does not pay.
import type { KubernetesObject } from '@kubernetes/client-node';
// The module of KubeConfig alone, not the package's index (every API and model besides).
import { KubeConfig } from '@kubernetes/client-node/dist/config.js';
import { DEFAULT_IDLE_TIMEOUT_MS, StreamingListWatch } from './list-watch.js';
import type { KubeAdapters, WatchTarget } from './ports.js';
import { KubeRawClient } from './raw-client.js';
import { RestartingWatcher } from './watch-collection.js';
import type { BackoffOptions } from '../util/backoff.js';

/** Where the credentials come from: a kubeconfig file (--kubeconfig), or the pod's service account. */
export type KubeConfigSource = { kind: 'file'; path: string } | { kind: 'in-cluster' };

export interface KubeAdapterOptions {
  /** Bound on each call opa-sync makes itself: discovery, list pages, status patches, a watch's answer. */
  timeoutMs: number;
  /** Server-side bound on one watch request; the watch then reconnects from its last resourceVersion. */
  watchTimeoutSeconds?: number;
  /** Objects per list page (`limit`); 500 by default. */
  listPageSize?: number;
  /** Delays between restarts of a failed list or watch. */
  watchBackoff?: BackoffOptions;
  /**
   * A watch that hears nothing for this long is taken for dead, and its source not ready until it is
   * back (--kube-watch-idle-timeout; 60 s by default).
   */
  watchIdleTimeoutMs?: number;
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
  const idleTimeoutMs = options.watchIdleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const watcher = new RestartingWatcher({
    informer: <T extends KubernetesObject>(target: WatchTarget) =>
      new StreamingListWatch<T>(raw, target, {
        ...(options.listPageSize === undefined ? {} : { pageSize: options.listPageSize }),
        watchTimeoutSeconds: options.watchTimeoutSeconds ?? 300,
        idleTimeoutMs,
      }),
    ...(options.watchBackoff === undefined ? {} : { backoff: options.watchBackoff }),
    stopGraceMs: options.timeoutMs,
    staleAfterMs: idleTimeoutMs,
  });
  return { watcher, patcher: raw, api: raw };
}
