// Writes each origin's outcome into the status annotation(s) of its ConfigMap with a JSON merge patch
// (no resourceVersion precondition, so it never conflicts). Writes are queued per ConfigMap: a newer
// outcome replaces an older one not yet written; a failed write is retried with backoff, in memory.
import { CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { LoadError, Outcome } from '../model/outcome.js';
import { describeOrigin, originKey, type ConfigMapOrigin } from '../model/origin.js';
import type { Metrics } from '../http/metrics.js';
import { Wake } from '../lifecycle/wake.js';
import { Backoff, sleep, type BackoffOptions } from '../util/backoff.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { renderStatus } from './status-annotation.js';

export interface StatusWriterOptions {
  kubeConfig: KubeConfig;
  /** The annotation keys to write (each gets the same value). */
  annotations: readonly string[];
  logger: Logger;
  timeoutMs: number;
  metrics?: Metrics | undefined;
  backoff?: BackoffOptions;
}

interface PendingWrite {
  origin: ConfigMapOrigin;
  value: string;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function statusCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

export class StatusWriter {
  private readonly pending = new Map<string, PendingWrite>();
  private readonly latest = new Map<string, Map<string, readonly LoadError[]>>();
  private readonly core: CoreV1Api;
  private readonly backoff: Backoff;
  private readonly wake = new Wake();

  constructor(private readonly options: StatusWriterOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.backoff = new Backoff(options.backoff ?? { minMs: 500, maxMs: 30_000 });
  }

  /**
   * Records one sink's outcome for an origin. With several sinks (OPA push and bundle publishing) the
   * annotation shows the errors of all of them, so neither hides the other's.
   */
  report(outcome: Outcome, sink = 'opa'): void {
    // Only ConfigMaps carry a status; a folder file's outcome is in the log.
    if (outcome.origin.kind !== 'configmap') return;
    const origin = outcome.origin;
    const key = originKey(origin);
    const bySink = this.latest.get(key) ?? new Map<string, readonly LoadError[]>();
    bySink.set(sink, outcome.errors);
    this.latest.set(key, bySink);
    const errors = [...bySink.keys()].sort().flatMap((s) => bySink.get(s) ?? []);
    this.pending.set(key, { origin, value: renderStatus(errors) });
    this.wake.wake();
  }

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const [entry] = this.pending;
      if (entry === undefined) {
        await this.wake.wait(signal);
        continue;
      }
      const [key, write] = entry;
      this.pending.delete(key);
      try {
        await this.write(write);
        this.backoff.reset();
      } catch (err) {
        if (statusCode(err) === 404) {
          this.latest.delete(key); // the ConfigMap is gone: nothing to annotate
          continue;
        }
        const delay = this.backoff.next();
        this.options.logger.warn(
          { origin: describeOrigin(write.origin), err: messageOf(err), retryInMs: delay },
          'could not write the status annotation',
        );
        // Retry unless a newer outcome arrived meanwhile.
        if (!this.pending.has(key)) this.pending.set(key, write);
        await sleep(delay, signal).catch(() => undefined);
      }
    }
  }

  private async write({ origin, value }: PendingWrite): Promise<void> {
    const annotations = Object.fromEntries(this.options.annotations.map((k) => [k, value]));
    try {
      await withTimeout(
        this.core.patchNamespacedConfigMap(
          { name: origin.name, namespace: origin.namespace, body: { metadata: { annotations } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        ),
        this.options.timeoutMs,
        `status patch of ${describeOrigin(origin)}`,
      );
      this.options.metrics?.statusWrites.inc({ result: 'ok' });
      this.options.logger.debug({ origin: describeOrigin(origin), status: value }, 'status written');
    } catch (err) {
      this.options.metrics?.statusWrites.inc({ result: 'error' });
      throw err;
    }
  }
}
