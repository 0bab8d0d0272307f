// The operations endpoint (--health-endpoint): /health (the process answers), /ready (every source has
// done its initial sync, OPA is reachable and the initial load was tried), /metrics (Prometheus).
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../util/logger.js';
import type { Metrics } from './metrics.js';

export type ReadinessChecks = () => Record<string, boolean>;

export function createOpsApp(metrics: Metrics, readiness: ReadinessChecks, logger: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/ready', (_req, res) => {
    const checks = readiness();
    const ready = Object.values(checks).every(Boolean);
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

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

export function listen(app: express.Express, host: string, port: number): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const server: Server = app.listen(port, host);
    server.once('error', reject);
    server.once('listening', () => {
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
