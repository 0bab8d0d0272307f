// A small client of the OCI distribution API, only what pushing an artifact needs: does a blob or a
// tag exist (HEAD), upload a blob (POST then a monolithic PUT), put a manifest. No npm library does
// this well (see the README's "Publishing to an OCI registry"), so it is node:http(s) with one
// keep-alive agent per registry, as the OPA client is: Node 20's fetch cannot take a CA file without
// another dependency. Login follows the registry's challenge: a 401 with `WWW-Authenticate: Basic`
// is answered with the user and password, one with `Bearer realm=…` by a token fetched from the realm
// (the distribution token-auth flow); the token is kept per repository until the registry refuses it.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { ConfigError, PermanentError, RetryableError, messageOf } from '../util/errors.js';
import { basicAuthorization, parseChallenge, type Credential, type Credentials } from './credentials.js';

export interface OciClientOptions {
  credentials: Credentials;
  /** http instead of https (for a registry on loopback in tests). */
  plainHttp?: boolean | undefined;
  /** PEM CA certificates trusted besides the system's. */
  caFile?: string | undefined;
  /** Time limit of each request (default 30 s). */
  timeoutMs?: number | undefined;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

interface Exchange {
  method: string;
  /** An absolute URL, or a path on the registry. */
  url: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

/** Registry answers are small JSON documents; a bigger body is not read to the end. */
const MAX_ANSWER_BYTES = 1024 * 1024;

function header(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** The registry's own error text (`{"errors":[{"code","message"}]}`), or the start of the body. */
function registryMessage(body: Buffer): string {
  const text = body.toString('utf8');
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const first = parsed.errors?.[0];
    if (first !== undefined) return [first.code, first.message].filter(Boolean).join(': ');
  } catch {
    // not the spec's error body
  }
  return text.slice(0, 200).trim();
}

/** One client per registry host. `close()` it when done. */
export class OciClient {
  private readonly base: URL;
  private readonly transport: typeof http | typeof https;
  private readonly agent: http.Agent;
  private readonly timeoutMs: number;
  /** The Authorization value that worked, per repository (a bearer token is scoped to one). */
  private readonly authorization = new Map<string, string>();

  constructor(
    readonly registry: string,
    private readonly options: OciClientOptions,
  ) {
    this.base = new URL(`${options.plainHttp === true ? 'http' : 'https'}://${registry}`);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    if (options.plainHttp === true) {
      this.transport = http;
      this.agent = new http.Agent({ keepAlive: true });
    } else {
      let ca: string | undefined;
      if (options.caFile !== undefined) {
        try {
          ca = readFileSync(options.caFile, 'utf8');
          tls.createSecureContext({ ca });
        } catch (err) {
          throw new ConfigError([`--oci-ca-file ${options.caFile} is unusable: ${messageOf(err)}`]);
        }
      }
      this.transport = https;
      this.agent = new https.Agent({
        keepAlive: true,
        ...(ca === undefined ? {} : { ca: [...tls.rootCertificates, ca] }),
      });
    }
  }

  close(): void {
    this.agent.destroy();
  }

  /** True when the repository has the blob. */
  async hasBlob(repo: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const answer = await this.call(
      repo,
      { method: 'HEAD', url: `/v2/${repo}/blobs/${digest}` },
      signal,
      [404],
    );
    return answer.status === 200;
  }

  /** Uploads a blob in one PUT (after the POST that opens the upload). */
  async putBlob(repo: string, digest: string, bytes: Buffer, signal?: AbortSignal): Promise<void> {
    const opened = await this.call(repo, { method: 'POST', url: `/v2/${repo}/blobs/uploads/` }, signal);
    if (opened.status !== 202) throw this.unexpected('POST', `/v2/${repo}/blobs/uploads/`, opened);
    const location = header(opened.headers, 'location');
    if (location === undefined) {
      throw new RetryableError(
        'oci_registry_error',
        `${this.registry}: the blob upload of ${repo} gave no Location`,
      );
    }
    const target = new URL(location, this.base);
    target.searchParams.set('digest', digest);
    const put = await this.call(
      repo,
      {
        method: 'PUT',
        url: target.href,
        headers: { 'content-type': 'application/octet-stream' },
        body: bytes,
      },
      signal,
    );
    if (put.status !== 201) throw this.unexpected('PUT', `blob ${digest} of ${repo}`, put);
  }

  /** The digest the tag (or digest) points at, or undefined when the repository has no such manifest. */
  async manifestDigest(
    repo: string,
    reference: string,
    mediaType: string,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const answer = await this.call(
      repo,
      { method: 'HEAD', url: `/v2/${repo}/manifests/${reference}`, headers: { accept: mediaType } },
      signal,
      [404],
    );
    if (answer.status === 404) return undefined;
    return header(answer.headers, 'docker-content-digest');
  }

  /** Puts a manifest under a tag. */
  async putManifest(
    repo: string,
    reference: string,
    mediaType: string,
    bytes: Buffer,
    signal?: AbortSignal,
  ): Promise<void> {
    const answer = await this.call(
      repo,
      {
        method: 'PUT',
        url: `/v2/${repo}/manifests/${reference}`,
        headers: { 'content-type': mediaType },
        body: bytes,
      },
      signal,
    );
    if (answer.status !== 201) throw this.unexpected('PUT', `manifest ${repo}:${reference}`, answer);
  }

