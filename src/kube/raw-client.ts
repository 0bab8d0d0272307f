// A small JSON client for the Kubernetes API calls opa-sync makes itself: API discovery, lists of any
// group/version/resource (one page at a time), watches as streams of lines, and the merge patch of a
// ConfigMap's annotations. It authenticates exactly as client-node does (KubeConfig.applyToHTTPSOptions,
// a method of the object it is given: no run-time import of client-node here) and bounds every call
// with a timeout and the caller's signal. Unlike client-node 1.4, which makes a new agent (and so a new
// TLS connection) for every request, it keeps one keep-alive agent while the TLS settings stay the same.
import https from 'node:https';
import http from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { RetryableError, messageOf } from '../util/errors.js';
import { KubeApiError } from './errors.js';
import type { ConfigMapRef, GetJsonOptions, KubeReader, PatchOutcome, StatusPatcher } from './ports.js';

export { KubeApiError } from './errors.js';

interface RequestOptions {
  query?: Readonly<Record<string, string | undefined>> | undefined;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal | undefined;
}

export interface StreamOptions {
  query?: Readonly<Record<string, string | undefined>> | undefined;
  signal: AbortSignal;
  /** How long to wait for the answer, when shorter than the client's timeout. */
  timeoutMs?: number | undefined;
}

/** The request options that applyToHTTPSOptions sets and an agent must be made with. */
const TLS_FIELDS = ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername'] as const;

type Prepared = { url: URL; what: string; options: https.RequestOptions };

