// The one lifecycle contract of opa-sync: every long-running part (source, sink, server) is a Part.
// The supervisor (supervisor.ts) runs the parts, shows their state in /health and /ready, and applies
// each part's failure rule; app.ts only lists the parts in start order.

/** What the supervisor does when a part's run() throws. */
export type FailureRule =
  /** Logged, counted, shown in /health, and run() is called again after a backoff. */
  | 'restart'
  /** Logged, counted, then every other part is stopped and the process exits non-zero. */
  | 'exit';

/**
 * A long-running part.
 *
 * @example
 * const part: Part = {
 *   name: 'ticker',
 *   onFailure: 'restart',
 *   ready: () => true,
 *   async run(signal) {
 *     while (!signal.aborted) await sleep(1000, signal).catch(() => undefined);
 *   },
 * };
 */
export interface Part {
  /** Names the part in logs, metrics (`part` label), /health and /ready. */
  readonly name: string;
  readonly onFailure: FailureRule;
  /**
   * Runs until `signal` aborts, then resolves once everything the part started has stopped (timers,
   * watches, sockets). Whatever it adds to the signal it removes before it returns. It throws only when
   * it cannot go on; after a 'restart' it is called again on the same object, which keeps its state.
   */
  run(signal: AbortSignal): Promise<void>;
  /** True once the part has done its initial work (listed, loaded, listening) and can serve. */
  ready(): boolean;
  /** While not ready, why (one line each), for /ready's `reasons`; e.g. a watch that went stale. */
  notReady?(): string[];
  /**
   * True for a part whose readiness is shown in /ready's checks without deciding /ready's answer: one
   * whose failure must not take the servers out of service (publishing to an OCI registry).
   */
  readonly advisory?: boolean;
}
