// The narrow OPA REST client: the handful of calls the OPA pusher needs (policies, data, health) and
// nothing else. Every call is bounded by `timeoutMs` and cancellable by the caller's signal, and every
// failure is a typed error (see ./errors.ts), so the pusher can tell "retry later" from "the input is bad"
// without reading messages. node:http(s) with a keep-alive agent rather than fetch, because Node 20's
// fetch cannot take a custom CA or a client certificate without another dependency.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { OpaConnection } from '../config.js';
import { ConfigError, InvalidInputError, OpaSyncError, messageOf } from '../util/errors.js';
import type { PermanentCode } from '../util/error-codes.js';
import type { Logger } from '../util/logger.js';
import { TokenFileError, TokenFileReader } from '../util/token-file.js';
import { OpaHttpError, OpaTokenFileError, OpaUnavailableError, parseOpaErrorBody } from './errors.js';

export { OpaHttpError, OpaTokenFileError, OpaUnavailableError } from './errors.js';
export type { OpaErrorBody, OpaUnavailableCode } from './errors.js';

/** How to reach OPA, as `parseArgs` validated it (the rules are there, once), and where to log. */
export interface OpaClientOptions extends OpaConnection {
  logger: Logger;
}

/** One JSON Patch operation, as OPA's PATCH /v1/data accepts it. */
export interface JsonPatchOp {
  op: 'add' | 'remove' | 'replace';
  /** A JSON pointer relative to the PATCHed document, e.g. `/a/b` (escape with `~0` / `~1`). */
  path: string;
  value?: unknown;
}

