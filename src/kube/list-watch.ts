// A list-then-watch informer of one collection, in place of client-node's ListWatch and Watch (whose
// module pulls in every generated API model, and whose watch goes through node-fetch and readline):
// - the list is paginated (`limit`/`continue`), each page handed out as it comes, so no whole-collection
//   body is ever held;
// - the watch is one streamed request whose lines are parsed as they arrive;
// - per object it keeps the last one delivered, to tell an update from an add and, after a relist, to
//   report what is gone (the same object the handlers got: no copy).
// Its behaviour is client-node 1.4's, which RestartingWatcher (watch-collection.ts) wraps: start()
// resolves once the list is delivered and the watch answered; any failure reaches the 'error' callbacks
// and the informer stops; 410 Gone relists; a watch the server ends (timeoutSeconds) is opened again from
// the last resourceVersion. Unlike client-node it reports nothing for its own aborts.
// A watch that hears nothing for the idle timeout (no event, no bookmark, no end) is taken for dead, as
// a connection a NAT or load balancer forgot stays open without a word: its socket is destroyed, the
// agent's idle sockets with it (they went through the same path), and the error (WatchSilentError)
// says since when nothing came. The API server's bookmarks come only when the collection's
// resourceVersion moved (none at all on a quiet collection), so what keeps a healthy watch heard is
// the server-side deadline: each watch asks for one of at most half the idle timeout, and the
// server's clean end of it counts as heard.
import type { IncomingMessage } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import type { Informer, KubernetesObject } from '@kubernetes/client-node';
import { RetryableError } from '../util/errors.js';
import { KubeApiError } from './errors.js';
import type { WatchTarget } from './ports.js';

/** The two calls the informer makes; KubeRawClient's getJson and stream in production. */
export interface ListWatchApi {
  getJson<T>(
    path: string,
    options: { query?: Readonly<Record<string, string | undefined>>; signal?: AbortSignal },
  ): Promise<T>;
  stream(
    path: string,
    options: {
      query?: Readonly<Record<string, string | undefined>>;
      signal: AbortSignal;
      timeoutMs?: number;
    },
  ): Promise<IncomingMessage>;
  /** Closes the kept-alive connections no request uses now (after a watch was found dead). */
  dropIdleConnections?(): void;
}

export interface ListWatchOptions {
  /** Objects per list page (`limit`). */
  pageSize?: number;
  /**
   * Server-side bound on one watch request (`timeoutSeconds`); it is then opened again. At most half
   * the idle timeout is asked for, whatever this says.
   */
  watchTimeoutSeconds?: number;
  /**
   * A watch that hears nothing (no event, no bookmark, no end) for this long is taken for dead; so is
   * one whose answer does not come within it.
   */
  idleTimeoutMs?: number;
}

/** A watch that heard nothing for the idle timeout: taken for dead (a frozen connection). */
export class WatchSilentError extends RetryableError {
  constructor(
    message: string,
    /** When the watch last heard from the API server (ms since the epoch). */
    readonly silentSince: number,
  ) {
    super('kube_timeout', message);
  }
}

type Verb = 'add' | 'update' | 'delete' | 'change' | 'connect' | 'error';
type ObjectCallback<T> = (obj: T) => void;
type ErrorCallback = (err?: unknown) => void;

/** A list page as the API server sends it (client-node's model names `continue` `_continue`). */
interface ListPage<T> {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[];
}

interface WatchEvent<T> {
  type?: string;
  object?: T & { code?: number };
}

const DEFAULT_PAGE_SIZE = 500;
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const DEFAULT_WATCH_TIMEOUT_SECONDS = 300;

/** The server-side deadline a watch asks for: at most half the idle timeout, at least one second. */
export function watchDeadlineSeconds(watchTimeoutSeconds: number, idleTimeoutMs: number): number {
  return Math.max(1, Math.min(watchTimeoutSeconds, Math.floor(idleTimeoutMs / 2000)));
}
/** 410 Gone answers in a row (a list's continue token expired, a watch's version too old) before failing. */
const MAX_GONE = 3;

function keyOf(obj: KubernetesObject): string {
  const namespace = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? '';
  return namespace ? `${namespace}/${name}` : name;
}

function isGone(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 410;
}

