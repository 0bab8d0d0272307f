// Keeps one Kubernetes collection (list + watch) flowing into add/update/delete handlers for as long as
// the caller's signal allows. client-node 1.4's informer stops for good on any error other than 410 and
// fires its error callbacks even for its own aborts; this wrapper restarts it with backoff, ignores
// aborts after stop, and asks the API server for bookmarks and a bounded watch duration.
import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { Backoff, type BackoffOptions } from '../util/backoff.js';
import { isAbortError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export interface CollectionHandlers<T> {
  add(obj: T): void;
  update(obj: T): void;
  delete(obj: T): void;
}

export interface WatchCollectionOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  /** The collection's URL path, e.g. /api/v1/namespaces/opa/configmaps. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
  handlers: CollectionHandlers<T>;
  logger: Logger;
  backoff?: BackoffOptions;
  /** Server-side bound on one watch request; the watch then reconnects from the last resourceVersion. */
  watchTimeoutSeconds?: number;
  /** Called whenever a (re)start fails, for metrics. */
  onError?: (err: unknown) => void;
}

export interface WatchedCollection {
  /** Resolves after the first successful list and watch. */
  readonly synced: Promise<void>;
  isSynced(): boolean;
  stop(): Promise<void>;
}

/** A Watch that adds bookmarks and a server-side timeout to every watch request. */
class BoundedWatch extends Watch {
  constructor(
    config: KubeConfig,
    private readonly timeoutSeconds: number,
  ) {
    super(config);
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.timeoutSeconds },
      callback,
      done,
    );
  }
}

const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 30_000, factor: 2, jitter: 0.2 };

export function watchCollection<T extends KubernetesObject>(
  options: WatchCollectionOptions<T>,
): WatchedCollection {
  const log = options.logger.child({ path: options.path, labelSelector: options.labelSelector });
  const backoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
  const listWatch = new ListWatch<T>(
    options.path,
    new BoundedWatch(options.kubeConfig, options.watchTimeoutSeconds ?? 300),
    options.list,
    false,
    options.labelSelector,
    options.fieldSelector,
  );
  listWatch.on('add', (obj) => options.handlers.add(obj));
  listWatch.on('update', (obj) => options.handlers.update(obj));
  listWatch.on('delete', (obj) => options.handlers.delete(obj));

  let stopped = false;
  let synced = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let resolveSynced: () => void = () => undefined;
  const syncedPromise = new Promise<void>((resolve) => {
    resolveSynced = resolve;
  });

  const scheduleRestart = (err: unknown): void => {
    if (stopped || restartTimer !== undefined) return;
    options.onError?.(err);
    const delay = backoff.next();
    log.warn(
      { err: messageOf(err), retryInMs: delay, attempt: backoff.attempts },
      'watch failed, restarting',
    );
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      void start();
    }, delay);
  };

  // The informer reports list and watch failures through its error callbacks, and stops.
  listWatch.on('error', (err: unknown) => {
    if (stopped || isAbortError(err)) return;
    scheduleRestart(err);
  });

  async function start(): Promise<void> {
    if (stopped) return;
    let failed = false;
    const noteFailure = (): void => {
      failed = true;
    };
    listWatch.on('error', noteFailure);
    try {
      await listWatch.start();
    } catch (err) {
      failed = true;
      if (!stopped) scheduleRestart(err);
    } finally {
      listWatch.off('error', noteFailure);
    }
    // stop() during a start: the informer may have opened its watch after it was told to stop.
    if (stopped) {
      await listWatch.stop();
      return;
    }
    if (failed) return;
    backoff.reset();
    if (!synced) {
      synced = true;
      log.debug('initial list and watch done');
      resolveSynced();
    }
  }

  void start();

  return {
    synced: syncedPromise,
    isSynced: () => synced,
    async stop() {
      stopped = true;
      if (restartTimer !== undefined) clearTimeout(restartTimer);
      restartTimer = undefined;
      await listWatch.stop();
    },
  };
}