/** JSON pointer (RFC 6901) for a data path: `~` → `~0`, `/` → `~1`. */
export function jsonPointer(path: readonly string[]): string {
  return path.map((seg) => `/${seg.replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

// Each segment is URL-encoded on its own so that a `/`, `%`, `?`, `#` or space inside a name stays part
// of that name (OPA decodes `%2F` back into the id). Empty, `.` and `..` segments are refused: proxies
// and URL normalisers would collapse or resolve them, addressing a different document than asked for.
function encodeSegments(segments: readonly string[], what: string, code: PermanentCode): string {
  return segments
    .map((seg) => {
      if (seg === '' || seg === '.' || seg === '..' || seg.includes('\0')) {
        throw new InvalidInputError(
          code,
          `${what} ${JSON.stringify(segments)}: invalid segment ${JSON.stringify(seg)}`,
        );
      }
      try {
        return `/${encodeURIComponent(seg)}`;
      } catch (err) {
        // encodeURIComponent throws URIError on lone surrogates.
        throw new InvalidInputError(code, `${what} ${JSON.stringify(segments)}: ${messageOf(err)}`, {
          cause: err,
        });
      }
    })
    .join('');
}

function policyPath(id: string): string {
  return `/policies${encodeSegments(id.split('/'), 'policy id', 'opa_invalid_policy_id')}`;
}

function dataPath(path: readonly string[]): string {
  return `/data${encodeSegments(path, 'data path', 'opa_invalid_data_path')}`;
}

function refuseRoot(path: readonly string[], what: string): void {
  if (path.length === 0) {
    // kube-mgmt's `PUT /v1/data {}` wiped every document in OPA; a root write is never what a sink means.
    throw new InvalidInputError('opa_data_root_refused', `refusing to ${what} the OPA data root (/v1/data)`);
  }
}

function toJson(value: unknown, what: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new InvalidInputError('opa_invalid_json', `${what}: not serialisable as JSON: ${messageOf(err)}`, {
      cause: err,
    });
  }
  if (text === undefined) {
    throw new InvalidInputError('opa_invalid_json', `${what}: ${typeof value} is not a JSON value`);
  }
  return text;
}

// Node reports some reasons tersely ("socket hang up") and OpenSSL's verbosely ("80CC…:error:0A00045C:SSL
// routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/…"); the operator needs the gist and the code.
function transportReason(err: unknown): string {
  let message = messageOf(err);
  const openssl = /:SSL routines:[^:]*:([^:]+):/.exec(message);
  if (openssl?.[1] !== undefined) message = `TLS handshake failed: ${openssl[1]}`;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
}

// A keep-alive socket that OPA closed while idle (e.g. OPA restarted) fails on first reuse; one retry on
// a fresh socket is what Node's documentation recommends, and every call here is safe to replay.
function isStaleSocketError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

interface Exchange {
  method: string;
  /** Path below the base URL's path, already encoded, e.g. `/policies/a/b`; or absolute for `/health`. */
  path: string;
  body?: string;
  contentType?: string;
  /** See `ReplayGuard`. */
  beforeReplay?: ReplayGuard['beforeReplay'];
}

/**
 * For a write that must not reach another OPA process than the one before (OPA may have restarted,
 * empty, on the same address): whenever the call would go out on a new connection (none kept alive, or
 * the kept-alive one turned out reset), `beforeReplay` is asked first, and the call is sent only if it
 * resolves true; otherwise it fails as `opa_unreachable`, nothing sent.
 */
export interface ReplayGuard {
  beforeReplay: () => Promise<boolean>;
}

interface Answer {
  status: number;
  text: string;
}

/**
 * The bearer token of a token file: its first line, trimmed, like kubectl's --token-file (a trailing
 * newline or a comment line after it is common). `force` reads the file even if it looks unchanged
 * (after a 401). Rejects with OpaTokenFileError (retryable: the file may be fixed or appear later).
 */
async function fileToken(reader: TokenFileReader, force: boolean): Promise<string> {
  let lines: readonly string[];
  try {
    ({ lines } = await reader.read(force));
  } catch (err) {
    const reason = err instanceof TokenFileError ? err.reason : messageOf(err);
    throw new OpaTokenFileError(reader.file, reason, err);
  }
  const token = lines[0] ?? '';
  if (token === '') throw new OpaTokenFileError(reader.file, 'the first line is empty');
  return token;
}

/** A client of one OPA server's REST API (v1). Create one per OPA; `close()` it on shutdown. */
export class OpaClient {
  private readonly base: URL;
  /** Where to connect, from the base URL (hostname without IPv6 brackets). */
  private readonly target: Pick<http.RequestOptions, 'protocol' | 'hostname' | 'port'>;
  /** The base URL's path without the trailing slash, e.g. `/v1`. */
  private readonly basePath: string;
  /** Where `/health` lives: the base path without its `/v1` suffix. */
  private readonly rootPath: string;
  private readonly transport: typeof http | typeof https;
  private readonly agent: http.Agent;
  private readonly timeoutMs: number;
  private readonly token: string | undefined;
  private readonly tokenFile: TokenFileReader | undefined;
  private readonly logger: Logger;
  private opened = 0;

  /**
   * Takes options that `parseArgs` validated (see `OpaConnection`), and reads the CA and client
   * certificate files: throws ConfigError listing every file that cannot be read or used.
   */
  constructor(options: OpaClientOptions) {
    const base = new URL(options.url);
    // Only a programmer's mistake gets here: every rule on the options is checked by parseArgs.
    assert(
      /^https?:$/.test(base.protocol) && options.timeoutMs > 0,
      'OpaClient takes a validated OpaConnection',
    );
    const problems: string[] = [];
    const read = (file: string | undefined, what: string): string | undefined => {
      if (file === undefined) return undefined;
      try {
        return readFileSync(file, 'utf8');
      } catch (err) {
        problems.push(`${what} ${file} cannot be read: ${messageOf(err)}`);
        return undefined;
      }
    };
    const ca = read(options.caFile, 'OPA CA file');
    const cert = read(options.clientCertFile, 'OPA client certificate file');
    const key = read(options.clientKeyFile, 'OPA client key file');
    const tlsOptions: tls.SecureContextOptions = {
      // `ca` replaces Node's trust store, so the roots are passed along to add to them, not replace them.
      ...(ca === undefined ? {} : { ca: [...tls.rootCertificates, ca] }),
      ...(cert === undefined || key === undefined ? {} : { cert, key }),
    };
    try {
      // Fails now on a PEM that is not a certificate or a key that does not match, instead of on every call.
      tls.createSecureContext(tlsOptions);
    } catch (err) {
      const files = [options.caFile, options.clientCertFile, options.clientKeyFile].filter(
        (f) => f !== undefined,
      );
      problems.push(`OPA TLS files (${files.join(', ')}) are unusable: ${messageOf(err)}`);
    }
    if (problems.length > 0) throw new ConfigError(problems);

    this.base = base;
    this.target = {
      protocol: base.protocol,
      hostname: base.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: base.port,
    };
    // A URL without a path has the path '/'.
    this.basePath = base.pathname.replace(/\/+$/, '');
    this.rootPath = this.basePath.replace(/\/v1$/, '');
    this.timeoutMs = options.timeoutMs;
    this.token = options.token;
    this.tokenFile = options.tokenFile === undefined ? undefined : new TokenFileReader(options.tokenFile);
    this.logger = options.logger;
    if (base.protocol === 'https:') {
      this.transport = https;
      this.agent = new https.Agent({
        keepAlive: true,
        ...tlsOptions,
        rejectUnauthorized: options.allowInsecure !== true,
      });
    } else {
      this.transport = http;
      this.agent = new http.Agent({ keepAlive: true });
    }
  }

  /** PUT /v1/policies/<id>: loads or replaces a module. A compile error is an OpaHttpError (400, OPA's body). */
  async putPolicy(id: string, text: string, signal?: AbortSignal, guard?: ReplayGuard): Promise<void> {
    await this.call(
      {
        method: 'PUT',
        path: policyPath(id),
        body: text,
        contentType: 'text/plain',
        ...(guard === undefined ? {} : { beforeReplay: guard.beforeReplay }),
      },
      signal,
    );
  }

  /** DELETE /v1/policies/<id>. Already gone (404) counts as done. */
  async deletePolicy(id: string, signal?: AbortSignal): Promise<void> {
    await this.call({ method: 'DELETE', path: policyPath(id) }, signal, [404]);
  }

  /** The ids of every module loaded in OPA, sorted (OPA's order is not stable across restarts). */
  async listPolicyIds(signal?: AbortSignal): Promise<string[]> {
    const exchange = { method: 'GET', path: '/policies' };
    const answer = await this.call(exchange, signal);
    const result = this.parseResult(exchange, answer).result;
    if (!Array.isArray(result)) throw this.badResponse(exchange, 'no "result" list of policies');
    const ids = result.map((p: unknown) => (p as { id?: unknown } | null)?.id);
    if (!ids.every((id): id is string => typeof id === 'string')) {
      throw this.badResponse(exchange, 'a policy without an "id"');
    }
    return ids.sort();
  }

  /** The raw text of a module, or undefined if OPA has no module with this id. */
  async getPolicy(id: string, signal?: AbortSignal): Promise<string | undefined> {
    const exchange = { method: 'GET', path: policyPath(id) };
    const answer = await this.call(exchange, signal, [404]);
    if (answer.status === 404) return undefined;
    const raw = (this.parseResult(exchange, answer).result as { raw?: unknown } | undefined)?.raw;
    if (typeof raw !== 'string') throw this.badResponse(exchange, 'no "result.raw" text');
    return raw;
  }

  /** PUT /v1/data/<path>: creates or replaces the document at `path`. Refuses the data root. */
  async putData(path: readonly string[], value: unknown, signal?: AbortSignal): Promise<void> {
    refuseRoot(path, 'PUT');
    const p = dataPath(path);
    const body = toJson(value, `data at ${JSON.stringify(path)}`);
    await this.call({ method: 'PUT', path: p, body, contentType: 'application/json' }, signal);
  }

  /**
   * Removes the document at `path` and nothing else (its siblings stay), with a JSON Patch remove on
   * /v1/data. Already gone (404) counts as done. Refuses the data root.
   */
  async removeData(path: readonly string[], signal?: AbortSignal): Promise<void> {
    refuseRoot(path, 'remove');
    dataPath(path); // the same segment rules as every other data call
    const body = toJson([{ op: 'remove', path: jsonPointer(path) }], 'patch');
    await this.call({ method: 'PATCH', path: '/data', body, contentType: 'application/json' }, signal, [404]);
  }

  /**
   * PATCH /v1/data/<path> with a JSON Patch; op paths are relative to `path`. An op that would replace or
   * remove the whole data root (empty `path` and an op path of `""` or `"/"`) is refused.
   */
  async patchData(path: readonly string[], ops: readonly JsonPatchOp[], signal?: AbortSignal): Promise<void> {
    if (path.length === 0 && ops.some((op) => op.path === '' || op.path === '/')) {
      throw new InvalidInputError(
        'opa_data_root_refused',
        'refusing to patch the OPA data root (/v1/data) as a whole',
      );
    }
    const p = path.length === 0 ? '/data' : dataPath(path);
    const body = toJson(ops, `patch at ${JSON.stringify(path)}`);
    await this.call({ method: 'PATCH', path: p, body, contentType: 'application/json' }, signal);
  }

  /** GET /v1/data/<path>; `defined` is false when OPA's answer has no "result" (the document does not exist). */
  async getData(
    path: readonly string[],
    signal?: AbortSignal,
  ): Promise<{ defined: boolean; value?: unknown }> {
    const exchange = { method: 'GET', path: path.length === 0 ? '/data' : dataPath(path) };
    const answer = await this.call(exchange, signal);
    const parsed = this.parseResult(exchange, answer);
    return 'result' in parsed ? { defined: true, value: parsed.result } : { defined: false };
  }

  /** POST /v1/data/<path> with `{"input": input}`; the decision, or undefined when it is undefined. */
  async postData(path: readonly string[], input: unknown, signal?: AbortSignal): Promise<unknown> {
    const body = toJson({ input }, `input for ${JSON.stringify(path)}`);
    const exchange = {
      method: 'POST',
      path: path.length === 0 ? '/data' : dataPath(path),
      body,
      contentType: 'application/json',
    };
    const answer = await this.call(exchange, signal);
    return this.parseResult(exchange, answer).result;
  }

  /**
   * The Rego version OPA parses with: 0 when it runs with `--v0-compatible`, else 1. Told by an ad-hoc
   * query that only v0 parses (`every` is a keyword in v1): `POST /v1/query`, which writes nothing.
   *
   * @example
   * const v0 = (await client.regoVersion(signal)) === 0;
   */
  async regoVersion(signal?: AbortSignal): Promise<0 | 1> {
    const exchange = {
      method: 'POST',
      path: '/query',
      body: toJson({ query: 'every := 1' }, 'the Rego version query'),
      contentType: 'application/json',
    };
    const answer = await this.call(exchange, signal, [400]);
    if (answer.status !== 400) return 0;
    const body = parseOpaErrorBody(answer.status, answer.text);
    const parseError = (body.errors ?? []).some((e) => (e as { code?: unknown }).code === 'rego_parse_error');
    if (!parseError)
      throw new OpaHttpError(
        exchange.method,
        this.displayUrl(`${this.basePath}/query`),
        `${this.basePath}/query`,
        400,
        body,
      );
    return 1;
  }

  /**
   * GET /health at the server root (not under /v1). True on 200, false on any failure to get one. A caller's
   * abort still rejects with its reason, as on every call, so a cancelled loop stops instead of reading "unhealthy".
   */
  async health(signal?: AbortSignal): Promise<boolean> {
    try {
      const answer = await this.call({ method: 'GET', path: `${this.rootPath}/health` }, signal, [], true);
      return answer.status === 200;
    } catch (err) {
      if (signal?.aborted === true && err === signal.reason) throw err;
      return false;
    }
  }

  /**
   * How many connections to OPA this client has opened so far. A call that goes out on a new connection
   * may reach another OPA process than the calls before it (OPA restarted on the same address, and the
   * old connection died with it): the pusher checks its marker before it writes on one.
   */
  connectionsOpened(): number {
    return this.opened;
  }

  /** Destroys the agent's pooled sockets. Calls made afterwards open new connections. */
  close(): void {
    this.agent.destroy();
  }

  // ---------------------------------------------------------------------------------------------

  private displayUrl(path: string): string {
    // Never print credentials a user put into the URL.
    return `${this.base.protocol}//${this.base.host}${path}`;
  }

  private async bearer(force: boolean, optional: boolean): Promise<string | undefined> {
    if (this.tokenFile === undefined) return this.token;
    try {
      return await fileToken(this.tokenFile, force);
    } catch (err) {
      // /health is often allowed anonymously; a broken token file must not make OPA look unhealthy.
      if (optional) return undefined;
      throw err;
    }
  }

  /**
   * One call: sends, classifies the answer, logs. Resolves with 2xx answers and the `acceptStatuses`;
   * rejects with OpaHttpError (4xx), OpaUnavailableError (transport, timeout, 5xx) or the caller's abort reason.
   */
  private async call(
    exchange: Exchange,
    signal: AbortSignal | undefined,
    acceptStatuses: readonly number[] = [],
    absolutePath = false,
  ): Promise<Answer> {
    signal?.throwIfAborted();
    const path = absolutePath ? exchange.path : `${this.basePath}${exchange.path}`;
    const url = this.displayUrl(path);
    const started = performance.now();
    let logged = false;
    const log = (fields: Record<string, unknown>): void => {
      logged = true;
      this.logger.debug(
        { method: exchange.method, path, durationMs: Math.round(performance.now() - started), ...fields },
        'opa call',
      );
    };
    try {
      let token = await this.bearer(false, absolutePath);
      let answer = await this.send(exchange, path, url, token, signal);
      if (answer.status === 401 && this.tokenFile !== undefined && !absolutePath) {
        // The token may have rotated since the file was last checked: read it now, and if it changed,
        // retry once with the new one rather than failing until the next check.
        const fresh = await this.bearer(true, false);
        if (fresh !== token) {
          token = fresh;
          answer = await this.send(exchange, path, url, token, signal);
        }
      }
      log({ status: answer.status });
      if ((answer.status >= 200 && answer.status < 300) || acceptStatuses.includes(answer.status)) {
        return answer;
      }
      const body = parseOpaErrorBody(answer.status, answer.text);
      if (answer.status >= 500) {
        throw new OpaUnavailableError(
          'opa_server_error',
          exchange.method,
          url,
          `OPA answered ${answer.status} ${body.code}: ${body.message}`,
          { status: answer.status, body },
        );
      }
      throw new OpaHttpError(exchange.method, url, path, answer.status, body);
    } catch (err) {
      // Calls that got an answer were logged above; this logs the ones that got none.
      if (!logged) log({ error: err instanceof OpaSyncError ? err.code : messageOf(err) });
      throw err;
    }
  }

  /** The HTTP exchange itself, bounded by timeoutMs and the caller's signal. */
  private send(
    exchange: Exchange,
    path: string,
    url: string,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Answer> {
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    if (exchange.contentType !== undefined) headers['content-type'] = exchange.contentType;
    if (exchange.body !== undefined) headers['content-length'] = Buffer.byteLength(exchange.body);

    return new Promise<Answer>((resolve, reject) => {
      let current: http.ClientRequest | undefined;
      let settled = false;
      const finish = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        return true;
      };
      const fail = (err: unknown): void => {
        if (!finish()) return;
        current?.destroy();
        // The caller's abort reason is passed on unchanged, whatever the caller chose it to be.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(err);
      };
      // The caller's signal and the timeout are combined by hand rather than with AbortSignal.any: the
      // listener on the caller's long-lived loop signal is removed when the call ends (AbortSignal.any
      // keeps dependants of a long-lived signal alive, nodejs/node#55351), and we know which one fired.
      const onAbort = (): void => fail(signal?.reason);
      const timer = setTimeout(
        () =>
          fail(
            new OpaUnavailableError(
              'opa_timeout',
              exchange.method,
              url,
              `no answer within ${this.timeoutMs} ms`,
            ),
          ),
        this.timeoutMs,
      );
      if (signal?.aborted === true) {
        // Aborted while the token was being read: an 'abort' listener added now would never fire.
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });

      const sendAgainIfSameOpa = (guard: ReplayGuard['beforeReplay'], cause: unknown): void => {
        guard().then((same) => {
          if (settled) return;
          if (same) {
            attempt(true);
            return;
          }
          fail(
            new OpaUnavailableError(
              'opa_unreachable',
              exchange.method,
              url,
              'OPA no longer holds what opa-sync pushed (it restarted): not sent before its data is back',
              cause === undefined ? {} : { cause },
            ),
          );
        }, fail);
      };
      const attempt = (retry: boolean): void => {
        const req = this.transport.request({
          ...this.target,
          path,
          method: exchange.method,
          headers,
          agent: this.agent,
        });
        current = req;
        // Held back: destroyed before it was sent, to ask the guard first (see ReplayGuard).
        let heldBack = false;
        req.once('socket', () => {
          if (req.reusedSocket) return;
          this.opened += 1;
          // A guarded write goes out on a new connection only after the guard said it is the same OPA:
          // the guard's own call opens the connection that the write then reuses.
          if (!retry && exchange.beforeReplay !== undefined) {
            heldBack = true;
            req.destroy();
            sendAgainIfSameOpa(exchange.beforeReplay, undefined);
          }
        });
        req.on('error', (err) => {
          if (settled || heldBack) return;
          if (!retry && req.reusedSocket && isStaleSocketError(err)) {
            if (exchange.beforeReplay === undefined) attempt(true);
            else sendAgainIfSameOpa(exchange.beforeReplay, err);
            return;
          }
          fail(
            new OpaUnavailableError('opa_unreachable', exchange.method, url, transportReason(err), {
              cause: err,
            }),
          );
        });
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', (err) => {
            fail(
              new OpaUnavailableError('opa_unreachable', exchange.method, url, transportReason(err), {
                cause: err,
              }),
            );
          });
          res.on('close', () => {
            if (!res.complete) {
              fail(
                new OpaUnavailableError(
                  'opa_unreachable',
                  exchange.method,
                  url,
                  'the connection closed mid-answer',
                ),
              );
            }
          });
          res.on('end', () => {
            if (finish())
              resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
          });
        });
        req.end(exchange.body);
      };
      attempt(false);
    });
  }

  private parseResult(exchange: Exchange, answer: Answer): { result?: unknown } {
    let parsed: unknown;
    try {
      parsed = JSON.parse(answer.text);
    } catch (err) {
      throw this.badResponse(exchange, `the body is not JSON: ${messageOf(err)}`, err);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw this.badResponse(exchange, 'the body is not a JSON object');
    }
    return parsed;
  }

  private badResponse(exchange: Exchange, reason: string, cause?: unknown): OpaUnavailableError {
    return new OpaUnavailableError(
      'opa_bad_response',
      exchange.method,
      this.displayUrl(`${this.basePath}${exchange.path}`),
      `unexpected answer from OPA: ${reason}`,
      cause === undefined ? {} : { cause },
    );
  }
}
