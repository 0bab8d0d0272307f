// The bundle HTTP server: serves published bundles to OPAs the way OPA's bundle downloader expects
// (ETag + If-None-Match → 304, the exact vnd Content-Type that turns on long polling, held long polls
// woken by a publish), receives OPAs' status reports for the fleet view, and checks bearer tokens on
// every route when a token file is configured. Bundle requests (GET/HEAD /bundles/…, by far the most
// of them) are answered by the node:http fast path (fast-path.ts); express answers the rest (/status,
// /v1/fleet, and every other route's 404). Request paths are hostile input: a bundle name is checked
// before it is ever looked up.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Metrics } from '../http/metrics.js';
import type { RunningServer } from '../http/server-part.js';
import { InvalidInputError, OpaSyncError } from '../util/errors.js';
import type { UiRoute } from '../ui/ui-route.js';
import type { Logger } from '../util/logger.js';
import { limitBody } from './body-limit.js';
import { nameFromPath, pathOf } from './bundle-request.js';
import { answerFor, writeErrorAnswer } from './error-answer.js';
import { BundleFastPath, isBundleRequest } from './fast-path.js';
import type { Fleet } from './fleet.js';
import type { BundleRegistry } from './registry.js';
import type { TokenFile } from './tokens.js';
import { readTlsPair } from '../http/tls-files.js';

export { etagMatches, holdMilliseconds, nameFromPath, parsePreferWait } from './bundle-request.js';
export { BUNDLE_CONTENT_TYPE } from './fast-path.js';

export interface BundleServerOptions {
  registry: BundleRegistry;
  fleet: Fleet;
  tokens?: TokenFile | undefined;
  metrics: Metrics;
  logger: Logger;
  /** Cap on the `wait` an OPA asks for in `Prefer`, in seconds. Default 120. */
  maxWaitSeconds?: number;
  /** The web page (/ui), when this is the only port (no --health-endpoint); it checks the tokens itself. */
  ui?: UiRoute | undefined;
}

/** close() stops listening, answers held long polls at once (304) and closes every connection. */
export type { RunningServer } from '../http/server-part.js';

/** The bundle server's request handler: for http.createServer, supertest, or listenBundleServer. */
export type BundleApp = (req: IncomingMessage, res: ServerResponse) => void;

// OPA sends a few KB of JSON per report, plus a Prometheus dump when configured: well above express's 100 KB.
const STATUS_BODY_LIMIT = '1mb';
const STATUS_BODY_LIMIT_BYTES = 1024 * 1024;
// After close(), held responses get this long to be written before their connections are cut.
const CLOSE_GRACE_MS = 1000;
// Connections a fleet opens at once (all of it, after a restart of this server) wait in the kernel's
// accept queue; Node's default of 511 drops the rest's handshakes, which the clients retry 1 s, 3 s, 7 s
// later. The kernel caps this at net.core.somaxconn.
const LISTEN_BACKLOG = 4096;

/** What close() needs of an app: the fast path, which holds the long polls. */
const fastPaths = new WeakMap<BundleApp, BundleFastPath>();

const rawPath = (req: Request): string => pathOf(req.originalUrl);

export function createBundleApp(options: BundleServerOptions): BundleApp {
  const { registry, fleet, tokens, metrics } = options;
  const logger = options.logger;
  const maxWait = options.maxWaitSeconds ?? 120;
  // Without a positive cap every long poll would get an instant 304, and OPA would ask again at once.
  if (!Number.isInteger(maxWait) || maxWait < 1) {
    throw new InvalidInputError(
      'invalid_max_wait',
      `maxWaitSeconds must be a whole number >= 1, not ${maxWait}`,
    );
  }
  const fastPath = new BundleFastPath({ registry, tokens, metrics, logger, maxWaitSeconds: maxWait });

  const app = express();
  app.disable('x-powered-by');
  // No generated ETags: nothing express answers is cached, and its `fresh` checks would answer 304s.
  app.set('etag', false);
  app.set('case sensitive routing', true);

  // Every route needs a token when a token file is configured (the fast path checks its own).
  app.use((req, _res, next) => {
    if (tokens === undefined || tokens.check(req.get('authorization'))) {
      next();
      return;
    }
    next(new OpaSyncError('unauthorized', 'a valid bearer token is required', { status: 401 }));
  });

  const json = express.json({ limit: STATUS_BODY_LIMIT, type: ['application/json', 'application/*+json'] });
  // OPA appends its `partition_name`, when configured, to the status path.
  // Cut off at the limit while it arrives: json alone reads an oversized body to its end first.
  const limit = limitBody(STATUS_BODY_LIMIT_BYTES);
  app.post(/^\/status(?:\/.*)?$/, limit, json, (req, res) => {
    const path = rawPath(req);
    const partition = path === '/status' ? undefined : nameFromPath(path, '/status/', 'partition');
    const body: unknown = req.body;
    if (body === undefined) {
      throw new InvalidInputError(
        'invalid_status_report',
        'expected a JSON status report with Content-Type: application/json',
      );
    }
    fleet.record(body, partition);
    metrics.statusReports.inc({ result: 'ok' });
    res.json({});
  });

  app.get('/v1/fleet', (_req, res) => {
    res.json({ instances: fleet.list() });
  });

  app.use((req, _res, next) => {
    next(
      new OpaSyncError('not_found', `no route for ${req.method} ${rawPath(req).slice(0, 200)}`, {
        status: 404,
      }),
    );
  });

  // The one place that maps a thrown error to an HTTP answer on this server (error-answer.ts writes it,
  // for the fast path's refusals too).
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const answer = answerFor(err);
    // Refused reports are counted here, so that body-parser's refusals (bad JSON, too large) count too.
    const statusPath = rawPath(req) === '/status' || rawPath(req).startsWith('/status/');
    if (req.method === 'POST' && statusPath && answer.status !== 401 && answer.status < 500) {
      metrics.statusReports.inc({ result: 'invalid' });
    }
    const fields = { err, method: req.method, path: rawPath(req).slice(0, 200), status: answer.status };
    if (answer.status >= 500 && answer.status !== 503) logger.error(fields, 'bundle server request failed');
    else logger.debug(fields, 'bundle server request refused');
    if (res.headersSent) {
      // Nothing sensible can follow a started answer: cut it, so the client sees a failure.
      res.destroy();
      return;
    }
    // A body refused for its size is not read to its end: the connection is closed after the answer,
    // so a client streaming without end costs neither memory nor the time to read it all.
    writeErrorAnswer(res, req.method === 'HEAD', answer, answer.status === 413);
  });

  const { ui } = options;
  const handler: BundleApp = (req, res) => {
    if (isBundleRequest(req)) fastPath.handle(req, res);
    else if (ui === undefined || !ui(req, res)) app(req, res);
  };
  fastPaths.set(handler, fastPath);
  return handler;
}

/** Listens on host:port (0 = any free port), over TLS when `tls` names a certificate and key file. */
export async function listenBundleServer(
  app: BundleApp,
  host: string,
  port: number,
  tls?: { certFile: string; keyFile: string },
): Promise<RunningServer> {
  const server = tls === undefined ? http.createServer(app) : https.createServer(await readTlsPair(tls), app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const fastPath = fastPaths.get(app);
  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        if (fastPath !== undefined) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            fastPath.closeAll(),
            new Promise<void>((resolve) => {
              timer = setTimeout(resolve, CLOSE_GRACE_MS);
            }),
          ]);
          clearTimeout(timer);
        }
        server.closeAllConnections();
        await stopped;
      })();
      return closing;
    },
  };
}
