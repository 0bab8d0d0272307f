// A small fault proxy for tests, put between opa-sync and a real OPA: in mode `pass` it forwards every
// request to OPA and the answer back; in `hang` it accepts connections and requests and never answers
// (the sockets stay open until the client gives up); in `500` it answers every request with OPA's error
// shape and status 500 without asking OPA. The mode can be switched at any time; a switch applies to
// requests that arrive afterwards (a request already forwarded finishes).
import http from 'node:http';
import type { Socket } from 'node:net';
import getPort from 'get-port';

export type FaultMode = 'pass' | 'hang' | '500';

export interface OpaFaultProxy {
  /** http://127.0.0.1:<port>: use it in place of OPA's URL. */
  readonly url: string;
  mode: FaultMode;
  /** Requests that arrived, by the mode they met. */
  readonly seen: Record<FaultMode, number>;
  /** Requests that were hung and whose client has since closed the connection (gave up). */
  readonly hungAbandoned: number;
  stop(): Promise<void>;
}

/** Starts a proxy to `target` (a base URL such as `http://127.0.0.1:8181`) on a free loopback port. */
export async function startOpaFaultProxy(target: string, mode: FaultMode = 'pass'): Promise<OpaFaultProxy> {
  const to = new URL(target);
  const sockets = new Set<Socket>();
  const hung = new Set<http.ServerResponse>();
  const state = {
    mode,
    seen: { pass: 0, hang: 0, '500': 0 } as Record<FaultMode, number>,
    hungAbandoned: 0,
  };
  const server = http.createServer((req, res) => {
    const now = state.mode;
    state.seen[now] += 1;
    if (now === 'hang') {
      hung.add(res);
      req.resume();
      res.on('close', () => {
        hung.delete(res);
        state.hungAbandoned += 1;
      });
      return;
    }
    if (now === '500') {
      req.resume();
      req.on('end', () => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'internal_error', message: 'fault proxy: injected 500' }));
      });
      return;
    }
    const upstream = http.request(
      {
        hostname: to.hostname,
        port: to.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      // OPA is down: the client sees its connection reset, as it would without the proxy.
      res.destroy();
    });
    req.pipe(upstream);
  });
  // No server-side timeouts: a hung request stays hung until the client closes it.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.keepAliveTimeout = 60_000;
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await getPort({ host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    url: `http://127.0.0.1:${port}`,
    get mode() {
      return state.mode;
    },
    set mode(next: FaultMode) {
      state.mode = next;
    },
    get seen() {
      return state.seen;
    },
    get hungAbandoned() {
      return state.hungAbandoned;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
