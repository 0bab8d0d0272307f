// "Still waiting for X": the reminder a person needs while something opa-sync depends on (OPA) does not
// answer. The first failure is the caller's own warning; after it, silence would look like a hang, so
// every `everyMs` one line says what is still tried, how often and for how long, and one line says when
// it answers again.
import { messageOf } from './errors.js';
import type { Logger } from './logger.js';

export interface StillWaitingOptions {
  /** How often the reminder is logged while attempts keep failing (default 30 s). */
  everyMs?: number | undefined;
  /** The clock, for tests. */
  now?: () => number;
}

/**
 * @example
 * const waiting = new StillWaiting(log, 'OPA', { url });
 * try { await push(); waiting.reached(); } catch (err) { waiting.failed(err); }
 * // every 30 s while failing: WARN still waiting for OPA url=… attempts=7 waitingS=30 err=…
 * // once it answers:          INFO OPA is reachable url=… attempts=8
 */
export class StillWaiting {
  private readonly everyMs: number;
  private readonly now: () => number;
  /** Since when and how often attempts failed; undefined while there is nothing to wait for. */
  private waiting: { since: number; attempts: number; reportedAt: number } | undefined;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
    private readonly fields: Readonly<Record<string, unknown>>,
    { everyMs = 30_000, now = Date.now }: StillWaitingOptions = {},
  ) {
    this.everyMs = everyMs;
    this.now = now;
  }

  /** One more failed attempt. */
  failed(err: unknown): void {
    const now = this.now();
    const waiting = (this.waiting ??= { since: now, attempts: 0, reportedAt: now });
    waiting.attempts += 1;
    if (now - waiting.reportedAt < this.everyMs) return;
    waiting.reportedAt = now;
    this.log.warn(
      {
        ...this.fields,
        attempts: waiting.attempts,
        waitingS: Math.round((now - waiting.since) / 1000),
        err: messageOf(err),
      },
      `still waiting for ${this.what}`,
    );
  }

  /** An attempt succeeded: said once if attempts had failed before. */
  reached(): void {
    if (this.waiting === undefined) return;
    const { since, attempts } = this.waiting;
    this.waiting = undefined;
    this.log.info(
      { ...this.fields, attempts: attempts + 1, waitedS: Math.round((this.now() - since) / 1000) },
      `${this.what} is reachable`,
    );
  }
}
