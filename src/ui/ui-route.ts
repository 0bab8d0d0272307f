// The web page's HTTP routes, on node:http, for the ops server (--health-endpoint) and, when that is
// not configured, the bundle server: GET /ui (the page, server-rendered), /ui/app.css and /ui/live.js
// (its assets), /ui/events (live updates), /ui/state.json (the snapshot it is rendered from), and
// POST /ui/login and /ui/logout (the token wall). Read-only: nothing here changes opa-sync's state.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { version } from '../version.js';
import { STYLE, SCRIPT } from './assets.js';
import { LiveUpdates } from './live-updates.js';
import { renderLogin, renderPage, UI_PATH } from './render-page.js';
import { filterFrom } from './render-sections.js';
import { takeSnapshot, type UiSources } from './snapshot.js';
import { isAuthorized, sessionCookie, tokenAccepted, type TokenCheck } from './ui-auth.js';

/** Answers a request below /ui and returns true, or returns false for any other path. */
export type UiRoute = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface UiRouteOptions {
  sources: UiSources;
  /** The bundle server's tokens, when it has a token file: the page is behind them too. */
  tokens?: TokenCheck | undefined;
  /** Served over TLS: the session cookie is `Secure`. */
  secure?: boolean;
}

// Nothing but opa-sync's own files; no framing; forms post only here.
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};
/** A login form post is a token and a little more; anything longer is refused. */
const MAX_LOGIN_BODY = 4096;

interface Asset {
  type: string;
  body: Buffer;
  gzipped: Buffer;
  etag: string;
}

function asset(type: string, text: string): Asset {
  const body = Buffer.from(text);
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
  return { type, body, gzipped: gzipSync(body, { level: 9 }), etag };
}

const ASSETS: ReadonlyMap<string, Asset> = new Map([
  [`${UI_PATH}/app.css`, asset('text/css; charset=utf-8', STYLE)],
  [`${UI_PATH}/live.js`, asset('text/javascript; charset=utf-8', SCRIPT)],
]);

const acceptsGzip = (req: IncomingMessage): boolean => /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');

/** Sends `body`, gzipped when the client takes it and it is worth it. */
function send(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  type: string,
  body: string | Buffer,
  headers: Record<string, string> = {},
): void {
  let bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const out: Record<string, string | number> = { ...SECURITY_HEADERS, 'content-type': type, ...headers };
  if (bytes.length > 1024 && acceptsGzip(req)) {
    bytes = gzipSync(bytes);
    out['content-encoding'] = 'gzip';
    out.vary = 'accept-encoding';
  }
  out['content-length'] = bytes.length;
  res.writeHead(status, out);
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

function sendAsset(req: IncomingMessage, res: ServerResponse, a: Asset): void {
  if (req.headers['if-none-match'] === a.etag) {
    res.writeHead(304, { etag: a.etag, 'cache-control': 'no-cache' });
    res.end();
    return;
  }
  const gzip = acceptsGzip(req);
  const bytes = gzip ? a.gzipped : a.body;
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    'content-type': a.type,
    'content-length': bytes.length,
    etag: a.etag,
    'cache-control': 'no-cache',
    vary: 'accept-encoding',
    ...(gzip ? { 'content-encoding': 'gzip' } : {}),
  });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

function sendJson(req: IncomingMessage, res: ServerResponse, status: number, value: unknown): void {
  send(req, res, status, 'application/json; charset=utf-8', JSON.stringify(value), {
    'cache-control': 'no-store',
  });
}

/** The form body of a login post, or undefined when it is too long or not a form. */
function readForm(req: IncomingMessage): Promise<URLSearchParams | undefined> {
  return new Promise((resolve) => {
    const type = req.headers['content-type'] ?? '';
    if (!type.startsWith('application/x-www-form-urlencoded')) {
      req.resume();
      resolve(undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let length = 0;
    req.on('data', (chunk: Buffer) => {
      length += chunk.length;
      if (length <= MAX_LOGIN_BODY) chunks.push(chunk);
    });
    req.once('end', () =>
      resolve(
        length > MAX_LOGIN_BODY ? undefined : new URLSearchParams(Buffer.concat(chunks).toString('utf8')),
      ),
    );
    req.once('error', () => resolve(undefined));
  });
}

/**
 * The page's routes.
 *
 * @example
 * const ui = createUiRoute({ sources, tokens });
 * http.createServer((req, res) => { if (!ui(req, res)) notFound(req, res); });
 */
export function createUiRoute(options: UiRouteOptions): UiRoute {
  const { tokens } = options;
  const secure = options.secure ?? false;
  const snapshot = (): ReturnType<typeof takeSnapshot> => takeSnapshot(options.sources);
  const live = new LiveUpdates(snapshot);
  const unauthorized = (req: IncomingMessage, res: ServerResponse): void =>
    sendJson(req, res, 401, { code: 'unauthorized', message: 'a valid bearer token is required' });

  const login = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const form = await readForm(req);
    const token = form?.get('token') ?? undefined;
    if (tokens === undefined) {
      send(req, res, 303, 'text/plain; charset=utf-8', '', { location: UI_PATH });
    } else if (token !== undefined && tokenAccepted(token, tokens)) {
      send(req, res, 303, 'text/plain; charset=utf-8', '', {
        location: UI_PATH,
        'set-cookie': sessionCookie(token, secure),
        'cache-control': 'no-store',
      });
    } else {
      const problem =
        form === undefined
          ? 'The login form was not sent as a form.'
          : 'That token is not one of the token file’s.';
      send(req, res, 401, 'text/html; charset=utf-8', renderLogin(problem), { 'cache-control': 'no-store' });
    }
  };

  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://opa-sync');
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/$/, '') : url.pathname;
    if (path !== UI_PATH && !path.startsWith(`${UI_PATH}/`)) return false;
    const method = req.method ?? 'GET';
    const read = method === 'GET' || method === 'HEAD';
    const found = ASSETS.get(path);
    if (found !== undefined && read) {
      sendAsset(req, res, found);
      return true;
    }
    if (method === 'POST' && path === `${UI_PATH}/login`) {
      void login(req, res);
      return true;
    }
    if (method === 'POST' && path === `${UI_PATH}/logout`) {
      req.resume();
      send(req, res, 303, 'text/plain; charset=utf-8', '', {
        location: UI_PATH,
        'set-cookie': sessionCookie(undefined, secure),
      });
      return true;
    }
    const known = path === UI_PATH || path === `${UI_PATH}/events` || path === `${UI_PATH}/state.json`;
    if (!known || !read) {
      sendJson(req, res, 404, {
        code: 'not_found',
        message: `${method} ${path.slice(0, 200)} is not served here`,
      });
      return true;
    }
    if (!isAuthorized(req, tokens)) {
      if (path === UI_PATH) {
        send(req, res, 401, 'text/html; charset=utf-8', renderLogin(undefined), {
          'cache-control': 'no-store',
        });
      } else unauthorized(req, res);
      return true;
    }
    const filter = filterFrom(url.searchParams);
    if (path === `${UI_PATH}/events`) {
      // A stream has no HEAD: answer with its headers only.
      if (method === 'HEAD') {
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-store',
        });
        res.end();
      } else live.open(res, filter);
    } else if (path === `${UI_PATH}/state.json`) sendJson(req, res, 200, snapshot());
    else {
      send(
        req,
        res,
        200,
        'text/html; charset=utf-8',
        renderPage(snapshot(), filter, { logout: tokens !== undefined, version: version() }),
        {
          'cache-control': 'no-store',
        },
      );
    }
    return true;
  };
}
