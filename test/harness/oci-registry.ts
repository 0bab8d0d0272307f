// A real CNCF distribution registry for tests (the tools cache's `registry`): on a free loopback port,
// plain http (or HTTPS from a test CA), a filesystem store in the run's folder, and htpasswd users when asked; ready once /v2/
// answers. `oras()` runs the real oras CLI against it, as an independent client of what opa-sync pushed.
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import getPort from 'get-port';
import { requireTool } from '../../scripts/tools.js';
import { createServingCert, type CertificateAuthority } from './certs.js';
import { httpRequest } from './http.js';
import { logTail, startProcess, type ManagedProcess } from './processes.js';
import { runDir } from './run-dir.js';
import { StopWaiting, waitFor } from './wait.js';

const execFileAsync = promisify(execFile);
let counter = 0;

export interface OciRegistry {
  /** `127.0.0.1:<port>`: the host part of repository references. */
  readonly host: string;
  readonly process: ManagedProcess;
  /** Runs oras with the given arguments (plain http, this registry's user if any); resolves with stdout. */
  oras(args: string[], options?: { cwd?: string }): Promise<string>;
  stop(): Promise<void>;
}

export interface OciRegistryOptions {
  /** htpasswd users (bcrypt); the registry then refuses anonymous requests. */
  users?: Record<string, string>;
  /** Where its store, configuration and log go (default: the test run's folder). */
  dir?: string;
  /** Serve HTTPS with a certificate from this CA (oras then trusts the CA instead of using plain http). */
  tlsCa?: CertificateAuthority;
  /**
   * Token-auth mode: tokens from this service (its CA is the registry's root bundle); `users` is then
   * only the login oras uses (the token service checks it).
   */
  token?: { realm: string; service: string; issuer: string; rootCertFile: string };
}

export async function startOciRegistry(options: OciRegistryOptions = {}): Promise<OciRegistry> {
  const binary = requireTool('registry');
  const orasBin = requireTool('oras');
  const name = `registry-${++counter}`;
  const base = options.dir ?? runDir();
  const dir = path.join(base, name);
  mkdirSync(path.join(dir, 'store'), { recursive: true });
  const port = await getPort({ host: '127.0.0.1' });
  const users = Object.entries(options.users ?? {});
  const htpasswd = path.join(dir, 'htpasswd');
  if (users.length > 0) {
    writeFileSync(htpasswd, users.map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n') + '\n');
  }
  const tls = options.tlsCa === undefined ? undefined : await createServingCert(options.tlsCa, name);
  const config = {
    version: 0.1,
    log: { level: 'info', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: path.join(dir, 'store') }, delete: { enabled: true } },
    http: {
      addr: `127.0.0.1:${port}`,
      secret: 'opa-sync-test',
      ...(tls === undefined ? {} : { tls: { certificate: tls.certFile, key: tls.keyFile } }),
    },
    ...(users.length > 0 && options.token === undefined
      ? { auth: { htpasswd: { realm: 'opa-sync-test', path: htpasswd } } }
      : {}),
    ...(options.token === undefined
      ? {}
      : {
          auth: {
            token: {
              realm: options.token.realm,
              service: options.token.service,
              issuer: options.token.issuer,
              rootcertbundle: options.token.rootCertFile,
            },
          },
        }),
  };
  const configFile = path.join(dir, 'config.json');
  // The registry reads YAML, and JSON is YAML.
  writeFileSync(configFile, JSON.stringify(config));
  const proc = startProcess(name, binary, ['serve', configFile], base, { OTEL_TRACES_EXPORTER: 'none' });
  const host = `127.0.0.1:${port}`;
  try {
    await waitFor(
      `${name} to answer /v2/`,
      async () => {
        if (proc.hasExited())
          throw new StopWaiting(`${name} exited before it was ready:\n${logTail(proc, 20)}`);
        const res = await httpRequest(`${tls === undefined ? 'http' : 'https'}://${host}/v2/`, {
          timeoutMs: 1000,
          ...(options.tlsCa === undefined ? {} : { ca: options.tlsCa.pem }),
        });
        return res.status === 200 || res.status === 401 ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 50 },
    );
  } catch (err) {
    await proc.stop();
    throw err;
  }
  const login = users[0];
  const orasConfig = path.join(dir, 'oras-config.json');
  writeFileSync(orasConfig, '{}');
  return {
    host,
    process: proc,
    async oras(args, { cwd } = {}) {
      const full = [
        ...args,
        ...(options.tlsCa === undefined ? ['--plain-http'] : [`--ca-file=${options.tlsCa.certFile}`]),
        `--registry-config=${orasConfig}`,
        ...(login === undefined ? [] : [`--username=${login[0]}`, `--password=${login[1]}`]),
      ];
      try {
        return (
          await execFileAsync(orasBin, full, { timeout: 60_000, ...(cwd === undefined ? {} : { cwd }) })
        ).stdout;
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        throw new Error(`oras ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err });
      }
    },
    stop: () => proc.stop(),
  };
}
