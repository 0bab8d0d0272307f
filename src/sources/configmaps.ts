// The ConfigMap source: watches policy and data ConfigMaps in the chosen namespaces (server-side label
// selectors, so unrelated ConfigMaps are never cached) and writes them into the desired state. An
// update reloads only when labels or data changed, so our own status annotation never causes a reload.
// It is a Part: after a restart, what it had put in the desired state and the new lists no longer show
// is removed.
import type { V1ConfigMap } from '@kubernetes/client-node';
import type { Metrics } from '../http/metrics.js';
import type { CollectionWatcher, WatchHandlers, WatchTarget } from '../kube/ports.js';
import { StaleWatches } from '../kube/stale-watches.js';
import { runTogether } from '../lifecycle/run-together.js';
import type { Part } from '../lifecycle/part.js';
import type { DesiredState, OriginState } from '../model/desired-state.js';
import { describeOrigin, originKey, type ConfigMapOrigin, type OriginRole } from '../model/origin.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { contentAs, fingerprint, refOf, type ConfigMapRef } from './configmap-content.js';

export interface ConfigMapSourceOptions {
  watcher: CollectionWatcher;
  /** The source registers itself here when constructed (before any sink starts) as 'configmaps'. */
  state: DesiredState;
  logger: Logger;
  namespaces: { all: boolean; names: readonly string[] };
  policies: { enabled: boolean; label: string; value: string; requireLabel: boolean };
  data: { enabled: boolean; label: string; value: string };
  metrics?: Metrics | undefined;
  /**
   * Told, on every event of a watched ConfigMap and before the desired state changes for it, what it
   * holds: its annotations, `undefined` when it is gone, or `null` when a label-selected watch lost it
   * (gone, or only relabelled: not known) (the status writer's `observe`).
   */
  onAnnotations?:
    ((ref: ConfigMapRef, annotations: Record<string, string> | null | undefined) => void) | undefined;
}

interface Known {
  origin: ConfigMapOrigin;
  print: string;
}

interface Target {
  watch: WatchTarget;
  role: OriginRole;
  namespace: string;
}

export class ConfigMapSource implements Part {
  readonly name = 'configmaps';
  readonly onFailure = 'restart';
  /** Every origin this source has put in the desired state, with the fingerprint it was loaded from. */
  private readonly known = new Map<string, Known>();
  private readonly log: Logger;
  private readonly announceListed: () => void;
  private listed = false;
  private readonly stale: StaleWatches;

  constructor(private readonly options: ConfigMapSourceOptions) {
    this.log = options.logger;
    this.announceListed = options.state.registerSource(this.name);
    this.stale = new StaleWatches(this.log);
  }

  /**
   * True once every watch has listed (and stays so across restarts: the state stays usable), while
   * no watch is stale (heard nothing from the API server past the idle timeout, not back yet).
   */
  ready(): boolean {
    return this.listed && this.stale.size === 0;
  }

  /** Why not ready: the stale watches, and since when. */
  notReady(): string[] {
    return [...(this.listed ? [] : ['the ConfigMaps are not listed yet']), ...this.stale.reasons()];
  }

  async run(signal: AbortSignal): Promise<void> {
    const { namespaces, policies, data } = this.options;
    const targets = this.targets();
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
    // What an earlier run loaded and this run's lists have not shown (yet): removed once all listed.
    const unseen = new Set(this.known.keys());
    let pending = targets.length;
    const oneListed = (): void => {
      pending -= 1;
      if (pending > 0) return;
      for (const key of unseen) {
        const known = this.known.get(key);
        if (known === undefined) continue;
        this.log.info({ origin: describeOrigin(known.origin) }, 'gone while not watched: removing it');
        this.known.delete(key);
        this.options.state.delete(known.origin);
      }
      unseen.clear();
      this.log.info({ origins: this.known.size }, 'ConfigMaps listed');
      this.listed = true;
      this.announceListed();
    };
    if (targets.length === 0) {
      pending = 1;
      oneListed();
    }
    await runTogether(
      signal,
      targets.map(
        (target) => (s) =>
          this.options.watcher.watch(target.watch, this.handlers(target, unseen, oneListed), s),
      ),
    );
  }

