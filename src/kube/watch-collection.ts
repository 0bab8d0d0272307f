// The CollectionWatcher over an informer of client-node's Informer shape (given as a factory, so this
// module never loads client-node and its logic is tested against a fake informer; in production it is
// list-watch.ts). Such an informer stops for good on any error other than 410 (client-node 1.4's also
// fires its error callbacks for its own aborts, and lets a throwing handler vanish into its watch-line
// parser's catch); this wrapper restarts it with backoff, ignores aborts after stop, closes a watch
// opened after stop, and turns a throwing handler into a rejection of watch(). It also tells the
// handlers when a watch has heard nothing from the API server for longer than `staleAfterMs` (a
// connection frozen, the API server down) and is not back yet (`stale`), and when it is (`fresh`).
import type { Informer, KubernetesObject } from '@kubernetes/client-node';
import { Wake } from '../lifecycle/wake.js';
import { Backoff, sleep, type BackoffOptions } from '../util/backoff.js';
import { isAbortError } from '../util/errors.js';
import { DEFAULT_IDLE_TIMEOUT_MS, WatchSilentError } from './list-watch.js';
import type { CollectionWatcher, WatchHandlers, WatchTarget } from './ports.js';

/** An informer, and (StreamingListWatch) when it last heard from the API server. */
export type WatchInformer<T extends KubernetesObject> = Informer<T> & {
  lastHeardAt?(): number | undefined;
};

/**
 * Makes the informer for one target (StreamingListWatch in production). `signal` aborts when the watch
 * stops: the informer's list requests should end with it.
 */
export type InformerFactory = <T extends KubernetesObject>(
  target: WatchTarget,
  signal: AbortSignal,
) => WatchInformer<T>;

export interface RestartingWatcherOptions {
  informer: InformerFactory;
  /** Delays between restarts; one Backoff per watch() call, reset once a list and watch succeed. */
  backoff?: BackoffOptions;
  /**
   * How long stopping waits for a start still in flight (client-node's start() cannot be cancelled
   * while it waits for the watch's response headers) before leaving it to be closed when it ends.
   */
  stopGraceMs?: number;
  /**
   * A watch that has heard nothing from the API server for this long, and is not listed and watching
   * again, is reported `stale` (the informer's idle timeout, --kube-watch-idle-timeout).
   */
  staleAfterMs?: number;
}

const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

/** Resolves true when `promise` settles within `ms`, false otherwise; the timer does not outlive it. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export class RestartingWatcher implements CollectionWatcher {
  constructor(private readonly options: RestartingWatcherOptions) {}

  async watch<T extends KubernetesObject>(
    target: WatchTarget,
    handlers: WatchHandlers<T>,
    signal: AbortSignal,
  ): Promise<void> {
    if (signal.aborted) return;
    const backoff = new Backoff(this.options.backoff ?? DEFAULT_BACKOFF);
    // Ends this call's list requests, sleeps and waits: on the caller's abort or a handler's throw.
    const local = new AbortController();
    const wake = new Wake();
    let stopping = false;
    let fatal: { error: unknown } | undefined;
    let attemptError: { error: unknown } | undefined;

    const guard = (fn: () => void): void => {
      if (stopping || fatal !== undefined) return;
      try {
        fn();
      } catch (error) {
        fatal = { error };
        local.abort();
      }
    };
    const onAdd = (obj: T): void => guard(() => handlers.add(obj));
    const onUpdate = (obj: T): void => guard(() => handlers.update(obj));
    const onDelete = (obj: T): void => guard(() => handlers.delete(obj));
    // The informer reports list and watch failures here, and stops; its own aborts come here too.
    const onError = (err: unknown): void => {
      if (stopping || local.signal.aborted || isAbortError(err)) return;
      attemptError ??= { error: err };
      wake.wake();
    };
    const onAbort = (): void => local.abort();

    const informer = this.options.informer<T>(target, local.signal);
    // Staleness: since when nothing was heard (set at a failure, cleared once started again).
    const staleAfterMs = this.options.staleAfterMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    let silentSince: number | undefined;
    let staleTimer: NodeJS.Timeout | undefined;
    let reportedStale = false;
    const wentSilent = (failure: unknown): void => {
      if (silentSince !== undefined) return;
      const since =
        failure instanceof WatchSilentError ? failure.silentSince : (informer.lastHeardAt?.() ?? Date.now());
      silentSince = since;
      staleTimer = setTimeout(
        () => {
          reportedStale = true;
          guard(() => handlers.stale?.(new Date(since), failure));
        },
        Math.max(0, since + staleAfterMs - Date.now()),
      );
    };
    const heardAgain = (): void => {
      clearTimeout(staleTimer);
      silentSince = undefined;
      if (!reportedStale) return;
      reportedStale = false;
      guard(() => handlers.fresh?.());
    };
    informer.on('add', onAdd);
    informer.on('update', onUpdate);
    informer.on('delete', onDelete);
    informer.on('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
    let inFlight: Promise<void> | undefined;
    try {
      let listed = false;
      while (!local.signal.aborted) {
        attemptError = undefined;
        let started = false;
        // start() resolves once the list is applied and the watch's headers came; it reports failures
        // through the error callbacks, but can also reject (e.g. no current cluster).
        const starting = informer
          .start()
          .catch((err: unknown) => {
            attemptError ??= { error: err };
          })
          .finally(() => {
            started = true;
            wake.wake();
          });
        while (!started && !local.signal.aborted) await wake.wait(local.signal);
        if (!started) {
          inFlight = starting;
          break;
        }
        if (local.signal.aborted) break;
        if (attemptError === undefined) {
          backoff.reset();
          heardAgain();
          if (!listed) {
            listed = true;
            guard(() => handlers.listed());
          }
          while (attemptError === undefined && !local.signal.aborted) await wake.wait(local.signal);
          if (local.signal.aborted) break;
        }
        const failure: unknown = (attemptError as { error: unknown } | undefined)?.error;
        wentSilent(failure);
        const delay = backoff.next();
        guard(() => handlers.retrying?.(failure, delay));
        await sleep(delay, local.signal).catch(() => undefined);
      }
    } finally {
      clearTimeout(staleTimer);
      stopping = true;
      signal.removeEventListener('abort', onAbort);
      local.abort();
      await informer.stop();
      if (inFlight !== undefined) {
        // stop() during a start: the informer may open its watch after it was told to stop.
        const settled = await settlesWithin(inFlight, this.options.stopGraceMs ?? 10_000);
        if (settled) await informer.stop();
        else void inFlight.then(() => informer.stop());
      }
      informer.off('add', onAdd);
      informer.off('update', onUpdate);
      informer.off('delete', onDelete);
      informer.off('error', onError);
    }
    if (fatal !== undefined) throw fatal.error;
  }
}