export class KubeRawClient implements KubeReader, StatusPatcher {
  private agent: { key: string; agent: http.Agent } | undefined;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly timeoutMs: number,
  ) {}

  getJson<T>(path: string, options: GetJsonOptions = {}): Promise<T> {
    return this.request<T>('GET', path, { query: options.query, signal: options.signal });
  }

  async patchAnnotations(
    ref: ConfigMapRef,
    annotations: Readonly<Record<string, string | null>>,
    signal?: AbortSignal,
  ): Promise<PatchOutcome> {
    const path = `/api/v1/namespaces/${encodeURIComponent(ref.namespace)}/configmaps/${encodeURIComponent(ref.name)}`;
    try {
      await this.request('PATCH', path, {
        body: { metadata: { annotations } },
        contentType: 'application/merge-patch+json',
        signal,
      });
      return 'patched';
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return 'not-found';
      throw err;
    }
  }

  /**
   * GETs `path` as a stream (a watch): resolves with the response once a 200 came, within the timeout;
   * rejects as `getJson` does otherwise. Afterwards only `options.signal` (or the server) ends it.
   */
  async stream(path: string, options: StreamOptions): Promise<http.IncomingMessage> {
    const prepared = await this.prepare('GET', path, options.query, undefined);
    options.signal.throwIfAborted();
    const { what } = prepared;
    return new Promise<http.IncomingMessage>((resolve, reject) => {
      const controller = new AbortController();
      const onAbort = (): void => controller.abort(options.signal.reason);
      options.signal.addEventListener('abort', onAbort, { once: true });
      let answered = false;
      const timeoutMs = Math.min(this.timeoutMs, options.timeoutMs ?? this.timeoutMs);
      const timer = setTimeout(() => controller.abort(), timeoutMs);
      const req = this.transport(prepared.url).request(
        prepared.url,
        { ...prepared.options, signal: controller.signal },
        (res) => {
          answered = true;
          clearTimeout(timer);
          res.once('close', () => options.signal.removeEventListener('abort', onAbort));
          if (res.statusCode === 200) {
            // A connection that died without a FIN (a node gone) is noticed by keep-alive probes.
            res.socket.setKeepAlive(true, 30_000);
            resolve(res);
            return;
          }
          readBody(res).then(
            (text) => reject(refusal(what, res.statusCode ?? 0, text)),
            (err: Error) => reject(this.failed(what, err, options.signal, false)),
          );
        },
      );
      req.on('error', (err) => {
        clearTimeout(timer);
        options.signal.removeEventListener('abort', onAbort);
        if (!answered) reject(this.failed(what, err, options.signal, controller.signal.aborted, timeoutMs));
      });
      req.end();
    });
  }

  /** 4xx answers (but 429) throw KubeApiError (with status); transport failures, timeouts, 429 and 5xx are retryable. */
  private async request<T>(method: string, path: string, options: RequestOptions): Promise<T> {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const prepared = await this.prepare(
      method,
      path,
      options.query,
      body && (options.contentType ?? 'application/json'),
    );
    options.signal?.throwIfAborted();
    const { what } = prepared;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    return new Promise<T>((resolve, reject) => {
      const req = this.transport(prepared.url).request(
        prepared.url,
        { ...prepared.options, signal },
        (res) => {
          readBody(res).then(
            (text) => {
              const status = res.statusCode ?? 0;
              if (status < 200 || status >= 300) {
                reject(refusal(what, status, text));
                return;
              }
              try {
                resolve(JSON.parse(text) as T);
              } catch (err) {
                reject(
                  new RetryableError('kube_bad_response', `${what}: the answer is not JSON`, { cause: err }),
                );
              }
            },
            (err: Error) => reject(this.failed(what, err, options.signal, timeout.aborted)),
          );
        },
      );
      req.on('error', (err) => reject(this.failed(what, err, options.signal, timeout.aborted)));
      req.end(body);
    });
  }

  /**
   * Destroys the kept-alive connections that no request uses now. A connection that stopped
   * forwarding without closing (a NAT or load balancer entry gone) looks idle and healthy in the pool;
   * once a watch found its own connection dead, the next requests must not pick such a one and wait for
   * their whole timeout.
   */
  dropIdleConnections(): void {
    const agent = this.agent?.agent;
    if (agent === undefined) return;
    for (const sockets of Object.values(agent.freeSockets))
      for (const socket of sockets ?? []) socket.destroy();
  }

  private transport(url: URL): typeof https | typeof http {
    return url.protocol === 'https:' ? https : http;
  }

  /** The caller's own abort is passed on as it is; our timeout and the rest are worth a retry. */
  private failed(
    what: string,
    err: Error,
    signal: AbortSignal | undefined,
    timedOut: boolean,
    timeoutMs = this.timeoutMs,
  ): Error {
    if (signal?.aborted === true) return err;
    if (timedOut) {
      return new RetryableError('kube_timeout', `${what}: no answer within ${timeoutMs} ms`, {
        cause: err,
      });
    }
    if (err instanceof RetryableError) return err;
    return new RetryableError('kube_unreachable', `${what}: ${err.message}`, { cause: err });
  }

  private async prepare(
    method: string,
    path: string,
    query: RequestOptions['query'],
    contentType: string | undefined,
  ): Promise<Prepared> {
    const what = `${method} ${path}`;
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new KubeApiError('kube_no_cluster', 'the kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (contentType !== undefined) headers['content-type'] = contentType;
    const options: https.RequestOptions = { method, headers };
    try {
      // Token files, exec plugins and certificates are read here: their failures are worth a retry.
      await this.kubeConfig.applyToHTTPSOptions(options);
    } catch (err) {
      throw new RetryableError('kube_auth', `${what}: could not prepare the credentials: ${messageOf(err)}`, {
        cause: err,
      });
    }
    // client-node made a new agent for this request; a proxy agent is kept, a plain one is replaced by
    // ours, made once for these TLS settings, which keeps its connections open between requests.
    if (cluster.proxyUrl === undefined || cluster.proxyUrl === '')
      options.agent = this.agentFor(url, options);
    return { url, what, options };
  }

  private agentFor(url: URL, options: https.RequestOptions): http.Agent {
    const key = [url.protocol, ...TLS_FIELDS.map((f) => settingText(options[f]))].join('\0');
    if (this.agent?.key !== key) {
      const settings: https.AgentOptions = { keepAlive: true };
      for (const f of TLS_FIELDS) if (options[f] !== undefined) Object.assign(settings, { [f]: options[f] });
      this.agent = {
        key,
        agent: url.protocol === 'https:' ? new https.Agent(settings) : new http.Agent({ keepAlive: true }),
      };
    }
    return this.agent.agent;
  }
}

/** A TLS setting (a string, Buffer, an array of them, a boolean) as text, to tell settings apart. */
function settingText(value: unknown): string {
  if (Array.isArray(value)) return value.map(settingText).join('\n');
  if (Buffer.isBuffer(value)) return value.toString('latin1');
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? '');
}

function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', reject);
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function refusal(what: string, status: number, text: string): Error {
  let message = text.slice(0, 300);
  try {
    message = (JSON.parse(text) as { message?: string }).message ?? message;
  } catch {
    // not a Status object: keep the text
  }
  const line = `${what}: ${status} ${message}`;
  return status >= 500 || status === 429
    ? new RetryableError('kube_server_error', line, { status })
    : new KubeApiError('kube_http_error', line, { status });
}
