// Writes each ConfigMap's status into its annotation(s) with a JSON merge patch (no resourceVersion
// precondition, so it never conflicts): one PATCH per outcome that changes what the ConfigMap holds,
// none when its annotation already holds that value. It knows what each ConfigMap holds from what it
// wrote and from what the ConfigMap source saw (`observe`): so a ConfigMap created again, or whose
// annotation someone else changed, still gets its status, and a restarted opa-sync does not write the
// annotations its predecessor left as they are. A ConfigMap that stops being a policy or data ConfigMap
// (label removed) has the annotation removed. Writes are queued per ConfigMap and render the latest
// outcome when they are made; a failed write is retried with backoff, in memory. It is a Part: what is
// queued survives a restart.
import type { DesiredState } from '../model/desired-state.js';
import type { LoadError, Outcome } from '../model/outcome.js';
import { originKey, type ConfigMapOrigin, type OriginRole } from '../model/origin.js';
import type { Metrics } from '../http/metrics.js';
import type { Part } from '../lifecycle/part.js';
import { Wake } from '../lifecycle/wake.js';
import { Backoff, sleep } from '../util/backoff.js';
import { OpaSyncError, isAbortError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { ConfigMapRef, StatusPatcher } from './ports.js';
import { KUBE_MGMT_RETRIES, KUBE_MGMT_STATUS, renderStatus } from './status-annotation.js';

export interface StatusWriterOptions {
  patcher: StatusPatcher;
  /** The annotation keys to write (each gets the same value). */
  annotations: readonly string[];
  logger: Logger;
  metrics?: Metrics | undefined;
  /** Delays between retries of failed writes; by default 0.5 s doubling up to 30 s. */
  backoff?: Backoff;
  /**
   * The desired state, to tell which ConfigMaps are still policies or data: the annotation of one that
   * is no longer either is removed. Without it every ConfigMap reported on is taken as still wanted.
   */
  state?: DesiredState | undefined;
  /**
   * The least time between two writes of one ConfigMap made only because its annotation was seen
   * changed by someone else (another replica with another outcome would otherwise fight us at the API
   * server's speed). By default one minute; writes for a new outcome are never held back.
   */
  restoreIntervalMs?: number;
}

interface Latest {
  origin: ConfigMapOrigin;
  /** Each sink's latest errors for the origin (empty: loaded). */
  bySink: Map<string, readonly LoadError[]>;
}

/** Annotation values to write; null removes the key. */
type Values = Record<string, string | null>;

interface Known {
  ref: ConfigMapRef;
  /** Our annotation keys as the ConfigMap holds them (absent: not set); undefined while not known. */
  holds: Record<string, string> | undefined;
}

const ROLES: readonly OriginRole[] = ['policy', 'data'];
const DEFAULT_RESTORE_INTERVAL_MS = 60_000;

function cmKey(ref: ConfigMapRef): string {
  return `${ref.namespace}/${ref.name}`;
}

export class StatusWriter implements Part {
  readonly name = 'status';
  readonly onFailure = 'restart';
  /** ConfigMaps whose annotation is to be looked at, by `<ns>/<name>`, in the order they came. */
  private readonly pending = new Set<string>();
  /** The latest outcome of each origin, by origin key. */
  private readonly latest = new Map<string, Latest>();
  /** Every ConfigMap this writer has an outcome for or has seen with one of its annotations. */
  private readonly known = new Map<string, Known>();
  /** Origin key → ConfigMap key, for the origins of the known ConfigMaps. */
  private readonly cmOf = new Map<string, string>();
  private readonly restoredAt = new Map<string, number>();
  private readonly restoreTimers = new Map<string, NodeJS.Timeout>();
  private readonly backoff: Backoff;
  private readonly wake = new Wake();
  /** The annotation keys written: the status keys, and kube-mgmt's retries beside its status key. */
  private readonly keys: readonly string[];

  constructor(private readonly options: StatusWriterOptions) {
    this.backoff = options.backoff ?? new Backoff({ minMs: 500, maxMs: 30_000 });
    const companion =
      options.annotations.includes(KUBE_MGMT_STATUS) && !options.annotations.includes(KUBE_MGMT_RETRIES);
    this.keys = companion ? [...options.annotations, KUBE_MGMT_RETRIES] : [...options.annotations];
  }

  /** Nothing to list first: ready from the start. */
  ready(): boolean {
    return true;
  }

  /**
   * Records one sink's outcome for an origin. With several sinks (OPA push and bundle publishing) the
   * annotation shows the errors of all of them, so neither hides the other's.
   */
  report(outcome: Outcome, sink = 'opa'): void {
    // Only ConfigMaps carry a status; a folder file's outcome is in the log.
    if (outcome.origin.kind !== 'configmap') return;
    const key = originKey(outcome.origin);
    const latest = this.latest.get(key) ?? { origin: outcome.origin, bySink: new Map() };
    latest.bySink.set(sink, outcome.errors);
    this.latest.set(key, latest);
    this.enqueue(this.know(outcome.origin).ref);
  }

  /**
   * What the ConfigMap source saw of a ConfigMap: its annotations, `undefined` when it is gone, or
   * `null` when it may be gone or may still exist with annotations not known (a label-selected watch
   * reports a ConfigMap that lost its label as deleted, as it was before): its status is then written
   * (or removed) again, and a 404 forgets it.
   * Call it before changing the desired state for the same event. A ConfigMap whose annotation differs
   * from its latest outcome (created again, or changed by someone else) is written again.
   */
  observe(ref: ConfigMapRef, annotations: Readonly<Record<string, string>> | null | undefined): void {
    const key = cmKey(ref);
    if (annotations === undefined) {
      this.forget(key, ref);
      return;
    }
    if (annotations === null) {
      const known = this.known.get(key);
      if (known === undefined) return;
      known.holds = undefined;
      this.enqueue(known.ref);
      return;
    }
    const holds: Record<string, string> = {};
    for (const k of this.keys) {
      const value = annotations[k];
      if (value !== undefined) holds[k] = value;
    }
    // Nothing of ours on a ConfigMap we never reported on: nothing to remember.
    if (!this.known.has(key) && Object.keys(holds).length === 0) return;
    const known = this.know(ref);
    known.holds = holds;
    // Only once there is an outcome to stand by (at start-up the listed ConfigMaps come before theirs).
    if (!this.originsOf(ref).some((origin) => this.latest.has(originKey(origin)))) return;
    const target = this.target(known);
    if (target !== undefined && !this.holdsAlready(known, target)) this.restoreSoon(key, ref);
  }

  /**
   * Writes until `signal` aborts. Rejects when the patcher fails in a way its contract does not allow
   * (not one of our errors: a bug), with that write still queued for the next run.
   */
  async run(signal: AbortSignal): Promise<void> {
    // An origin gone from the desired state (label removed) has its annotation removed.
    const unsubscribe = this.options.state?.subscribe((change) => {
      if (change.kind !== 'origin') return;
      const cm = this.cmOf.get(change.key);
      const known = cm === undefined ? undefined : this.known.get(cm);
      if (known !== undefined && this.options.state?.get(change.key) === undefined) this.enqueue(known.ref);
    });
    // Whatever changed while this part was not running is looked at again (writes that change nothing
    // are skipped).
    for (const known of this.known.values()) this.pending.add(cmKey(known.ref));
    try {
      await this.loop(signal);
    } finally {
      unsubscribe?.();
    }
  }

  private async loop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const [key] = this.pending;
      if (key === undefined) {
        await this.wake.wait(signal);
        continue;
      }
      this.pending.delete(key);
      const known = this.known.get(key);
      if (known === undefined) continue;
      const target = this.target(known);
      if (target === undefined || this.holdsAlready(known, target)) continue;
      try {
        await this.write(key, known, target, signal);
        this.backoff.reset();
      } catch (err) {
        // Kept for the next attempt, unless a newer report queued it again meanwhile.
        this.pending.add(key);
        if (signal.aborted && isAbortError(err)) return;
        if (!(err instanceof OpaSyncError)) throw err;
        const delay = this.backoff.next();
        this.options.logger.warn(
          { configmap: key, err: messageOf(err), retryInMs: delay },
          'could not write the status annotation',
        );
        await sleep(delay, signal).catch(() => undefined);
      }
    }
  }

  private enqueue(ref: ConfigMapRef): void {
    this.pending.add(cmKey(ref));
    this.wake.wake();
  }

  /** The ConfigMap's record, created (with its origins' keys) when it is new. */
  private know(ref: ConfigMapRef): Known {
    const key = cmKey(ref);
    let known = this.known.get(key);
    if (known === undefined) {
      known = { ref: { namespace: ref.namespace, name: ref.name }, holds: undefined };
      this.known.set(key, known);
      for (const origin of this.originsOf(known.ref)) this.cmOf.set(originKey(origin), key);
    }
    return known;
  }

  private originsOf(ref: ConfigMapRef): ConfigMapOrigin[] {
    return ROLES.map((role) => ({ kind: 'configmap', role, namespace: ref.namespace, name: ref.name }));
  }

  /** Forgets everything about a ConfigMap that is gone: nothing to annotate any more. */
  private forget(key: string, ref: ConfigMapRef): void {
    this.known.delete(key);
    this.pending.delete(key);
    this.restoredAt.delete(key);
    clearTimeout(this.restoreTimers.get(key));
    this.restoreTimers.delete(key);
    for (const origin of this.originsOf(ref)) {
      this.latest.delete(originKey(origin));
      this.cmOf.delete(originKey(origin));
    }
  }

  /**
   * What the ConfigMap's annotations should hold: the merged outcome of its origins that are still
   * wanted, null for each key when none is (the annotation is removed), or undefined when there is
   * nothing to write yet (no outcome).
   */
  private target(known: Known): Values | undefined {
    const origins = this.originsOf(known.ref).map(originKey);
    const wanted = origins.filter((k) =>
      this.options.state === undefined ? this.latest.has(k) : this.options.state.get(k) !== undefined,
    );
    if (wanted.length === 0) {
      if (!origins.some((k) => this.latest.has(k)) && known.holds === undefined) return undefined;
      for (const k of origins) this.latest.delete(k);
      return Object.fromEntries(this.keys.map((k) => [k, null]));
    }
    const outcomes = wanted.map((k) => this.latest.get(k)).filter((l) => l !== undefined);
    if (outcomes.length === 0) return undefined;
    const errors = outcomes.flatMap(({ bySink }) =>
      [...bySink.keys()].sort().flatMap((sink) => bySink.get(sink) ?? []),
    );
    const status = renderStatus(errors);
    // kube-mgmt's retries count down its immediate re-loads and settle at "0", for ok and error alike;
    // opa-sync retries with backoff in memory, so it writes the settled value.
    return Object.fromEntries(this.keys.map((k) => [k, k === KUBE_MGMT_RETRIES ? '0' : status]));
  }

  /** Whether the ConfigMap is known to hold these values already (null: the key is absent). */
  private holdsAlready(known: Known, target: Values): boolean {
    const holds = known.holds;
    if (holds === undefined) return false;
    return Object.entries(target).every(([k, v]) => (holds[k] ?? null) === v);
  }

  /** A write caused only by what was seen on the ConfigMap: at once, then at most once per interval. */
  private restoreSoon(key: string, ref: ConfigMapRef): void {
    const interval = this.options.restoreIntervalMs ?? DEFAULT_RESTORE_INTERVAL_MS;
    const last = this.restoredAt.get(key);
    const now = Date.now();
    if (last === undefined || now - last >= interval) {
      this.restoredAt.set(key, now);
      this.enqueue(ref);
      return;
    }
    if (this.restoreTimers.has(key)) return;
    const timer = setTimeout(
      () => {
        this.restoreTimers.delete(key);
        this.restoredAt.set(key, Date.now());
        this.enqueue(ref);
      },
      last + interval - now,
    );
    timer.unref();
    this.restoreTimers.set(key, timer);
  }

  private async write(key: string, known: Known, target: Values, signal: AbortSignal): Promise<void> {
    let result;
    try {
      result = await this.options.patcher.patchAnnotations(known.ref, target, signal);
    } catch (err) {
      this.options.metrics?.statusWrites.inc({ result: 'error' });
      throw err;
    }
    if (result === 'not-found') {
      // The ConfigMap is gone: nothing to annotate, and nothing to remember for it (unless an outcome
      // came meanwhile: the ConfigMap may have been created again).
      if (!this.pending.has(key)) this.forget(key, known.ref);
      this.options.logger.debug({ configmap: key }, 'ConfigMap gone: status not written');
      return;
    }
    const holds: Record<string, string> = {};
    for (const [k, v] of Object.entries(target)) if (v !== null) holds[k] = v;
    known.holds = holds;
    this.options.metrics?.statusWrites.inc({ result: 'ok' });
    const removed = Object.values(target).every((v) => v === null);
    this.options.logger.debug(
      { configmap: key, ...(removed ? { removed: true } : { status: target[this.keys[0] ?? ''] }) },
      removed ? 'status annotation removed' : 'status written',
    );
  }
}
