// Runs every part of opa-sync under one signal, in the order given, and stops them in reverse order
// (sources before sinks before servers, as app.ts lists them the other way round). A part whose run()
// throws is never silent: the error is logged with the part's name, counted
// (opa_sync_part_failures_total{part}), shown in /health and /ready, and then the part's rule applies —
// 'restart' runs it again after a backoff (reset after a long healthy run), 'exit' stops everything
// and makes run() reject. A configuration error always exits, whatever the part's rule: it cannot heal.
import type { Metrics } from '../http/metrics.js';
import { Backoff, sleep, type BackoffOptions } from '../util/backoff.js';
import { ConfigError, isAbortError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import type { Part } from './part.js';
import { untilAborted } from './wake.js';

export type PartPhase = 'running' | 'restarting' | 'failed' | 'stopped';

/** What /health shows of one part. */
export interface PartHealth {
  phase: PartPhase;
  /** Times it was restarted after a failure. */
  restarts: number;
  lastError?: string;
  /** ISO time of the last failure. */
  lastFailureAt?: string;
}

export interface SupervisorOptions {
  logger: Logger;
  metrics?: Metrics | undefined;
  /** Delay before a failed part runs again. Default 1 s doubling to 30 s. */
  backoff?: BackoffOptions;
  /** A part that stops later than this after being asked is left behind, with an error in the log. */
  stopTimeoutMs?: number;
}

const DEFAULT_BACKOFF: BackoffOptions = { minMs: 1000, maxMs: 30_000, factor: 2, jitter: 0.2 };
const DEFAULT_STOP_TIMEOUT_MS = 10_000;

/** A part that run()s this long before failing counts as healthy again: its backoff starts over. */
const HEALTHY_RUN_MS = 60_000;

interface Running {
  part: Part;
  controller: AbortController;
  health: PartHealth;
  done: Promise<void>;
}

export class Supervisor {
  private readonly running: Running[] = [];
  private failure: Error | undefined;
  private readonly failed = new AbortController();

  constructor(
    private readonly parts: readonly Part[],
    private readonly options: SupervisorOptions,
  ) {
    const names = new Set<string>();
    for (const part of parts) {
      if (names.has(part.name)) throw new Error(`two parts are named ${part.name}`);
      names.add(part.name);
    }
  }

  /**
   * Runs every part until `signal` aborts or a part fails for good, then stops them all in reverse
   * order. Resolves after a requested stop; rejects with the failure that stopped everything.
   */
  async run(signal: AbortSignal): Promise<void> {
    for (const part of this.parts) {
      const controller = new AbortController();
      const health: PartHealth = { phase: 'running', restarts: 0 };
      const entry: Running = { part, controller, health, done: Promise.resolve() };
      entry.done = this.keepRunning(entry);
      this.running.push(entry);
    }
    const both = AbortSignal.any([signal, this.failed.signal]);
    await untilAborted(both);
    for (const entry of [...this.running].reverse()) await this.stop(entry);
    if (this.failure !== undefined) throw this.failure;
  }

  /** /health: healthy while every part runs; the parts' phases, restarts and last errors either way. */
  health(): { healthy: boolean; parts: Record<string, PartHealth> } {
    const parts = Object.fromEntries(this.running.map((r) => [r.part.name, { ...r.health }]));
    const healthy = this.running.every((r) => r.health.phase === 'running' || r.health.phase === 'stopped');
    return { healthy, parts };
  }

  /**
   * /ready: each part's own readiness, false for a part that is not running. An advisory part's check
   * is shown but does not make the whole unready. `reasons`, when a part not ready says why.
   */
  readiness(): { ready: boolean; checks: Record<string, boolean>; reasons?: Record<string, string[]> } {
    const entries = this.running.map(
      (r) => [r.part, r.health.phase === 'running' && r.part.ready()] as const,
    );
    const checks = Object.fromEntries(entries.map(([part, ok]) => [part.name, ok]));
    const ready = entries.every(([part, ok]) => ok || part.advisory === true);
    const said = entries.flatMap(([part, ok]) => {
      const why = ok ? [] : (part.notReady?.() ?? []);
      return why.length === 0 ? [] : [[part.name, why] as const];
    });
    return said.length === 0 ? { ready, checks } : { ready, checks, reasons: Object.fromEntries(said) };
  }

  private async keepRunning(entry: Running): Promise<void> {
    const { part, controller, health } = entry;
    const { logger, metrics } = this.options;
    const backoff = new Backoff(this.options.backoff ?? DEFAULT_BACKOFF);
    const log = logger.child({ part: part.name });
    for (;;) {
      health.phase = 'running';
      metrics?.partUp.set({ part: part.name }, 1);
      const started = Date.now();
      let err: unknown;
      try {
        await part.run(controller.signal);
        if (controller.signal.aborted) break;
        err = new Error(`${part.name} stopped although nobody asked it to`);
      } catch (thrown) {
        if (controller.signal.aborted && isAbortError(thrown)) break;
        err = thrown;
      }
      if (controller.signal.aborted) {
        log.error({ err: messageOf(err) }, 'part failed while stopping');
        break;
      }
      metrics?.partUp.set({ part: part.name }, 0);
      metrics?.partFailures.inc({ part: part.name });
      health.lastError = messageOf(err);
      health.lastFailureAt = new Date().toISOString();
      const fatal = part.onFailure === 'exit' || err instanceof ConfigError;
      if (fatal) {
        health.phase = 'failed';
        log.error({ err: messageOf(err) }, 'part failed; stopping opa-sync');
        this.failure ??= err instanceof Error ? err : new Error(messageOf(err));
        this.failed.abort();
        return;
      }
      if (Date.now() - started >= HEALTHY_RUN_MS) backoff.reset();
      const delay = backoff.next();
      health.phase = 'restarting';
      health.restarts += 1;
      log.error(
        { err: messageOf(err), retryInMs: delay, restarts: health.restarts },
        'part failed; restarting it',
      );
      try {
        await sleep(delay, controller.signal);
      } catch {
        break;
      }
    }
    health.phase = 'stopped';
    metrics?.partUp.set({ part: part.name }, 0);
  }

  private async stop(entry: Running): Promise<void> {
    entry.controller.abort();
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.options.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    });
    const result = await Promise.race([entry.done.then(() => 'stopped' as const), late]);
    clearTimeout(timer);
    if (result === 'late') {
      this.options.logger.error(
        { part: entry.part.name, timeoutMs },
        'part did not stop in time; leaving it',
      );
    }
  }
}
