// The serving fast path: `GET`/`HEAD /bundles/<name>` answered on node:http itself, in front of express
// (whose router costs several times what answering a 304 does). The same answers as ever — the exact
// Content-Type that turns on OPA's long polling, ETag + If-None-Match → 304, held long polls, 401 with
// WWW-Authenticate, 400 for a refused name before any lookup, 503 before the first build, 404 counted
// without the name — with the per-request work cut to what the answer needs: a token check that
// allocates nothing, a table of the paths that named a published bundle (so their name is checked
// once, not per request), pre-bound metric children, and headers written as one flat array.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Counter } from 'prom-client';
import type { Metrics } from '../http/metrics.js';
import { statusOf, type ErrorCode } from '../util/error-codes.js';
import { InvalidInputError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { BUNDLE_FILE_SUFFIX } from '../util/safe-names.js';
import {
  etagMatches,
  holdMilliseconds,
  nameFromPath,
  parsePreferWait,
  pathOf,
  prefersDelta,
} from './bundle-request.js';
import { writeErrorAnswer } from './error-answer.js';
import { HeldPolls, type HeldPoll } from './held-polls.js';
import type { BundleRegistry, PublishedBundle } from './registry.js';
import type { TokenFile } from './tokens.js';

/** OPA turns long polling on only when a 200 carries exactly this type (string equality, no charset). */
export const BUNDLE_CONTENT_TYPE = 'application/vnd.openpolicyagent.bundles';
export const BUNDLES_PREFIX = '/bundles/';
// The table of paths that named a published bundle holds at most two per name (`<name>`, `<name>.tar.gz`);
// this bounds it whatever happens to the registry.
const MAX_ROUTES = 10_000;

/** Whether a request is the fast path's: GET or HEAD under /bundles/ (origin-form targets only). */
export function isBundleRequest(req: IncomingMessage): boolean {
  const method = req.method;
  return (method === 'GET' || method === 'HEAD') && req.url?.startsWith(BUNDLES_PREFIX) === true;
}

/** A path under /bundles/ that names a bundle: the name as asked, and without `.tar.gz` (tried second). */
interface Route {
  name: string;
  withoutSuffix: string | undefined;
}

type ChildCounter = ReturnType<Counter<'bundle' | 'result'>['labels']>;

interface BundleCounters {
  ok: ChildCounter;
  notModified: ChildCounter;
}

export interface BundleFastPathOptions {
  registry: BundleRegistry;
  tokens: TokenFile | undefined;
  metrics: Metrics;
  logger: Logger;
  /** Cap on the `wait` an OPA asks for, in seconds (checked by the caller: a whole number >= 1). */
  maxWaitSeconds: number;
}

export class BundleFastPath {
  private readonly registry: BundleRegistry;
  private readonly tokens: TokenFile | undefined;
  private readonly metrics: Metrics;
  private readonly logger: Logger;
  private readonly maxWait: number;
  private readonly polls: HeldPolls;
  /** Raw paths that named a published bundle, so their (pure) name check is done once. */
  private readonly routes = new Map<string, Route>();
  private readonly counters = new Map<string, BundleCounters>();
  /** Refusals by status, counted without a name: unknown names are the caller's to invent. */
  private readonly refused = new Map<number, ChildCounter>();
  private closing = false;

  constructor(options: BundleFastPathOptions) {
    this.registry = options.registry;
    this.tokens = options.tokens;
    this.metrics = options.metrics;
    this.logger = options.logger;
    this.maxWait = options.maxWaitSeconds;
    const held = this.metrics.bundleLongPollsHeld;
    this.polls = new HeldPolls({
      registry: this.registry,
      send: (poll, bundle, closing) => this.answerHeld(poll, bundle, closing),
      onHeldChange: (delta) => (delta === 1 ? held.inc() : held.dec()),
    });
  }

  /** Answers a request isBundleRequest() accepted. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    try {
      this.serve(req, res);
    } catch (err) {
      this.failed(req, res, err);
    }
  }

  /** Stops holding: every held poll is answered now with Connection: close, and so is every later request. */
  closeAll(): Promise<void> {
    this.closing = true;
    return this.polls.closeAll();
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const head = req.method === 'HEAD';
    const headers = req.headers;
    if (this.tokens !== undefined && !this.tokens.check(headers.authorization)) {
      this.refuse(req, res, 'unauthorized', 'a valid bearer token is required');
      return;
    }
    const url = req.url as string;
    let route = this.routes.get(url);
    if (route === undefined) {
      const path = pathOf(url);
      route = this.routes.get(path);
      if (route === undefined) {
        let name: string;
        try {
          name = nameFromPath(path, BUNDLES_PREFIX, 'bundle');
        } catch (err) {
          const message = err instanceof InvalidInputError ? err.message : 'invalid bundle name';
          this.refuse(req, res, 'invalid_bundle_name', message, err);
          return;
        }
        route = {
          name,
          withoutSuffix: name.endsWith(BUNDLE_FILE_SUFFIX)
            ? name.slice(0, -BUNDLE_FILE_SUFFIX.length)
            : undefined,
        };
        // Only the plain spelling of a name that was found: the table cannot grow with what clients invent.
        if (
          path === url &&
          path.length === BUNDLES_PREFIX.length + name.length &&
          this.registry.isBuilt() &&
          this.find(route) !== undefined &&
          this.routes.size < MAX_ROUTES
        ) {
          this.routes.set(path, route);
        }
      }
    }
    if (!this.registry.isBuilt()) {
      this.refuse(req, res, 'bundles_not_ready', 'the bundles are still being built; try again shortly');
      return;
    }
    const bundle = this.find(route);
    if (bundle === undefined) {
      this.refuse(req, res, 'bundle_not_found', `no bundle named ${JSON.stringify(route.name)}`);
      return;
    }

    const ifNoneMatch = headers['if-none-match'];
    // Node joins repeated headers it does not know with ', ': a string whenever it is there.
    const prefer = headers.prefer;
    const delta =
      bundle.deltas !== undefined && prefersDelta(typeof prefer === 'string' ? prefer : undefined);
    if (ifNoneMatch === undefined || !etagMatches(ifNoneMatch, bundle.etag)) {
      this.sendBundle(res, head, bundle, this.closing, delta ? ifNoneMatch : undefined);
      return;
    }
    const asked = parsePreferWait(typeof prefer === 'string' ? prefer : undefined);
    if (asked === undefined || asked <= 0 || this.closing) {
      // Shutting down: Connection: close makes the client reconnect (to another replica).
      this.sendNotModified(res, bundle, this.closing);
      return;
    }
    // A client that left while its request was queued would otherwise be held for nothing.
    if (req.socket.destroyed) return;
    this.polls.hold(res, head, bundle, holdMilliseconds(Math.min(asked, this.maxWait)), delta);
  }

  /** `bundles/<name>` and `bundles/<name>.tar.gz` both work; a name that itself ends in .tar.gz wins. */
  private find(route: Route): PublishedBundle | undefined {
    const bundle = this.registry.get(route.name);
    if (bundle !== undefined || route.withoutSuffix === undefined) return bundle;
    return this.registry.get(route.withoutSuffix);
  }

  private countersOf(name: string): BundleCounters {
    let counters = this.counters.get(name);
    if (counters === undefined) {
      counters = {
        ok: this.metrics.bundleRequests.labels(name, '200'),
        notModified: this.metrics.bundleRequests.labels(name, '304'),
      };
      this.counters.set(name, counters);
    }
    return counters;
  }

  /**
   * A 200 with the bundle; with `from` (the ETag of a client that asked for deltas), the delta bundle
   * from that revision if there is one, else the snapshot.
   */
  private sendBundle(
    res: ServerResponse,
    head: boolean,
    bundle: PublishedBundle,
    close: boolean,
    from?: string,
  ): void {
    const delta = from === undefined ? undefined : bundle.deltas?.get(from);
    const bytes = delta ?? bundle.bytes;
    this.countersOf(bundle.name).ok.inc();
    if (delta !== undefined) {
      this.metrics.bundleDeltas.inc({ bundle: bundle.name });
      this.metrics.bundleDeltaBytes.inc({ bundle: bundle.name }, delta.length);
    }
    const headers = [
      'Content-Type',
      BUNDLE_CONTENT_TYPE,
      'Content-Length',
      String(bytes.length),
      'ETag',
      bundle.etag,
      'Cache-Control',
      'no-cache',
    ];
    if (close) headers.push('Connection', 'close');
    res.writeHead(200, headers);
    if (head) res.end();
    else res.end(bytes);
  }

  private sendNotModified(res: ServerResponse, bundle: PublishedBundle, close: boolean): void {
    this.countersOf(bundle.name).notModified.inc();
    // The ETag is echoed although OPA keeps its old one on a 304 without it: proxies and other clients may not.
    res.writeHead(
      304,
      close
        ? ['ETag', bundle.etag, 'Cache-Control', 'no-cache', 'Connection', 'close']
        : ['ETag', bundle.etag, 'Cache-Control', 'no-cache'],
    );
    res.end();
  }

  /** A held poll's answer: the newest bundle once woken, or a 304 with the current ETag at its deadline. */
  private answerHeld(poll: HeldPoll, woken: PublishedBundle | undefined, closing: boolean): void {
    const current = this.registry.get(poll.bundle.name);
    try {
      if (woken !== undefined) {
        this.sendBundle(
          poll.res,
          poll.head,
          current ?? woken,
          closing,
          poll.delta ? poll.bundle.etag : undefined,
        );
      } else this.sendNotModified(poll.res, current ?? poll.bundle, closing);
    } catch (err) {
      this.logger.error({ err, bundle: poll.bundle.name }, 'answering a held long poll failed');
      poll.res.destroy();
    }
  }

  private refuse(
    req: IncomingMessage,
    res: ServerResponse,
    code: ErrorCode,
    message: string,
    err?: unknown,
  ): void {
    const status = statusOf(code) ?? 500;
    let counter = this.refused.get(status);
    if (counter === undefined) {
      counter = this.metrics.bundleRequests.labels('', String(status));
      this.refused.set(status, counter);
    }
    counter.inc();
    if (status >= 500 && status !== 503) {
      this.logger.error(this.fields(req, status, err ?? message), 'bundle server request failed');
    } else if (this.logger.isLevelEnabled('debug')) {
      this.logger.debug(this.fields(req, status, err ?? message), 'bundle server request refused');
    }
    writeErrorAnswer(res, req.method === 'HEAD', { status, code, message }, this.closing);
  }

  private fields(req: IncomingMessage, status: number, err: unknown): Record<string, unknown> {
    return { err, method: req.method, path: pathOf(req.url ?? '').slice(0, 200), status };
  }

  private failed(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      // Nothing sensible can follow a started answer: cut it, so the client sees a failure.
      this.logger.error({ err, path: pathOf(req.url ?? '').slice(0, 200) }, 'bundle server request failed');
      res.destroy();
      return;
    }
    this.refuse(req, res, 'internal_error', 'internal error', err);
  }
}
