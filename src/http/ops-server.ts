// The operations endpoint (--health-endpoint): /health (200 while every part runs; 503, with the
// failing part and its last error, while one waits to restart or has failed), /ready (every part has
// done its initial work: sources listed, OPA reachable and loaded, bundles built, servers listening),
// /metrics (Prometheus). The views come from the supervisor.
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { PartHealth } from '../lifecycle/supervisor.js';
import type { Logger } from '../util/logger.js';
import type { RunningServer } from './server-part.js';
import type { Metrics } from './metrics.js';

export interface OpsViews {
  readiness(): { ready: boolean; checks: Record<string, boolean> };
  health(): { healthy: boolean; parts: Record<string, PartHealth> };
}

export function createOpsApp(metrics: Metrics, views: OpsViews, logger: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/health', (_req, res) => {
    const { healthy, parts } = views.health();
    res.status(healthy ? 200 : 503).json({ status: healthy ? 'ok' : 'failing', parts });
  });
  app.get('/ready', (_req, res) => {
    const { ready, checks } = views.readiness();
    res.status(ready ? 200 : 503).json({ ready, checks });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  // The one place that maps an error to an HTTP answer on this server.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    logger.error({ err, path: req.path }, 'operations endpoint failed');
    res.status(500).json({ code: 'internal_error', message: 'internal error' });
  });
  return app;
}

export function listen(app: express.Express, host: string, port: number): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const server: Server = app.listen(port, host);
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
  });
}