export class StreamingListWatch<T extends KubernetesObject> implements Informer<T> {
  private readonly callbacks: Record<'add' | 'update' | 'delete' | 'connect' | 'error', unknown[]> = {
    add: [],
    update: [],
    delete: [],
    connect: [],
    error: [],
  };
  private readonly objects = new Map<string, T>();
  private resourceVersion = '';
  private stopped = true;
  /** Aborts the list or watch of the current connection. */
  private current: AbortController | undefined;
  private readonly pageSize: number;
  private readonly watchTimeoutSeconds: number;
  private readonly idleTimeoutMs: number;
  /** When the API server was last heard from: a list page, a watch's answer, a line or its end. */
  private heardAt: number | undefined;

  constructor(
    private readonly api: ListWatchApi,
    private readonly target: WatchTarget,
    options: ListWatchOptions = {},
  ) {
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.watchTimeoutSeconds = watchDeadlineSeconds(
      options.watchTimeoutSeconds ?? DEFAULT_WATCH_TIMEOUT_SECONDS,
      this.idleTimeoutMs,
    );
  }

  /** When the API server was last heard from by this informer (ms since the epoch), if ever. */
  lastHeardAt(): number | undefined {
    return this.heardAt;
  }

  private heard(): void {
    this.heardAt = Date.now();
  }

  on(verb: Verb, cb: ObjectCallback<T> | ErrorCallback): void {
    if (verb === 'change') {
      for (const v of ['add', 'update', 'delete'] as const) this.callbacks[v].push(cb);
      return;
    }
    this.callbacks[verb].push(cb);
  }

  off(verb: Verb, cb: ObjectCallback<T> | ErrorCallback): void {
    for (const v of verb === 'change' ? (['add', 'update', 'delete'] as const) : [verb]) {
      const list = this.callbacks[v];
      const i = list.indexOf(cb);
      if (i >= 0) list.splice(i, 1);
    }
  }

  /** Lists (unless a watch can go on from the last resourceVersion) and opens the watch. */
  async start(): Promise<void> {
    this.current?.abort();
    this.stopped = false;
    await this.connect();
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort();
    this.current = undefined;
    return Promise.resolve();
  }

  private fire(verb: 'add' | 'update' | 'delete', obj: T): void {
    for (const cb of this.callbacks[verb].slice()) (cb as ObjectCallback<T>)(obj);
  }

  private fail(err: unknown, controller: AbortController): void {
    if (this.stopped || controller.signal.aborted) return;
    controller.abort();
    for (const cb of this.callbacks.error.slice()) (cb as ErrorCallback)(err);
  }

  /** `gone`: how many 410 answers in a row led here. */
  private async connect(gone = 0): Promise<void> {
    const controller = new AbortController();
    this.current = controller;
    for (const cb of this.callbacks.connect.slice()) (cb as ErrorCallback)(undefined);
    try {
      if (this.resourceVersion === '') await this.list(controller.signal);
      if (controller.signal.aborted) return;
      const res = await this.api.stream(this.target.path, {
        query: {
          watch: 'true',
          resourceVersion: this.resourceVersion,
          allowWatchBookmarks: 'true',
          timeoutSeconds: String(this.watchTimeoutSeconds),
          labelSelector: this.target.labelSelector,
          fieldSelector: this.target.fieldSelector,
        },
        signal: controller.signal,
        timeoutMs: this.idleTimeoutMs,
      });
      this.heard();
      this.consume(res, controller);
    } catch (err) {
      if (isGone(err) && !controller.signal.aborted && gone < MAX_GONE) {
        // The resourceVersion is too old to watch from, or a list's continue token expired mid-way:
        // list everything again, from the first page (a fresh snapshot).
        this.resourceVersion = '';
        if (this.current === controller) await this.connect(gone + 1);
        return;
      }
      this.fail(err, controller);
    }
  }

