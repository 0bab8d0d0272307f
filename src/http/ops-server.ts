// The operations endpoint (--health-endpoint): /health (200 while every part runs; 503, with the
// failing part and its last error, while one waits to restart or has failed), /ready (every part has
// done its initial work: sources listed, OPA reachable and loaded, bundles built, servers listening),
// /metrics (Prometheus). The views come from the supervisor. Three routes need no framework: plain
// node:http, so that a sidecar that only pushes to OPA does not load express (~1 MB of code). The web
// page (/ui and below, src/ui/ui-route.ts) is served here too.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { PartHealth } from '../lifecycle/supervisor.js';
import type { UiRoute } from '../ui/ui-route.js';
import type { Logger } from '../util/logger.js';
import type { RunningServer } from './server-part.js';
import type { Metrics } from './metrics.js';

export interface OpsViews {
  readiness(): { ready: boolean; checks: Record<string, boolean>; reasons?: Record<string, string[]> };
  health(): { healthy: boolean; parts: Record<string, PartHealth> };
}

/** The request handler of the operations endpoint. */
export type OpsApp = (req: IncomingMessage, res: ServerResponse) => void;

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function sendJson(req: IncomingMessage, res: ServerResponse, status: number, value: unknown): void {
  send(req, res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

export function createOpsApp(metrics: Metrics, views: OpsViews, logger: Logger, ui?: UiRoute): OpsApp {
  // The one place that maps an error to an HTTP answer on this server.
  const failed = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    logger.error({ err, path: req.url }, 'operations endpoint failed');
    if (res.headersSent) res.destroy();
    else sendJson(req, res, 500, { code: 'internal_error', message: 'internal error' });
  };
  return (req, res) => {
    try {
      if (ui?.(req, res) === true) return;
    } catch (err) {
      failed(req, res, err);
      return;
    }
    // As express routes: case-insensitive, a trailing slash allowed, the query ignored.
    const path = (req.url ?? '/')
      .split('?', 1)[0]
      ?.replace(/(.)\/$/, '$1')
      .toLowerCase();
    const known = path === '/health' || path === '/ready' || path === '/metrics';
    if (!known || (req.method !== 'GET' && req.method !== 'HEAD')) {
      sendJson(req, res, 404, { code: 'not_found', message: `${req.method} ${path} is not served here` });
      return;
    }
    try {
      if (path === '/health') {
        const { healthy, parts } = views.health();
        sendJson(req, res, healthy ? 200 : 503, { status: healthy ? 'ok' : 'failing', parts });
      } else if (path === '/ready') {
        const { ready, checks, reasons } = views.readiness();
        sendJson(req, res, ready ? 200 : 503, reasons ? { ready, checks, reasons } : { ready, checks });
      } else {
        metrics.registry.metrics().then(
          (text) => send(req, res, 200, metrics.registry.contentType, text),
          (err: unknown) => failed(req, res, err),
        );
      }
    } catch (err) {
      failed(req, res, err);
    }
  };
}

export function listen(app: OpsApp, host: string, port: number): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const server: Server = createServer(app);
    server.once('error', reject);
    server.once('listening', () => {
      server.off('error', reject);
      const address = server.address() as AddressInfo;
      resolve({
        port: address.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
    server.listen(port, host);
  });
}
