// Writes each origin's outcome into the status annotation(s) of its ConfigMap with a JSON merge patch
// (no resourceVersion precondition, so it never conflicts). Writes are queued per ConfigMap and render
// the latest outcome when they are made, so a newer outcome replaces an older one not yet written; a
// failed write is retried with backoff, in memory. It is a Part: what is queued survives a restart.
import type { LoadError, Outcome } from '../model/outcome.js';
import { describeOrigin, originKey, type ConfigMapOrigin } from '../model/origin.js';
import type { Metrics } from '../http/metrics.js';
import type { Part } from '../lifecycle/part.js';
import { Wake } from '../lifecycle/wake.js';
import { Backoff, sleep } from '../util/backoff.js';
import { OpaSyncError, isAbortError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { StatusPatcher } from './ports.js';
import { renderStatus } from './status-annotation.js';

export interface StatusWriterOptions {
  patcher: StatusPatcher;
  /** The annotation keys to write (each gets the same value). */
  annotations: readonly string[];
  logger: Logger;
  metrics?: Metrics | undefined;
  /** Delays between retries of failed writes; by default 0.5 s doubling up to 30 s. */
  backoff?: Backoff;
}

interface Latest {
  origin: ConfigMapOrigin;
  /** Each sink's latest errors for the origin (empty: loaded). */
  bySink: Map<string, readonly LoadError[]>;
}

export class StatusWriter implements Part {
  readonly name = 'status';
  readonly onFailure = 'restart';
  /** Origins whose annotation is to be written, in the order they were reported. */
  private readonly pending = new Set<string>();
  private readonly latest = new Map<string, Latest>();
  private readonly backoff: Backoff;
  private readonly wake = new Wake();

  constructor(private readonly options: StatusWriterOptions) {
    this.backoff = options.backoff ?? new Backoff({ minMs: 500, maxMs: 30_000 });
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
    this.pending.add(key);
    this.wake.wake();
  }

  /**
   * Writes until `signal` aborts. Rejects when the patcher fails in a way its contract does not allow
   * (not one of our errors: a bug), with that write still queued for the next run.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const [key] = this.pending;
      if (key === undefined) {
        await this.wake.wait(signal);
        continue;
      }
      this.pending.delete(key);
      const latest = this.latest.get(key);
      if (latest === undefined) continue;
      try {
        const value = this.render(latest);
        await this.write(key, latest.origin, value, signal);
        this.backoff.reset();
      } catch (err) {
        // Kept for the next attempt, unless a newer report queued it again meanwhile.
        this.pending.add(key);
        if (signal.aborted && isAbortError(err)) return;
        if (!(err instanceof OpaSyncError)) throw err;
        const delay = this.backoff.next();
        this.options.logger.warn(
          { origin: describeOrigin(latest.origin), err: messageOf(err), retryInMs: delay },
          'could not write the status annotation',
        );
        await sleep(delay, signal).catch(() => undefined);
      }
    }
  }

  private render({ bySink }: Latest): string {
    const errors = [...bySink.keys()].sort().flatMap((sink) => bySink.get(sink) ?? []);
    return renderStatus(errors);
  }

  private async write(
    key: string,
    origin: ConfigMapOrigin,
    value: string,
    signal: AbortSignal,
  ): Promise<void> {
    const annotations = Object.fromEntries(this.options.annotations.map((k) => [k, value]));
    let result;
    try {
      result = await this.options.patcher.patchAnnotations(
        { namespace: origin.namespace, name: origin.name },
        annotations,
        signal,
      );
    } catch (err) {
      this.options.metrics?.statusWrites.inc({ result: 'error' });
      throw err;
    }
    if (result === 'not-found') {
      // The ConfigMap is gone: nothing to annotate, and nothing to remember for it (unless an outcome
      // came meanwhile: the ConfigMap may have been created again).
      if (!this.pending.has(key)) this.latest.delete(key);
      this.options.logger.debug({ origin: describeOrigin(origin) }, 'ConfigMap gone: status not written');
      return;
    }
    this.options.metrics?.statusWrites.inc({ result: 'ok' });
    this.options.logger.debug({ origin: describeOrigin(origin), status: value }, 'status written');
  }
}
