// What opa-sync sends an OCI registry to be let in: a bearer token from a file (--oci-token-file, sent
// as it is), a user and password (--oci-username with --oci-password-file), or the `auths` entry of a
// docker config.json for the registry's host (--oci-docker-config: `auth` = base64 of user:password,
// or `username` and `password`). Files are read on each new login, so rotated secrets are picked up
// without a restart. The registry's challenge (`WWW-Authenticate`) is parsed here too: `Basic`, or
// `Bearer realm=…,service=…,scope=…` (the token-auth flow, a token fetched from the realm with the
// user and password).
import { readFile } from 'node:fs/promises';
import { OpaSyncError, RetryableError, messageOf } from '../util/errors.js';
import { TokenFileReader } from '../util/token-file.js';

export interface CredentialOptions {
  tokenFile?: string | undefined;
  username?: string | undefined;
  passwordFile?: string | undefined;
  dockerConfig?: string | undefined;
}

/** What a registry host gets. */
export type Credential =
  | { kind: 'none' }
  | { kind: 'bearer'; token: string }
  | { kind: 'basic'; username: string; password: string };

/** A parsed `WWW-Authenticate` challenge. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` value such as `Bearer realm="https://auth/token",service="registry"`.
 * Only the first challenge is read (registries send one).
 */
export function parseChallenge(header: string): Challenge | undefined {
  const match = /^\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+(.*))?$/s.exec(header);
  if (match === null) return undefined;
  const scheme = (match[1] ?? '').toLowerCase();
  const params: Record<string, string> = {};
  const rest = match[2] ?? '';
  const param = /\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)/gy;
  for (let m = param.exec(rest); m !== null && m[0] !== ''; m = param.exec(rest)) {
    const key = (m[1] ?? '').toLowerCase();
    params[key] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
  }
  return { scheme, params };
}

/** The host[:port] a docker config.json `auths` key stands for (`https://index.docker.io/v1/` → `index.docker.io`). */
export function dockerAuthsHost(key: string): string {
  return key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/.*$/, '')
    .toLowerCase();
}

interface DockerAuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
}

/** The credential of `host` in a docker config.json's text; undefined when it has none for the host. */
export function dockerConfigCredential(text: string, host: string, file: string): Credential | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new RetryableError(
      'oci_credentials_unusable',
      `docker config ${file} is not JSON: ${messageOf(err)}`,
    );
  }
  const auths = (parsed as { auths?: unknown } | null)?.auths;
  if (auths === undefined) return undefined;
  if (typeof auths !== 'object' || auths === null) {
    throw new RetryableError('oci_credentials_unusable', `docker config ${file}: "auths" is not an object`);
  }
  const wanted = host.toLowerCase();
  for (const [key, value] of Object.entries(auths as Record<string, DockerAuthEntry>)) {
    if (dockerAuthsHost(key) !== wanted) continue;
    if (typeof value.auth === 'string' && value.auth !== '') {
      const decoded = Buffer.from(value.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) {
        throw new RetryableError(
          'oci_credentials_unusable',
          `docker config ${file}: the "auth" of ${JSON.stringify(key)} is not base64 of user:password`,
        );
      }
      return { kind: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (typeof value.username === 'string' && typeof value.password === 'string') {
      return { kind: 'basic', username: value.username, password: value.password };
    }
    throw new RetryableError(
      'oci_credentials_unusable',
      `docker config ${file}: the entry ${JSON.stringify(key)} has neither "auth" nor "username" and "password"`,
    );
  }
  return undefined;
}

/** Gives the credential of a registry host, reading the files again when they change. */
export class Credentials {
  private readonly token: TokenFileReader | undefined;
  private readonly password: TokenFileReader | undefined;

  constructor(private readonly options: CredentialOptions) {
    this.token = options.tokenFile === undefined ? undefined : new TokenFileReader(options.tokenFile);
    this.password =
      options.passwordFile === undefined ? undefined : new TokenFileReader(options.passwordFile);
  }

  /** The credential for `host` (`host[:port]`). Throws oci_credentials_unusable naming the file. */
  async forHost(host: string): Promise<Credential> {
    try {
      if (this.token !== undefined) {
        const token = (await this.token.read()).lines[0] ?? '';
        if (token === '') throw new Error('its first line is empty');
        return { kind: 'bearer', token };
      }
      if (this.password !== undefined && this.options.username !== undefined) {
        const password = (await this.password.read()).lines[0] ?? '';
        return { kind: 'basic', username: this.options.username, password };
      }
    } catch (err) {
      if (err instanceof OpaSyncError && err.code === 'oci_credentials_unusable') throw err;
      const file = this.options.tokenFile ?? this.options.passwordFile ?? '';
      throw new RetryableError(
        'oci_credentials_unusable',
        `OCI credentials file ${file}: ${messageOf(err)}`,
        {
          cause: err,
        },
      );
    }
    if (this.options.dockerConfig !== undefined) {
      const file = this.options.dockerConfig;
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        throw new RetryableError(
          'oci_credentials_unusable',
          `docker config ${file} cannot be read: ${messageOf(err)}`,
          {
            cause: err,
          },
        );
      }
      return dockerConfigCredential(text, host, file) ?? { kind: 'none' };
    }
    return { kind: 'none' };
  }
}

/** The `Authorization` value of a basic credential. */
export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}
