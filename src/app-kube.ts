// The Kubernetes half of the wiring, in a module of its own so that app.ts loads it (and with it
// @kubernetes/client-node, ~75 MB and most of start-up) only when a Kubernetes source is configured.
import type { Config } from './config.js';
import type { Metrics } from './http/metrics.js';
import { createKubeAdapters } from './kube/client-node-adapter.js';
import { StatusWriter } from './kube/status-writer.js';
import type { Part } from './lifecycle/part.js';
import type { DesiredState } from './model/desired-state.js';
import { ConfigMapSource } from './sources/configmaps.js';
import { ReplicationSource } from './sources/replication.js';
import type { Logger } from './util/logger.js';

/** Bound on each Kubernetes API call that opa-sync makes itself (status patches, discovery, lists). */
const KUBE_CALL_TIMEOUT_MS = 15_000;

export interface KubeParts {
  sources: Part[];
  /** The replication source, when resources are replicated (the web page shows it). */
  replication: ReplicationSource | undefined;
  statusWriter: StatusWriter | undefined;
}

/** The Kubernetes sources and the status writer that `config` asks for. Starts nothing. */
export function kubeParts(
  config: Config,
  { state, metrics, logger }: { state: DesiredState; metrics: Metrics; logger: Logger },
): KubeParts {
  const { watcher, patcher, api } = createKubeAdapters(
    config.kubeconfig === undefined ? { kind: 'in-cluster' } : { kind: 'file', path: config.kubeconfig },
    {
      timeoutMs: KUBE_CALL_TIMEOUT_MS,
      watchIdleTimeoutMs: config.kubeWatchIdleTimeoutMs,
      watchTimeoutSeconds: config.watchTimeoutSeconds,
    },
  );
  const sources: Part[] = [];
  const rep = config.replication;
  let replication: ReplicationSource | undefined;
  if (rep.namespaced.length + rep.cluster.length > 0) {
    replication = new ReplicationSource({
      api,
      watcher,
      state,
      logger: logger.child({ component: 'replication' }),
      metrics,
      namespaced: rep.namespaced,
      cluster: rep.cluster,
      path: rep.path,
      ignoreNamespaces: rep.ignoreNamespaces,
      clusterByName: rep.clusterByName,
      keepManagedFields: rep.keepManagedFields,
    });
    sources.push(replication);
  }
  if (!config.configmaps) return { sources, replication, statusWriter: undefined };
  const statusWriter = new StatusWriter({
    patcher,
    annotations: config.statusAnnotations,
    logger: logger.child({ component: 'status' }),
    metrics,
    state,
  });
  sources.push(
    new ConfigMapSource({
      watcher,
      state,
      logger: logger.child({ component: 'configmaps' }),
      namespaces: config.namespaces,
      policies: config.policies,
      data: config.data,
      metrics,
      onAnnotations: (ref, annotations) => statusWriter.observe(ref, annotations),
    }),
  );
  return { sources, replication, statusWriter };
}
