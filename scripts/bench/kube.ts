// A lean client of the test API server for the load generators: HTTP/2 (one TLS connection, many
// concurrent streams), bearer token, JSON in and out, and watch streams read line by line. Only
// 127.0.0.1: the benchmark sends no traffic anywhere else.
import http2 from 'node:http2';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

export interface KubeResponse {
  status: number;
  body: string;
  /** performance.now() when the whole answer had arrived. */
  at: number;
}

export interface WatchEvent {
  type: string;
  object: Record<string, unknown> & {
    metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> };
  };
}

export class KubeHttp {
  private session: http2.ClientHttp2Session | undefined;

  constructor(
    readonly server: string,
    private readonly ca: string,
    private readonly token: string,
  ) {
    if (!/^https:\/\/127\.0\.0\.1:\d+$/.test(server)) throw new Error(`not a loopback API server: ${server}`);
  }

  private connection(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      const session = http2.connect(this.server, { ca: this.ca });
      session.on('error', () => {
        // A broken session fails its streams; the next request opens a new one.
        if (this.session === session) this.session = undefined;
      });
      session.unref();
      this.session = session;
    }
    return this.session;
  }

  /** One request; resolves with any status (callers check it), rejects on transport errors. */
  request(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<KubeResponse> {
    return new Promise((resolve, reject) => {
      const headers: http2.OutgoingHttpHeaders = {
        ':method': method,
        ':path': path,
        authorization: `Bearer ${this.token}`,
        accept: 'application/json',
      };
      const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      if (payload !== undefined) headers['content-type'] = contentType;
      const stream = this.connection().request(headers, { endStream: payload === undefined });
      stream.setTimeout(120_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
      let status = 0;
      const chunks: Buffer[] = [];
      stream.on('response', (h) => (status = Number(h[':status'])));
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', reject);
      stream.on('close', () => {
        if (status === 0) reject(new Error(`${method} ${path}: no answer`));
        else resolve({ status, body: Buffer.concat(chunks).toString('utf8'), at: performance.now() });
      });
      if (payload !== undefined) stream.end(payload);
    });
  }

  /** A request that must answer 2xx; returns the parsed body. */
  async json<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    contentType?: string,
  ): Promise<T> {
    const res = await this.request(method, path, body, contentType);
    if (res.status < 200 || res.status >= 300) {
      throw new Error(`${method} ${path}: HTTP ${res.status}: ${res.body.slice(0, 500)}`);
    }
    return JSON.parse(res.body) as T;
  }

  /**
   * A watch stream (`path` must carry `watch=true`): each event with performance.now() of its arrival.
   * Resolves `ready` once the server answered the request. `stop()` closes the stream.
   */
  watch(
    path: string,
    onEvent: (event: WatchEvent, at: number) => void,
    onClose?: () => void,
  ): { ready: Promise<void>; stop: () => void } {
    const stream = this.connection().request({
      ':method': 'GET',
      ':path': path,
      authorization: `Bearer ${this.token}`,
      accept: 'application/json',
    });
    let buffered = '';
    const ready = new Promise<void>((resolve, reject) => {
      stream.on('response', (h) => {
        const status = Number(h[':status']);
        if (status === 200) resolve();
        else reject(new Error(`watch ${path}: HTTP ${status}`));
      });
      stream.on('error', reject);
    });
    ready.catch(() => undefined);
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const at = performance.now();
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim() !== '') onEvent(JSON.parse(line) as WatchEvent, at);
      }
    });
    let stopped = false;
    stream.on('error', () => undefined);
    stream.on('close', () => {
      if (!stopped) onClose?.();
    });
    return {
      ready,
      stop: () => {
        stopped = true;
        stream.close(http2.constants.NGHTTP2_CANCEL);
      },
    };
  }

  /**
   * Lists `collectionPath` (a query may follow) and watches it from there, listing and watching again
   * whenever the stream ends before `stop()`: every object's state reaches `onObject`, with the time
   * it arrived. `restarts()` says how often the watch had to be started again.
   */
  async watchObjects(
    collectionPath: string,
    onObject: (object: WatchEvent['object'], at: number, type: string) => void,
  ): Promise<{ stop: () => void; restarts: () => number }> {
    let stopped = false;
    let restarts = 0;
    let current: { stop: () => void } | undefined;
    const sep = collectionPath.includes('?') ? '&' : '?';
    const start = async (): Promise<void> => {
      const list = await this.json<{ metadata: { resourceVersion: string }; items: WatchEvent['object'][] }>(
        'GET',
        collectionPath,
      );
      const at = performance.now();
      for (const item of list.items) onObject(item, at, 'LISTED');
      if (stopped) return;
      const w = this.watch(
        `${collectionPath}${sep}watch=true&allowWatchBookmarks=true&resourceVersion=${list.metadata.resourceVersion}`,
        (ev, evAt) => {
          if (ev.type === 'ADDED' || ev.type === 'MODIFIED' || ev.type === 'DELETED')
            onObject(ev.object, evAt, ev.type);
        },
        () => {
          if (stopped) return;
          restarts++;
          void start().catch(() => undefined);
        },
      );
      current = w;
      await w.ready;
    };
    await start();
    return {
      stop: () => {
        stopped = true;
        current?.stop();
      },
      restarts: () => restarts,
    };
  }

  /**
   * One request over a new HTTP/1.1 TLS connection, timed from the call to the last byte — what a
   * client that starts cold (opa-sync, kubectl) pays for a LIST.
   */
  coldGet(path: string): Promise<KubeResponse & { bytes: number }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        `${this.server}${path}`,
        {
          ca: this.ca,
          agent: false,
          headers: { authorization: `Bearer ${this.token}`, accept: 'application/json' },
          signal: AbortSignal.timeout(300_000),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const buf = Buffer.concat(chunks);
            resolve({
              status: res.statusCode ?? 0,
              body: buf.toString('utf8'),
              bytes: buf.length,
              at: performance.now(),
            });
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  /** Creates a namespace (an existing one is fine). */
  async ensureNamespace(name: string): Promise<void> {
    const res = await this.request('POST', '/api/v1/namespaces', { metadata: { name } });
    if (res.status !== 201 && res.status !== 409)
      throw new Error(`create namespace ${name}: HTTP ${res.status}: ${res.body}`);
  }

  close(): void {
    this.session?.close();
    this.session = undefined;
  }
}

/** Runs `task(i)` for i in [0, count) with at most `limit` running at once; rejects on the first failure. */
export async function pool(count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < count) {
      const i = next++;
      try {
        await task(i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failed !== undefined)
    throw failed instanceof Error ? failed : new Error('a pooled task failed', { cause: failed });
}
