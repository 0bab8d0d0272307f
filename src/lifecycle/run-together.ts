// Runs a part's watches as one: all under the part's signal, and the first that throws stops the rest,
// so that a part's run() rejects only once nothing it started is still running.
import { untilAborted } from './wake.js';
import { isAbortError } from '../util/errors.js';

export type Task = (signal: AbortSignal) => Promise<void>;

/**
 * Runs every task until `signal` aborts. When one rejects, the others are aborted, and once all have
 * settled the first error is thrown. Resolves only after `signal` aborted, even when every task ends
 * early (e.g. there was nothing to watch).
 *
 * @example
 * await runTogether(signal, namespaces.map((ns) => (s) => watcher.watch(targetOf(ns), handlers, s)));
 */
export async function runTogether(signal: AbortSignal, tasks: readonly Task[]): Promise<void> {
  const local = new AbortController();
  const onAbort = (): void => local.abort();
  if (signal.aborted) local.abort();
  else signal.addEventListener('abort', onAbort, { once: true });
  let failure: { error: unknown } | undefined;
  try {
    await Promise.all(
      tasks.map(async (task) => {
        try {
          await task(local.signal);
        } catch (error) {
          // A task cut short by the stop itself has not failed.
          if (signal.aborted && isAbortError(error)) return;
          failure ??= { error };
          local.abort();
        }
      }),
    );
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
  if (failure !== undefined) throw failure.error;
  await untilAborted(signal);
}