  /**
   * One exchange, logged in as the registry asks: on a 401 the challenge is answered once (Basic, or a
   * Bearer token from the realm) and the request sent again. 2xx and `allowed` statuses are returned;
   * anything else is an error that names the registry, the request and the registry's reason.
   */
  private async call(
    repo: string,
    exchange: Exchange,
    signal: AbortSignal | undefined,
    allowed: number[] = [],
  ): Promise<Answer> {
    const known = this.authorization.get(repo);
    let answer = await this.send(exchange, known, signal);
    if (answer.status === 401) {
      const authorization = await this.login(repo, answer, signal);
      answer = await this.send(exchange, authorization, signal);
      if (answer.status === 401 || answer.status === 403) {
        this.authorization.delete(repo);
        throw new RetryableError(
          'oci_auth_failed',
          `${this.registry} refused the credentials for ${repo} (${exchange.method} answered ${answer.status}${this.reason(answer)})`,
          { status: answer.status },
        );
      }
      this.authorization.set(repo, authorization);
    }
    if ((answer.status >= 200 && answer.status < 300) || allowed.includes(answer.status)) return answer;
    throw this.unexpected(exchange.method, exchange.url, answer);
  }

  private reason(answer: Answer): string {
    const message = registryMessage(answer.body);
    return message === '' ? '' : `: ${message}`;
  }

  /** The Authorization value that answers a 401's challenge. */
  private async login(repo: string, answer: Answer, signal: AbortSignal | undefined): Promise<string> {
    const credential = await this.options.credentials.forHost(this.registry);
    const raw = header(answer.headers, 'www-authenticate') ?? '';
    const challenge = parseChallenge(raw);
    if (credential.kind === 'bearer') return `Bearer ${credential.token}`;
    if (challenge?.scheme === 'bearer' && challenge.params.realm !== undefined) {
      return `Bearer ${await this.fetchToken(repo, challenge.params, credential, signal)}`;
    }
    if (credential.kind === 'basic') return basicAuthorization(credential.username, credential.password);
    throw new RetryableError(
      'oci_auth_failed',
      `${this.registry} asks for credentials (${raw === '' ? 'no WWW-Authenticate' : raw}) and none are configured for it: ` +
        'give --oci-docker-config, --oci-username with --oci-password-file, or --oci-token-file',
      { status: 401 },
    );
  }

  /** The distribution token-auth flow: GET realm?service=…&scope=repository:<repo>:pull,push. */
  private async fetchToken(
    repo: string,
    params: Record<string, string>,
    credential: Credential,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const realm = new URL(params.realm ?? '');
    if (params.service !== undefined) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', `repository:${repo}:pull,push`);
    const authorization =
      credential.kind === 'basic' ? basicAuthorization(credential.username, credential.password) : undefined;
    const answer = await this.send({ method: 'GET', url: realm.href }, authorization, signal);
    if (answer.status !== 200) {
      throw new RetryableError(
        'oci_auth_failed',
        `the token service ${realm.origin}${realm.pathname} of ${this.registry} refused a token for ${repo} (${answer.status}${this.reason(answer)})`,
        { status: answer.status },
      );
    }
    let token: unknown;
    try {
      const parsed = JSON.parse(answer.body.toString('utf8')) as { token?: unknown; access_token?: unknown };
      token = parsed.token ?? parsed.access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string' || token === '') {
      throw new RetryableError(
        'oci_registry_error',
        `the token service of ${this.registry} answered without a token`,
      );
    }
    return token;
  }

  private unexpected(method: string, what: string, answer: Answer): Error {
    const message = `${this.registry}: ${method} ${what} answered ${answer.status}${this.reason(answer)}`;
    if (answer.status >= 500 || answer.status === 429) {
      return new RetryableError('oci_registry_error', message, { status: answer.status });
    }
    return new PermanentError('oci_refused', message, { status: answer.status });
  }

  /** One HTTP request, bounded by the timeout and the signal. Transport failures are oci_unreachable. */
  private send(
    exchange: Exchange,
    authorization: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Answer> {
    const url = new URL(exchange.url, this.base);
    const sameOrigin = url.origin === this.base.origin;
    const transport = url.protocol === 'http:' ? http : https;
    const headers: Record<string, string> = { ...exchange.headers };
    if (authorization !== undefined) headers.authorization = authorization;
    if (exchange.body !== undefined) headers['content-length'] = String(exchange.body.length);
    return new Promise<Answer>((resolve, reject) => {
      signal?.throwIfAborted();
      const req = transport.request(
        url,
        {
          method: exchange.method,
          headers,
          // The token realm may live elsewhere: the registry's agent is for the registry only.
          ...(sameOrigin && transport === this.transport ? { agent: this.agent } : {}),
          timeout: this.timeoutMs,
          ...(signal === undefined ? {} : { signal }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size <= MAX_ANSWER_BYTES) chunks.push(chunk);
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on('error', (err) => reject(this.transportError(exchange, url, err)));
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(this.transportError(exchange, url, err)));
      req.end(exchange.body);
    });
  }

  private transportError(exchange: Exchange, url: URL, err: Error): Error {
    if (err.name === 'AbortError') return err;
    return new RetryableError(
      'oci_unreachable',
      `${this.registry}: ${exchange.method} ${url.origin}${url.pathname} failed: ${err.message}`,
      {
        cause: err,
      },
    );
  }
}
