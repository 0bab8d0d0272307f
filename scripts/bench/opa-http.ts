// A lean keep-alive client of one OPA for the benchmark's probes: ad-hoc queries, data reads and
// writes, and OPA's own Prometheus counters. Loopback only.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

export interface OpaAnswer {
  status: number;
  body: string;
  /** performance.now() when the request was sent and when the answer had arrived. */
  sentAt: number;
  at: number;
}

export class OpaHttp {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

  constructor(readonly url: string) {
    if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(url)) throw new Error(`not a loopback OPA: ${url}`);
  }

  request(method: string, path: string, body?: string, timeoutMs = 60_000): Promise<OpaAnswer> {
    return new Promise((resolve, reject) => {
      const sentAt = performance.now();
      const req = http.request(
        `${this.url}${path}`,
        {
          method,
          agent: this.agent,
          headers: body === undefined ? {} : { 'content-type': 'application/json' },
          signal: AbortSignal.timeout(timeoutMs),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(chunks).toString('utf8'),
              sentAt,
              at: performance.now(),
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  /** An ad-hoc query (POST /v1/query, with input); the first result's bindings, or undefined. */
  async query(
    query: string,
    input?: unknown,
  ): Promise<{ bindings: Record<string, unknown> | undefined; answer: OpaAnswer }> {
    const answer = await this.request(
      'POST',
      '/v1/query',
      JSON.stringify(input === undefined ? { query } : { query, input }),
    );
    if (answer.status !== 200)
      throw new Error(`OPA query ${query}: HTTP ${answer.status}: ${answer.body.slice(0, 300)}`);
    const parsed = JSON.parse(answer.body) as { result?: Record<string, unknown>[] };
    return { bindings: parsed.result?.[0], answer };
  }

  /** GET /v1/data/<path>: the document, or undefined when OPA has nothing there. */
  async getData(path: string): Promise<unknown> {
    const answer = await this.request('GET', `/v1/data/${path}`);
    if (answer.status !== 200)
      throw new Error(`OPA GET ${path}: HTTP ${answer.status}: ${answer.body.slice(0, 300)}`);
    return (JSON.parse(answer.body) as { result?: unknown }).result;
  }

  /** The sum of OPA's `http_request_duration_seconds_count` for one handler and method (e.g. v1/data, PATCH). */
  async requestCount(handler: string, method: string): Promise<number> {
    const answer = await this.request('GET', '/metrics');
    let total = 0;
    for (const line of answer.body.split('\n')) {
      if (!line.startsWith('http_request_duration_seconds_count{')) continue;
      const labels = line.slice(line.indexOf('{') + 1, line.lastIndexOf('}'));
      const h = /handler="([^"]*)"/.exec(labels)?.[1];
      const m = /method="([^"]*)"/.exec(labels)?.[1];
      if (h === handler && m?.toLowerCase() === method.toLowerCase())
        total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return total;
  }

  close(): void {
    this.agent.destroy();
  }
}