  private targets(): Target[] {
    const { namespaces, policies, data } = this.options;
    const all: (string | undefined)[] = namespaces.all ? [undefined] : [...namespaces.names];
    const targets: Target[] = [];
    for (const namespace of all) {
      const path =
        namespace === undefined
          ? '/api/v1/configmaps'
          : `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`;
      const ns = namespace ?? '*';
      if (policies.enabled) {
        const labelSelector = policies.requireLabel ? `${policies.label}=${policies.value}` : undefined;
        targets.push({ watch: { path, labelSelector }, role: 'policy', namespace: ns });
      }
      if (data.enabled) {
        targets.push({
          watch: { path, labelSelector: `${data.label}=${data.value}` },
          role: 'data',
          namespace: ns,
        });
      }
    }
    return targets;
  }

  private handlers(target: Target, unseen: Set<string>, listed: () => void): WatchHandlers<V1ConfigMap> {
    const { role } = target;
    const log = this.log.child({ role, namespace: target.namespace });
    const watchName = `${role} ConfigMaps of ${target.namespace === '*' ? 'all namespaces' : target.namespace}`;
    const upsert = (cm: V1ConfigMap): void => {
      unseen.delete(originKey(this.originOf(cm, role)));
      this.options.onAnnotations?.(refOf(cm), cm.metadata?.annotations ?? {});
      this.upsert(cm, role);
    };
    return {
      add: upsert,
      update: upsert,
      delete: (cm) => {
        unseen.delete(originKey(this.originOf(cm, role)));
        // A watch with a label selector also reports a ConfigMap whose label was removed (or swapped for
        // the other role's) as deleted, and the API server sends it as it was before the change, old
        // labels included: from the event alone a deleted ConfigMap and a relabelled one look the same.
        // So the status writer is told it may still exist, holding it does not know what (`null`; the
        // annotations of the event are old): it removes the status (or writes the other role's), and
        // forgets the ConfigMap when the API server answers that it is gone.
        const gone = target.watch.labelSelector === undefined;
        this.options.onAnnotations?.(refOf(cm), gone ? undefined : null);
        this.remove(cm, role);
      },
      listed: () => {
        log.debug('initial list and watch done');
        listed();
      },
      retrying: (err, retryInMs) => {
        this.options.metrics?.watchErrors.inc();
        log.warn({ err: messageOf(err), retryInMs }, 'ConfigMap watch failed, restarting');
      },
      stale: (since, err) => this.stale.mark(watchName, since, err),
      fresh: () => this.stale.clear(watchName),
    };
  }

  private originOf(cm: V1ConfigMap, role: OriginRole): ConfigMapOrigin {
    return { kind: 'configmap', role, ...refOf(cm) };
  }

  private upsert(cm: V1ConfigMap, role: OriginRole): void {
    const next = this.contentOf(cm, role);
    if (next === undefined) {
      // Seen by this watch but not ours in this role (e.g. a data ConfigMap in a seed-era policy namespace).
      this.remove(cm, role);
      return;
    }
    const origin = this.originOf(cm, role);
    const key = originKey(origin);
    const print = fingerprint(cm);
    if (this.known.get(key)?.print === print) return;
    this.known.set(key, { origin, print });
    this.log.debug({ origin: describeOrigin(origin), role }, 'ConfigMap changed');
    this.options.state.set(next);
  }

  private contentOf(cm: V1ConfigMap, role: OriginRole): OriginState | undefined {
    // The data watch selects by the data label: what it reports is data (contentAs checks it again).
    return contentAs(cm, role, this.options);
  }

  private remove(cm: V1ConfigMap, role: OriginRole): void {
    const origin = this.originOf(cm, role);
    const key = originKey(origin);
    if (this.known.delete(key)) this.options.state.delete(origin);
  }
}
