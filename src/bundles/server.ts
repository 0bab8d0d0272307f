// The bundle HTTP server: serves published bundles to OPAs the way OPA's bundle downloader expects
// (ETag + If-None-Match → 304, the exact vnd Content-Type that turns on long polling, held long polls
// woken by a publish), receives OPAs' status reports for the fleet view, and checks bearer tokens on
// every route when a token file is configured. Request paths are hostile input: a bundle name is
// checked before it is ever looked up.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Metrics } from '../http/metrics.js';
import type { RunningServer } from '../http/server-part.js';
import {
  InvalidInputError,
  OpaSyncError,
  RetryableError,
  messageOf,
  type ErrorCode,
} from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { pathNameProblem, requestedBundleNameProblem } from '../util/safe-names.js';
import type { Fleet } from './fleet.js';
import type { BundleRegistry, PublishedBundle } from './registry.js';
import type { TokenFile } from './tokens.js';

export interface BundleServerOptions {
  registry: BundleRegistry;
  fleet: Fleet;
  tokens?: TokenFile | undefined;
  metrics: Metrics;
  logger: Logger;
  /** Cap on the `wait` an OPA asks for in `Prefer`, in seconds. Default 120. */
  maxWaitSeconds?: number;
}

/** close() stops listening, answers held long polls at once (304) and closes every connection. */
export type { RunningServer } from '../http/server-part.js';

/** OPA turns long polling on only when a 200 carries exactly this type (string equality, no charset). */
export const BUNDLE_CONTENT_TYPE = 'application/vnd.openpolicyagent.bundles';
// OPA sends a few KB of JSON per report, plus a Prometheus dump when configured: well above express's 100 KB.
const STATUS_BODY_LIMIT = '1mb';
// After close(), held responses get this long to be written before their connections are cut.
const CLOSE_GRACE_MS = 1000;

/** A held long poll, as close() sees it: how to end it now, and when its answer has been written. */
interface HeldPoll {
  end(): void;
  closed: Promise<void>;
}

/**
 * The part of the app that close() needs. Held polls are in a set that close() walks: nothing is added
 * to a shared signal per poll (which would make holding n polls cost O(n²) in listener bookkeeping).
 */
interface ServerState {
  closing: boolean;
  held: Set<HeldPoll>;
}
const states = new WeakMap<express.Express, ServerState>();

/**
 * The `wait=<seconds>` preference of a `Prefer` header, or undefined. OPA sends
 * `modes=snapshot,delta;wait=30`: the comma belongs to `modes`, so the header is not split on commas;
 * `wait` is found as a whole parameter name anywhere in it.
 */
export function parsePreferWait(prefer: string | undefined): number | undefined {
  if (prefer === undefined) return undefined;
  const match = /(?:^|[\s;,])wait\s*=\s*"?(\d{1,9})"?\s*(?=$|[;,])/i.exec(prefer);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/** How long a long poll asking for `waitSeconds` is held: a little under the wait, so OPA gets the 304 first. */
export function holdMilliseconds(waitSeconds: number): number {
  return waitSeconds * 1000 - Math.min(1000, waitSeconds * 100);
}

function opaqueTag(tag: string): string {
  let t = tag.trim();
  if (t.startsWith('W/')) t = t.slice(2);
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) t = t.slice(1, -1);
  return t;
}

/**
 * Whether an `If-None-Match` value names `etag` (weak comparison, as RFC 9110 asks for this header):
 * `W/` prefixes are ignored, a comma list matches if any member does, `*` matches anything.
 */
export function etagMatches(ifNoneMatch: string, etag: string): boolean {
  const wanted = opaqueTag(etag);
  // A quoted tag may itself hold commas, so quoted tags are taken whole before splitting the rest.
  for (const candidate of ifNoneMatch.match(/(?:W\/)?"[^"]*"|[^\s,]+/g) ?? []) {
    if (candidate === '*' || opaqueTag(candidate) === wanted) return true;
  }
  return false;
}

