// The ConfigMap source: watches policy and data ConfigMaps in the chosen namespaces (server-side label
// selectors, so unrelated ConfigMaps are never cached) and writes them into the desired state. An
// update reloads only when labels or data changed, so our own status annotation never causes a reload.
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import type { DesiredState, OriginState } from '../model/desired-state.js';
import { describeOrigin, originKey, type ConfigMapOrigin, type OriginRole } from '../model/origin.js';
import { watchCollection, type WatchedCollection } from '../kube/watch-collection.js';
import type { Logger } from '../util/logger.js';
import { dataState, fingerprint, policyState, refOf } from './configmap-content.js';

/** Created by Kubernetes in every namespace; never a policy, even where every ConfigMap is one. */
const KUBE_ROOT_CA = 'kube-root-ca.crt';

export interface ConfigMapSourceOptions {
  kubeConfig: KubeConfig;
  state: DesiredState;
  logger: Logger;
  namespaces: { all: boolean; names: readonly string[] };
  policies: { enabled: boolean; label: string; value: string; requireLabel: boolean };
  data: { enabled: boolean; label: string; value: string };
  onWatchError?: (err: unknown) => void;
}

export class ConfigMapSource {
  private readonly watches: WatchedCollection[] = [];
  private readonly fingerprints = new Map<string, string>();
  private readonly log: Logger;

  constructor(private readonly options: ConfigMapSourceOptions) {
    this.log = options.logger;
  }

  start(): void {
    const { namespaces, policies, data } = this.options;
    const targets: (string | undefined)[] = namespaces.all ? [undefined] : [...namespaces.names];
    for (const namespace of targets) {
      if (policies.enabled) {
        const selector = policies.requireLabel ? `${policies.label}=${policies.value}` : undefined;
        this.watches.push(this.watch(namespace, selector, 'policy'));
      }
      if (data.enabled) this.watches.push(this.watch(namespace, `${data.label}=${data.value}`, 'data'));
    }
    this.log.info(
      {
        namespaces: namespaces.all ? ['*'] : namespaces.names,
        policies: policies.enabled
          ? policies.requireLabel
            ? `${policies.label}=${policies.value}`
            : 'every ConfigMap (seed-era --policies mode)'
          : 'disabled',
        data: data.enabled ? `${data.label}=${data.value}` : 'disabled',
      },
      'watching ConfigMaps',
    );
  }

  /** Resolves once every watch has listed its ConfigMaps. */
  get synced(): Promise<void> {
    return Promise.all(this.watches.map((w) => w.synced)).then(() => undefined);
  }

  isSynced(): boolean {
    return this.watches.every((w) => w.isSynced());
  }

  async stop(): Promise<void> {
    await Promise.all(this.watches.map((w) => w.stop()));
  }

  private watch(
    namespace: string | undefined,
    labelSelector: string | undefined,
    role: OriginRole,
  ): WatchedCollection {
    const core = this.options.kubeConfig.makeApiClient(CoreV1Api);
    const list =
      namespace === undefined
        ? () => core.listConfigMapForAllNamespaces(labelSelector === undefined ? {} : { labelSelector })
        : () =>
            core.listNamespacedConfigMap({
              namespace,
              ...(labelSelector === undefined ? {} : { labelSelector }),
            });
    const path =
      namespace === undefined ? '/api/v1/configmaps' : `/api/v1/namespaces/${namespace}/configmaps`;
    const upsert = (cm: V1ConfigMap): void => this.upsert(cm, role);
    return watchCollection<V1ConfigMap>({
      kubeConfig: this.options.kubeConfig,
      path,
      list,
      labelSelector,
      logger: this.log.child({ role, namespace: namespace ?? '*' }),
      handlers: { add: upsert, update: upsert, delete: (cm) => this.remove(cm, role) },
      ...(this.options.onWatchError === undefined ? {} : { onError: this.options.onWatchError }),
    });
  }

  private originOf(cm: V1ConfigMap, role: OriginRole): ConfigMapOrigin {
    return { kind: 'configmap', role, ...refOf(cm) };
  }

  private hasLabel(cm: V1ConfigMap, label: string, value: string): boolean {
    return cm.metadata?.labels?.[label] === value;
  }

  private upsert(cm: V1ConfigMap, role: OriginRole): void {
    const next = this.contentOf(cm, role);
    if (next === undefined) {
      // Seen by this watch but not ours in this role (e.g. a data ConfigMap in a seed-era policy namespace).
      this.remove(cm, role);
      return;
    }
    const key = originKey(next.origin);
    const print = fingerprint(cm);
    if (this.fingerprints.get(key) === print) return;
    this.fingerprints.set(key, print);
    this.log.debug({ origin: describeOrigin(next.origin), role }, 'ConfigMap changed');
    this.options.state.set(next);
  }

  private contentOf(cm: V1ConfigMap, role: OriginRole): OriginState | undefined {
    const { policies, data } = this.options;
    if (role === 'data') return dataState(cm);
    // A ConfigMap that carries the data label is data only, as in kube-mgmt.
    if (data.enabled && this.hasLabel(cm, data.label, data.value)) return undefined;
    const labelled = this.hasLabel(cm, policies.label, policies.value);
    if (!labelled && (policies.requireLabel || cm.metadata?.name === KUBE_ROOT_CA)) return undefined;
    const state = policyState(cm, { regoKeysOnly: !labelled });
    // Seed-era mode: an unlabelled ConfigMap without any .rego key is not a policy, and is left untouched.
    if (!labelled && state.modules.length === 0) return undefined;
    return state;
  }

  private remove(cm: V1ConfigMap, role: OriginRole): void {
    const origin = this.originOf(cm, role);
    if (this.fingerprints.delete(originKey(origin))) this.options.state.delete(origin);
  }
}
