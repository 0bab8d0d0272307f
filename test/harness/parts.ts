// Runs one Part (src/lifecycle/part.ts) in a test the way the supervisor would: under its own signal,
// stopped by the test, with a failure of run() kept for the test to see.
import type { Part } from '../../src/lifecycle/part.js';
import { StopWaiting, waitFor } from './wait.js';

export interface RunningPart {
  /** run()'s promise; rejected when the part failed. */
  readonly done: Promise<void>;
  /** Aborts the part's signal and waits for run() to end (rethrowing its failure). */
  stop(): Promise<void>;
  /** Waits until ready(), failing at once if run() ended first. */
  waitReady(timeoutMs?: number): Promise<void>;
}

export function runPart(part: Part): RunningPart {
  const controller = new AbortController();
  let ended: { error: unknown } | undefined;
  const done = part.run(controller.signal);
  done.then(
    () => {
      ended = { error: undefined };
    },
    (error: unknown) => {
      ended = { error };
    },
  );
  return {
    done,
    async stop() {
      controller.abort();
      await done;
    },
    async waitReady(timeoutMs = 10_000) {
      await waitFor(
        `${part.name} to be ready`,
        () => {
          if (ended !== undefined) throw new StopWaiting(`${part.name} ended: ${String(ended.error)}`);
          return part.ready() ? true : undefined;
        },
        { timeoutMs },
      );
    },
  };
}