  /**
   * Lists page by page, delivering each object as it comes; then reports what the list did not show.
   * The next page is asked for before this one is handed out, so the API server works on it meanwhile.
   */
  private async list(signal: AbortSignal): Promise<void> {
    const page = (next: string | undefined): Promise<ListPage<T>> => {
      const p = this.api.getJson<ListPage<T>>(this.target.path, {
        query: {
          labelSelector: this.target.labelSelector,
          fieldSelector: this.target.fieldSelector,
          limit: String(this.pageSize),
          continue: next,
        },
        signal,
      });
      // A page asked for ahead may fail while this one is handed out; it is awaited (and its error
      // seen) next, unless this list ended first.
      p.catch(() => undefined);
      return p;
    };
    const seen = new Set<string>();
    let coming = page(undefined);
    let first = true;
    let version = '';
    for (;;) {
      const current = await coming;
      if (signal.aborted) return;
      this.heard();
      // Every page is of the first page's snapshot; its resourceVersion is the one to watch from.
      if (first) version = current.metadata?.resourceVersion ?? '';
      first = false;
      const next = current.metadata?.continue || undefined;
      if (next !== undefined) coming = page(next);
      for (const obj of current.items ?? []) {
        seen.add(keyOf(obj));
        this.addOrUpdate(obj);
      }
      if (next === undefined) break;
    }
    for (const [key, obj] of this.objects) {
      if (seen.has(key)) continue;
      this.objects.delete(key);
      this.fire('delete', obj);
    }
    this.resourceVersion = version;
  }

  private addOrUpdate(obj: T): void {
    const key = keyOf(obj);
    const known = this.objects.get(key);
    if (known === undefined) {
      this.objects.set(key, obj);
      this.fire('add', obj);
      return;
    }
    const version = obj.metadata?.resourceVersion;
    if (version !== undefined && version === known.metadata?.resourceVersion) return;
    this.objects.set(key, obj);
    this.fire('update', obj);
  }

  /** Reads the watch's lines as they come; when the server ends it, opens it again. */
  private consume(res: IncomingMessage, controller: AbortController): void {
    const decoder = new StringDecoder('utf8');
    let rest = '';
    const idle = setTimeout(() => {
      const since = this.heardAt ?? Date.now() - this.idleTimeoutMs;
      res.destroy(
        new WatchSilentError(
          `watch ${this.target.path}: nothing received for ${this.idleTimeoutMs} ms (the connection is taken for dead)`,
          since,
        ),
      );
      // The kept-alive connections went the same way as this one: new requests get new connections.
      this.api.dropIdleConnections?.();
    }, this.idleTimeoutMs);
    const onAbort = (): void => {
      res.destroy();
    };
    controller.signal.addEventListener('abort', onAbort, { once: true });
    res.on('data', (chunk: Buffer) => {
      this.heard();
      idle.refresh();
      const text = rest + decoder.write(chunk);
      let start = 0;
      try {
        for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n', start)) {
          const line = text.slice(start, end);
          start = end + 1;
          if (line.trim() === '') continue;
          if (!this.event(line, res, controller)) return;
        }
      } catch (err) {
        // A handler threw: the watch ends with its error (never an uncaught exception of the stream).
        this.fail(err, controller);
        res.destroy();
        return;
      }
      rest = text.slice(start);
    });
    res.on('error', (err) => this.fail(err, controller));
    res.once('close', () => {
      clearTimeout(idle);
      controller.signal.removeEventListener('abort', onAbort);
      if (controller.signal.aborted || this.stopped || this.current !== controller) return;
      if (!res.complete) {
        this.fail(
          new RetryableError('kube_unreachable', `watch ${this.target.path}: the connection closed`),
          controller,
        );
        return;
      }
      // The server ended the watch (timeoutSeconds, or after an ERROR event): go on from where it was.
      this.heard();
      void this.connect();
    });
  }

  /** Handles one line of the watch; false when the watch was ended because of it. */
  private event(line: string, res: IncomingMessage, controller: AbortController): boolean {
    let event: WatchEvent<T>;
    try {
      event = JSON.parse(line) as WatchEvent<T>;
    } catch (err) {
      this.fail(
        new RetryableError('kube_bad_response', `watch ${this.target.path}: a line is not JSON`, {
          cause: err,
        }),
        controller,
      );
      res.destroy();
      return false;
    }
    const obj = event.object;
    if (obj === undefined) return true;
    switch (event.type) {
      case 'ADDED':
      case 'MODIFIED':
        this.addOrUpdate(obj);
        break;
      case 'DELETED': {
        const key = keyOf(obj);
        if (this.objects.delete(key)) this.fire('delete', obj);
        break;
      }
      case 'ERROR':
        // 410: the server ends the watch next; the close then lists again.
        if (obj.code === 410) this.resourceVersion = '';
        return true;
      default:
        break; // BOOKMARK: only its resourceVersion matters
    }
    this.resourceVersion = obj.metadata?.resourceVersion ?? this.resourceVersion;
    return !controller.signal.aborted;
  }
}
