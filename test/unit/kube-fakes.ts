// Fakes of opa-sync's own Kubernetes seams (src/kube/ports.ts), for the unit tests of the sources and
// the status writer: a watcher whose sessions the test drives, a patcher that records and can fail,
// a reader that serves discovery documents by path. No fake API server: these are our interfaces.
import type { KubernetesObject } from '@kubernetes/client-node';
import type {
  CollectionWatcher,
  ConfigMapRef,
  GetJsonOptions,
  KubeReader,
  PatchOutcome,
  StatusPatcher,
  WatchHandlers,
  WatchTarget,
} from '../../src/kube/ports.js';
import { KubeApiError } from '../../src/kube/errors.js';
import { waitFor } from '../harness/wait.js';

/** Waits for a condition in short steps (never a fixed sleep). */
export function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  return waitFor(
    what,
    () => {
      const v = probe();
      return v === false ? undefined : v;
    },
    { timeoutMs, intervalMs: 2 },
  );
}

/** One watch() call, driven by the test as the API server would drive the real watcher. */
export class WatchSession<T extends KubernetesObject = KubernetesObject> {
  ended = false;
  private reject: (err: unknown) => void = () => undefined;
  readonly done: Promise<void>;

  constructor(
    readonly target: WatchTarget,
    private readonly handlers: WatchHandlers<T>,
    readonly signal: AbortSignal,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.reject = reject;
      const end = (): void => {
        this.ended = true;
        resolve();
      };
      if (signal.aborted) end();
      else signal.addEventListener('abort', end, { once: true });
    }).finally(() => {
      this.ended = true;
    });
  }

  add(obj: T): this {
    return this.deliver(() => this.handlers.add(obj));
  }

  update(obj: T): this {
    return this.deliver(() => this.handlers.update(obj));
  }

  delete(obj: T): this {
    return this.deliver(() => this.handlers.delete(obj));
  }

  listed(): this {
    return this.deliver(() => this.handlers.listed());
  }

  /** The initial list: add for each object, then listed. */
  list(objects: readonly T[]): this {
    for (const obj of objects) this.add(obj);
    return this.listed();
  }

  retrying(err: unknown, ms: number): this {
    return this.deliver(() => this.handlers.retrying?.(err, ms));
  }

  /** Like the real watcher: a handler that throws ends the watch with that error. */
  private deliver(fn: () => void): this {
    if (this.ended) throw new Error(`session ${this.target.path} has ended`);
    try {
      fn();
    } catch (err) {
      this.ended = true;
      this.reject(err);
    }
    return this;
  }
}

export class FakeWatcher implements CollectionWatcher {
  readonly sessions: WatchSession[] = [];

  watch<T extends KubernetesObject>(
    target: WatchTarget,
    handlers: WatchHandlers<T>,
    signal: AbortSignal,
  ): Promise<void> {
    const session = new WatchSession<T>(target, handlers, signal);
    this.sessions.push(session);
    return session.done;
  }

  /** The running sessions (not ended). */
  live(): WatchSession[] {
    return this.sessions.filter((s) => !s.ended);
  }

  /** Waits for a running session of this path (and label selector, when given). */
  session(path: string, labelSelector?: string): Promise<WatchSession> {
    return until(`a watch of ${path} ${labelSelector ?? ''}`, () =>
      this.live().find(
        (s) =>
          s.target.path === path && (labelSelector === undefined || s.target.labelSelector === labelSelector),
      ),
    );
  }
}

export interface PatchCall {
  ref: ConfigMapRef;
  annotations: Readonly<Record<string, string | null>>;
}

/** Records every patch; `next` decides the answer to the next calls (default: patched). */
export class FakePatcher implements StatusPatcher {
  readonly calls: PatchCall[] = [];
  readonly answers: (() => Promise<PatchOutcome>)[] = [];

  patchAnnotations(
    ref: ConfigMapRef,
    annotations: Readonly<Record<string, string | null>>,
  ): Promise<PatchOutcome> {
    this.calls.push({ ref, annotations });
    const answer = this.answers.shift();
    return answer === undefined ? Promise.resolve('patched') : answer();
  }
}

/** Serves JSON documents by path; a path without one answers 404 as the API server does. */
export class FakeReader implements KubeReader {
  readonly docs = new Map<string, unknown>();
  readonly calls: { path: string; options: GetJsonOptions | undefined }[] = [];
  /** Thrown instead of answering, once per entry. */
  readonly failures: Error[] = [];

  getJson<T>(path: string, options?: GetJsonOptions): Promise<T> {
    this.calls.push({ path, options });
    const failure = this.failures.shift();
    if (failure !== undefined) return Promise.reject(failure);
    if (!this.docs.has(path)) {
      return Promise.reject(
        new KubeApiError('kube_http_error', `GET ${path}: 404 not found`, { status: 404 }),
      );
    }
    return Promise.resolve(structuredClone(this.docs.get(path)) as T);
  }
}
