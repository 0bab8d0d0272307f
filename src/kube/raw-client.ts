// A small JSON client for the Kubernetes API paths that the generated clients do not cover well: API
// discovery and lists of any group/version/resource. It authenticates exactly as client-node does
// (KubeConfig.applyToHTTPSOptions) and bounds every call with a timeout.
import https from 'node:https';
import http from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { OpaSyncError, RetryableError } from '../util/errors.js';

export class KubeApiError extends OpaSyncError {}

export class KubeRawClient {
  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly timeoutMs: number,
  ) {}

  /** GET a JSON document. 4xx answers throw KubeApiError (with status); transport failures and 5xx are retryable. */
  async getJson<T>(path: string, query: Record<string, string | undefined> = {}): Promise<T> {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new KubeApiError('kube_no_cluster', 'the kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    const options: https.RequestOptions = { method: 'GET', headers: { accept: 'application/json' } };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = transport.request(
        url,
        { ...options, signal: AbortSignal.timeout(this.timeoutMs) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) =>
            reject(
              new RetryableError('kube_unreachable', `GET ${url.pathname}: ${err.message}`, { cause: err }),
            ),
          );
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) {
              try {
                resolve(JSON.parse(text) as T);
              } catch (err) {
                reject(
                  new RetryableError('kube_bad_response', `GET ${url.pathname}: the answer is not JSON`, {
                    cause: err,
                  }),
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
            const Err = status >= 500 || status === 429 ? RetryableError : KubeApiError;
            reject(new Err(`kube_http_${status}`, `GET ${url.pathname}: ${status} ${message}`, { status }));
          });
        },
      );
      req.on('error', (err) =>
        reject(new RetryableError('kube_unreachable', `GET ${url.pathname}: ${err.message}`, { cause: err })),
      );
      req.end();
    });
  }
}
