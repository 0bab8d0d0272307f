// Real OPA servers for tests: `opa run --server` on a free loopback port, of the default version or one of
// the version matrix's, optionally with TLS and bearer-token or client-certificate authentication, ready
// once /health answers.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import getPort from 'get-port';
import { OPA_VERSION, requireOpa } from '../../scripts/tools.js';
import { createServingCert, type CertificateAuthority } from './certs.js';
import { httpRequest, type HttpOptions, type HttpResponse } from './http.js';
import { startProcess, logTail, type ManagedProcess } from './processes.js';
import { StopWaiting, waitFor } from './wait.js';

export interface OpaOptions {
  /** The OPA version to run: OPA_VERSION (the default `opa`) or one of MATRIX_OPA_VERSIONS. */
  version?: string;
  /** Serve HTTPS with a certificate from this CA. */
  tlsCa?: CertificateAuthority;
  /** Require `Authorization: Bearer <token>` on every call (OPA's token authentication + a system.authz policy). */
  token?: string;
  /**
   * Require a client certificate signed by this CA (mutual TLS: `--authentication=tls`). Needs `tlsCa`;
   * cannot be combined with `token`. `request()` then presents a client certificate of its own.
   */
  clientCa?: CertificateAuthority;
  /** Extra arguments for `opa run`, e.g. `--v0-compatible`. */
  extraArgs?: string[];
  /** Files or folders loaded at start (policies, data, bundles). */
  paths?: string[];
  /** Environment variables for OPA (added to the test run's), e.g. ones its configuration substitutes. */
  env?: Readonly<Record<string, string>>;
}

export interface OpaServer {
  readonly name: string;
  /** The OPA version it runs (`v1.22.3`). */
  readonly version: string;
  /** Base URL, without the /v1 suffix. */
  readonly url: string;
  readonly process: ManagedProcess;
  readonly ca: string | undefined;
  readonly token: string | undefined;
  /** An HTTP call to this OPA with its CA and token already applied. */
  request(pathAndQuery: string, options?: HttpOptions): Promise<HttpResponse>;
  /**
   * Kills OPA with SIGKILL and starts it again, empty, on the same address; resolves once it answers.
   * `whileDown`, if given, is awaited while OPA is down (e.g. until a client has seen it gone).
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

let counter = 0;

// Token authentication alone only identifies the caller; this policy makes the token mandatory.
function authzPolicy(token: string): string {
  return `package system.authz

default allow := false

allow if input.identity == ${JSON.stringify(token)}
`;
}

export async function startOpa(runFolder: string, options: OpaOptions = {}): Promise<OpaServer> {
  const version = options.version ?? OPA_VERSION;
  const binary = requireOpa(version);
  const name = `opa-${++counter}`;
  const dir = path.join(runFolder, name);
  mkdirSync(dir, { recursive: true });
  const port = await getPort({ host: '127.0.0.1' });
  const args = ['run', '--server', `--addr=127.0.0.1:${port}`, '--disable-telemetry', '--log-level=info'];
  const scheme = options.tlsCa ? 'https' : 'http';
  if (options.tlsCa) {
    const cert = await createServingCert(options.tlsCa, name);
    args.push(`--tls-cert-file=${cert.certFile}`, `--tls-private-key-file=${cert.keyFile}`);
  }
  let clientPem: { cert: string; key: string } | undefined;
  if (options.clientCa) {
    if (!options.tlsCa) {
      throw new Error('OpaOptions.clientCa needs tlsCa: mutual TLS is only possible over https');
    }
    if (options.token !== undefined) {
      throw new Error(
        'OpaOptions.clientCa and token cannot be combined: OPA has one --authentication scheme',
      );
    }
    // Without --authorization, any certificate signed by the client CA is let in.
    args.push('--authentication=tls', `--tls-ca-cert-file=${options.clientCa.certFile}`);
    const own = await createServingCert(options.clientCa, `${name}-harness-client`);
    clientPem = { cert: readFileSync(own.certFile, 'utf8'), key: readFileSync(own.keyFile, 'utf8') };
  }
  const paths = [...(options.paths ?? [])];
  if (options.token !== undefined) {
    const authz = path.join(dir, 'authz.rego');
    writeFileSync(authz, authzPolicy(options.token));
    args.push('--authentication=token', '--authorization=basic');
    paths.push(authz);
  }
  args.push(...(options.extraArgs ?? []), ...paths);

  const url = `${scheme}://127.0.0.1:${port}`;
  const ca = options.tlsCa?.pem;
  const token = options.token;
  const request = (pathAndQuery: string, opts: HttpOptions = {}): Promise<HttpResponse> =>
    httpRequest(`${url}${pathAndQuery}`, {
      ...opts,
      ...(ca === undefined ? {} : { ca }),
      ...clientPem,
      headers: { ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), ...opts.headers },
    });
  const launch = async (): Promise<ManagedProcess> => {
    const proc = startProcess(name, binary, args, runFolder, options.env);
    try {
      await waitFor(
        `${name} to answer /health`,
        async () => {
          if (proc.hasExited())
            throw new StopWaiting(`${name} exited before it was ready:\n${logTail(proc, 20)}`);
          return (await request('/health', { timeoutMs: 1000 })).status === 200 ? true : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 50 },
      );
    } catch (err) {
      await proc.stop();
      throw err;
    }
    return proc;
  };
  let current = await launch();
  return {
    name,
    version,
    url,
    get process() {
      return current;
    },
    ca,
    token,
    request,
    async restart(whileDown) {
      // kill -9: OPA gets no chance to do anything, and comes back empty on the same port.
      process.kill(current.pid, 'SIGKILL');
      await current.exited;
      await whileDown?.();
      current = await launch();
    },
    stop: () => current.stop(),
  };
}
