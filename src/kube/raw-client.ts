// A small JSON client for the Kubernetes API calls opa-sync makes itself: API discovery, lists of any
// group/version/resource, and the merge patch of a ConfigMap's annotations. It authenticates exactly as
// client-node does (KubeConfig.applyToHTTPSOptions, a method of the object it is given: no run-time
// import of client-node here) and bounds every call with a timeout and the caller's signal.
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

export class KubeRawClient implements KubeReader, StatusPatcher {
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

  /** 4xx answers (but 429) throw KubeApiError (with status); transport failures, timeouts, 429 and 5xx are retryable. */
  private async request<T>(method: string, path: string, options: RequestOptions): Promise<T> {
    const what = `${method} ${path}`;
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new KubeApiError('kube_no_cluster', 'the kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
    const requestOptions: https.RequestOptions = { method, headers };
    try {
      // Token files, exec plugins and certificates are read here: their failures are worth a retry.
      await this.kubeConfig.applyToHTTPSOptions(requestOptions);
    } catch (err) {
      throw new RetryableError('kube_auth', `${what}: could not prepare the credentials: ${messageOf(err)}`, {
        cause: err,
      });
    }
    options.signal?.throwIfAborted();
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    const transport = url.protocol === 'https:' ? https : http;
    const failed = (err: Error): Error => {
      // The caller's own abort is passed on as it is; our timeout and the rest are worth a retry.
      if (options.signal?.aborted === true) return err;
      if (timeout.aborted) {
        return new RetryableError('kube_timeout', `${what}: no answer within ${this.timeoutMs} ms`, {
          cause: err,
        });
      }
      return new RetryableError('kube_unreachable', `${what}: ${err.message}`, { cause: err });
    };
    return new Promise<T>((resolve, reject) => {
      const req = transport.request(url, { ...requestOptions, signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(failed(err)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            try {
              resolve(JSON.parse(text) as T);
            } catch (err) {
              reject(
                new RetryableError('kube_bad_response', `${what}: the answer is not JSON`, { cause: err }),
              );
            }
            return;
          }
          let message = text.slice(0, 300);
          try {
            message = (JSON.parse(text) as { message?: string }).message ?? message;
          } catch {
            // not a Status object: keep the text
          }
          const refusal = `${what}: ${status} ${message}`;
          reject(
            status >= 500 || status === 429
              ? new RetryableError('kube_server_error', refusal, { status })
              : new KubeApiError('kube_http_error', refusal, { status }),
          );
        });
      });
      req.on('error', (err) => reject(failed(err)));
      req.end(body);
    });
  }
}
