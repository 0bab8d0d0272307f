// The Kubernetes half of the wiring, in a module of its own so that app.ts loads it (and with it
// @kubernetes/client-node, ~75 MB and most of start-up) only when a Kubernetes source is configured.
import { KubeConfig } from '@kubernetes/client-node';
import type { Config } from './config.js';
import type { Metrics } from './http/metrics.js';
import { KubeRawClient } from './kube/raw-client.js';
import { StatusWriter } from './kube/status-writer.js';
import type { Part } from './lifecycle/part.js';
import { untilAborted } from './lifecycle/wake.js';
import type { DesiredState } from './model/desired-state.js';
import type { Outcome } from './model/outcome.js';
import { ConfigMapSource } from './sources/configmaps.js';
import { ReplicationSource } from './sources/replication.js';
import type { Logger } from './util/logger.js';

/** Bound on each Kubernetes API call that opa-sync makes itself (status patches, discovery). */
const KUBE_CALL_TIMEOUT_MS = 15_000;

export interface KubeParts {
  sources: Part[];
  statusWriter: (Part & { report(outcome: Outcome, sink: string): void }) | undefined;
}

function loadKubeConfig(config: Config): KubeConfig {
  const kc = new KubeConfig();
  if (config.kubeconfig !== undefined) kc.loadFromFile(config.kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

interface StartStop {
  start(signal: AbortSignal): void | Promise<void>;
  readonly synced?: Promise<void>;
  isSynced(): boolean;
  stop(): Promise<void>;
}

function sourcePart(name: string, state: DesiredState, src: StartStop): Part {
  const listed = state.registerSource(name);
  return {
    name,
    onFailure: 'restart',
    ready: () => src.isSynced(),
    async run(signal) {
      try {
        await src.start(signal);
        const poll = setInterval(() => {
          if (src.isSynced()) listed();
        }, 50);
        try {
          await untilAborted(signal);
        } finally {
          clearInterval(poll);
        }
      } finally {
        await src.stop();
      }
    },
  };
}

export function kubeParts(
  config: Config,
  { state, metrics, logger }: { state: DesiredState; metrics: Metrics; logger: Logger },
): KubeParts {
  const kubeConfig = loadKubeConfig(config);
  const sources: Part[] = [];
  const rep = config.replication;
  if (rep.namespaced.length + rep.cluster.length > 0) {
    const replication = new ReplicationSource({
      kubeConfig,
      raw: new KubeRawClient(kubeConfig, KUBE_CALL_TIMEOUT_MS),
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
    sources.push(sourcePart('replication', state, replication));
  }
  let statusWriter: KubeParts['statusWriter'];
  if (config.configmaps) {
    const configmaps = new ConfigMapSource({
      kubeConfig,
      state,
      logger: logger.child({ component: 'configmaps' }),
      namespaces: config.namespaces,
      policies: config.policies,
      data: config.data,
      onWatchError: () => metrics.watchErrors.inc(),
    });
    sources.push(sourcePart('configmaps', state, configmaps));
    const writer = new StatusWriter({
      kubeConfig,
      annotations: config.statusAnnotations,
      logger: logger.child({ component: 'status' }),
      timeoutMs: KUBE_CALL_TIMEOUT_MS,
      metrics,
    });
    statusWriter = {
      name: 'status',
      onFailure: 'restart',
      ready: () => true,
      run: (signal) => writer.run(signal),
      report: (outcome, sink) => writer.report(outcome, sink),
    };
  }
  return { sources, statusWriter };
}
