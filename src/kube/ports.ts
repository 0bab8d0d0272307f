// The narrow seams between opa-sync's logic and the Kubernetes API (kube-mgmt's opa.Policies / opa.Data
// style): watch one collection, patch a ConfigMap's annotations, read a JSON document. Sources and the
// status writer take these interfaces, so they are tested with fakes of them; the one implementation
// with @kubernetes/client-node is client-node-adapter.ts, loaded only when a Kubernetes source is
// configured. Type-only imports of client-node are fine here: they vanish at run time.
import type { KubernetesObject } from '@kubernetes/client-node';

/** One collection of the API server to list and watch. */
export interface WatchTarget {
  /** The collection's URL path: `/api/v1/namespaces/opa/configmaps`, `/apis/networking.k8s.io/v1/networkpolicies`. */
  path: string;
  labelSelector?: string | undefined;
  fieldSelector?: string | undefined;
}

/**
 * What a watch delivers. Handlers run synchronously; one that throws ends the watch and makes
 * `watch()` reject with that error (it is a bug to be seen, not an event to be retried).
 */
export interface WatchHandlers<T> {
  /** An object seen for the first time by this watch (from a list or a watch event). */
  add(obj: T): void;
  /** An object seen before, with a new resourceVersion. */
  update(obj: T): void;
  /** An object gone: a watch event, or missing from a relist (after 410 Gone) of this same watch. */
  delete(obj: T): void;
  /**
   * Once per `watch()` call: every object of the first list has been delivered to `add` and the watch
   * is open. A new `watch()` call knows nothing of earlier ones: deletions that happened in between are
   * the caller's to find (what it holds and this list did not deliver).
   */
  listed(): void;
  /** A list or watch request failed; the watcher tries again after `retryInMs`. For logs and metrics. */
  retrying?(err: unknown, retryInMs: number): void;
  /**
   * The watch has heard nothing from the API server since `since`, for longer than the idle timeout
   * (a frozen connection, the API server down), and is not listed and watching again yet: what was
   * delivered may be out of date. `err` is the failure that ended it. Once per such time.
   */
  stale?(since: Date, err: unknown): void;
  /** After `stale`: the watch is listed and watching again, its objects up to date. */
  fresh?(): void;
}

export interface CollectionWatcher {
  /**
   * Lists and watches `target` until `signal` aborts, restarting with backoff after any failure, and
   * resolves once the watch is closed and nothing of it is left running. Rejects only when a handler
   * threw, with that error.
   *
   * @example
   * await watcher.watch<V1ConfigMap>(
   *   { path: '/api/v1/namespaces/opa/configmaps', labelSelector: 'openpolicyagent.org/policy=rego' },
   *   { add: upsert, update: upsert, delete: remove, listed: () => markListed() },
   *   signal,
   * );
   */
  watch<T extends KubernetesObject>(
    target: WatchTarget,
    handlers: WatchHandlers<T>,
    signal: AbortSignal,
  ): Promise<void>;
}

export interface ConfigMapRef {
  namespace: string;
  name: string;
}

/** A patch either landed or found no ConfigMap to land on (deleted meanwhile: nothing to annotate). */
export type PatchOutcome = 'patched' | 'not-found';

export interface StatusPatcher {
  /**
   * JSON-merge-patches `metadata.annotations` of the ConfigMap (a null value removes that key), with
   * no resourceVersion precondition, so it never conflicts. Bounded by the adapter's timeout and by
   * `signal`. Rejects with RetryableError (transport, timeout, 5xx, 429), KubeApiError (other 4xx, with
   * its status), or the signal's AbortError; never with anything else.
   */
  patchAnnotations(
    ref: ConfigMapRef,
    annotations: Readonly<Record<string, string | null>>,
    signal?: AbortSignal,
  ): Promise<PatchOutcome>;
}

export interface GetJsonOptions {
  /** Query parameters; undefined values are left out. */
  query?: Readonly<Record<string, string | undefined>>;
  signal?: AbortSignal | undefined;
}

/** Reads of the API that the generated clients do not cover well: discovery, lists of any resource. */
export interface KubeReader {
  /**
   * GETs a JSON document, bounded by the adapter's timeout and by `options.signal`. Rejects with
   * KubeApiError for a 4xx other than 429 (status 404: the path is not served), RetryableError for
   * transport failures, timeouts, 5xx and 429, or the signal's AbortError.
   *
   * @example
   * const v1 = await api.getJson<{ resources: { name: string }[] }>('/api/v1');
   */
  getJson<T>(path: string, options?: GetJsonOptions): Promise<T>;
}

/** Everything the Kubernetes side of opa-sync needs from the API server. */
export interface KubeAdapters {
  watcher: CollectionWatcher;
  patcher: StatusPatcher;
  api: KubeReader;
}