function rawPath(req: Request): string {
  const url = req.originalUrl;
  const end = url.search(/[?#]/);
  return end === -1 ? url : url.slice(0, end);
}

/**
 * The name under `prefix` of a raw (not yet decoded) request path, decoded one segment at a time.
 * Throws InvalidInputError for bad percent-encoding, an encoded '/' inside a segment (`%2f..`), and any
 * name the rule for `what` refuses (safe-names): for a bundle, the bundle-name rule the registry
 * publishes with (plus the `.tar.gz` form); for a partition, `pathNameProblem`.
 */
export function nameFromPath(path: string, prefix: string, what: 'bundle' | 'partition'): string {
  if (!path.startsWith(prefix)) {
    throw new InvalidInputError(`invalid_${what}_name`, `the request path is not under ${prefix}`);
  }
  const segments: string[] = [];
  for (const raw of path.slice(prefix.length).split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch (err) {
      throw new InvalidInputError(`invalid_${what}_name`, `the ${what} name is not valid percent-encoding`, {
        cause: err,
      });
    }
    if (segment.includes('/')) {
      throw new InvalidInputError(`invalid_${what}_name`, `the ${what} name has an encoded '/' in a segment`);
    }
    segments.push(segment);
  }
  const name = segments.join('/');
  const problem =
    what === 'bundle' ? requestedBundleNameProblem(name) : pathNameProblem(name, `${what} name`);
  if (problem !== undefined) throw new InvalidInputError(`invalid_${what}_name`, problem);
  return name;
}

interface ErrorAnswer {
  status: number;
  code: ErrorCode;
  message: string;
}

function isHttpError(
  err: unknown,
): err is { status: number; expose: boolean; type?: unknown; message: string } {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { status?: unknown; expose?: unknown };
  return typeof e.status === 'number' && e.status >= 400 && e.status < 500 && e.expose === true;
}

// body-parser's error types, as codes of our own.
const BODY_ERROR_CODES: Readonly<Record<string, ErrorCode>> = {
  'entity.too.large': 'request_too_large',
  'entity.parse.failed': 'invalid_json',
  'encoding.unsupported': 'unsupported_encoding',
  'charset.unsupported': 'unsupported_charset',
  'request.aborted': 'request_aborted',
};

function answerFor(err: unknown): ErrorAnswer {
  if (err instanceof OpaSyncError) {
    const status = err.status ?? (err instanceof InvalidInputError ? 400 : 500);
    // Our own errors with a deliberate status say what the client needs; an unexpected 500 says nothing.
    return status === 500 && err.status === undefined
      ? { status, code: 'internal_error', message: 'internal error' }
      : { status, code: err.code, message: err.message };
  }
  if (isHttpError(err)) {
    const code = typeof err.type === 'string' ? (BODY_ERROR_CODES[err.type] ?? 'bad_request') : 'bad_request';
    return { status: err.status, code, message: err.message };
  }
  return { status: 500, code: 'internal_error', message: 'internal error' };
}

export function createBundleApp(options: BundleServerOptions): express.Express {
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
  const state: ServerState = { closing: false, held: new Set() };

  const app = express();
  states.set(app, state);
  app.disable('x-powered-by');
  // The bundle route sets ETag itself and answers If-None-Match itself: express's generated ETags and
  // `fresh` checks would answer 304s the long-poll logic did not decide.
  app.set('etag', false);
  app.set('case sensitive routing', true);

  const count = (bundle: string, result: number): void => {
    metrics.bundleRequests.inc({ bundle, result: String(result) });
  };
  const isBundleRequest = (req: Request): boolean =>
    (req.method === 'GET' || req.method === 'HEAD') && rawPath(req).startsWith('/bundles/');

  // Every route, bundles and status alike, needs a token when a token file is configured.
  app.use((req, _res, next) => {
    if (tokens === undefined || tokens.check(req.get('authorization'))) {
      next();
      return;
    }
    if (isBundleRequest(req)) count('', 401);
    next(new OpaSyncError('unauthorized', 'a valid bearer token is required', { status: 401 }));
  });

  const sendBundle = (req: Request, res: Response, bundle: PublishedBundle): void => {
    count(bundle.name, 200);
    // Node's own setHeader: express's res.set/res.type would rewrite Content-Type, and OPA compares it exactly.
    res.statusCode = 200;
    res.setHeader('Content-Type', BUNDLE_CONTENT_TYPE);
    res.setHeader('Content-Length', String(bundle.bytes.length));
    res.setHeader('ETag', bundle.etag);
    res.setHeader('Cache-Control', 'no-cache');
    if (req.method === 'HEAD') res.end();
    else res.end(bundle.bytes);
  };
  const sendNotModified = (res: Response, bundle: PublishedBundle): void => {
    count(bundle.name, 304);
    res.statusCode = 304;
    // Echoed although OPA keeps its old ETag on a 304 without one: proxies and other clients may not.
    res.setHeader('ETag', bundle.etag);
    res.setHeader('Cache-Control', 'no-cache');
    res.end();
  };

  // RegExp routes: express would percent-decode a named parameter itself (and fail with its own error
  // on bad encoding); the name is decoded and checked here instead, from the raw path.
  app.get(/^\/bundles\//, async (req, res) => {
    let name: string;
    try {
      name = nameFromPath(rawPath(req), '/bundles/', 'bundle');
    } catch (err) {
      count('', 400);
      throw err;
    }
    if (!registry.isBuilt()) {
      count('', 503);
      throw new RetryableError('bundles_not_ready', 'the bundles are still being built; try again shortly', {
        status: 503,
      });
    }
    // `bundles/<name>` and `bundles/<name>.tar.gz` both work; a name that itself ends in .tar.gz wins.
    const bundle =
      registry.get(name) ??
      (name.endsWith('.tar.gz') ? registry.get(name.slice(0, -'.tar.gz'.length)) : undefined);
    if (bundle === undefined) {
      // Unknown names are counted without their name: they are the caller's to invent.
      count('', 404);
      throw new OpaSyncError('bundle_not_found', `no bundle named ${JSON.stringify(name)}`, { status: 404 });
    }

    const ifNoneMatch = req.get('if-none-match');
    if (ifNoneMatch === undefined || !etagMatches(ifNoneMatch, bundle.etag)) {
      sendBundle(req, res, bundle);
      return;
    }
    const asked = parsePreferWait(req.get('prefer'));
    if (asked === undefined || asked <= 0) {
      sendNotModified(res, bundle);
      return;
    }
    if (state.closing) {
      // Shutting down: make the client reconnect (to another replica) instead of asking here again.
      res.setHeader('Connection', 'close');
      sendNotModified(res, bundle);
      return;
    }

    // A client that left while its request was queued would otherwise be held for nothing.
    if (req.socket.destroyed) return;
    // Held until the bundle changes or just under the wait, whichever comes first; a client that goes
    // away, or close(), ends the hold at once.
    const waitSeconds = Math.min(asked, maxWait);
    const stop = new AbortController();
    let gone = false;
    const closed = new Promise<void>((resolve) => {
      res.once('close', () => {
        if (!res.writableEnded) {
          gone = true;
          stop.abort();
        }
        resolve();
      });
    });
    const held: HeldPoll = { end: () => stop.abort(), closed };
    state.held.add(held);
    void closed.then(() => state.held.delete(held));
    metrics.bundleLongPollsHeld.inc();
    let changed: PublishedBundle | undefined;
    try {
      changed = await registry.waitForChange(
        bundle.name,
        bundle.etag,
        holdMilliseconds(waitSeconds),
        stop.signal,
      );
    } finally {
      metrics.bundleLongPollsHeld.dec();
    }
    if (gone) return;
    if (state.closing) res.setHeader('Connection', 'close');
    if (changed !== undefined) sendBundle(req, res, changed);
    else sendNotModified(res, registry.get(bundle.name) ?? bundle);
  });

  const json = express.json({ limit: STATUS_BODY_LIMIT, type: ['application/json', 'application/*+json'] });
  // OPA appends its `partition_name`, when configured, to the status path.
  app.post(/^\/status(?:\/.*)?$/, json, (req, res) => {
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

  // The one place that maps an error to an HTTP answer on this server.
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
    if (answer.status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="opa-sync"');
    res.status(answer.status).json({ code: answer.code, message: answer.message });
  });
  return app;
}

async function readTlsFile(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new InvalidInputError('tls_file_unreadable', `cannot read ${file}: ${messageOf(err)}`, {
      cause: err,
    });
  }
}

/** Listens on host:port (0 = any free port), over TLS when `tls` names a certificate and key file. */
export async function listenBundleServer(
  app: express.Express,
  host: string,
  port: number,
  tls?: { certFile: string; keyFile: string },
): Promise<RunningServer> {
  const server =
    tls === undefined
      ? http.createServer(app)
      : https.createServer(
          { cert: await readTlsFile(tls.certFile), key: await readTlsFile(tls.keyFile) },
          app,
        );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const state = states.get(app);
  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        if (state !== undefined) {
          state.closing = true;
          const held = [...state.held];
          for (const poll of held) poll.end();
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            Promise.all(held.map((poll) => poll.closed)),
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
