// The token service of the distribution registry's token-auth mode (the docker token specification),
// for tests: GET /token?service=…&scope=repository:<name>:<actions> with the user's Basic credentials
// answers a JWT (ES256, the signing certificate in `x5c`) that grants the asked actions; the registry
// (real, configured with `auth.token` and this CA as its root bundle) verifies it. Wrong credentials get
// a 401. This stands in for the registry vendor's auth server, which no Go module of the tools ships.
import { createPrivateKey, createSign, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServingCert, type CertificateAuthority } from './certs.js';

export interface TokenService {
  /** `http://127.0.0.1:<port>/token`: the realm of the registry's challenge. */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** Token requests answered, with or without a token. */
  readonly requests: { user: string | undefined; scope: string | null; granted: boolean }[];
  stop(): Promise<void>;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

export async function startTokenService(
  ca: CertificateAuthority,
  users: Record<string, string>,
): Promise<TokenService> {
  const cert = await createServingCert(ca, `registry-token-${Date.now()}`);
  const key = createPrivateKey(readFileSync(cert.keyFile));
  const der = new X509Certificate(readFileSync(cert.certFile)).raw;
  const service = 'opa-sync-test-registry';
  const issuer = 'opa-sync-test-token-issuer';
  const requests: TokenService['requests'] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const auth = req.headers.authorization ?? '';
    const [user, password] = auth.startsWith('Basic ')
      ? Buffer.from(auth.slice(6), 'base64').toString('utf8').split(/:(.*)/s)
      : [undefined, undefined];
    const ok = user !== undefined && users[user] !== undefined && users[user] === password;
    const scope = url.searchParams.get('scope');
    requests.push({ user, scope, granted: ok });
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'wrong user or password' }] }));
      return;
    }
    const access = (scope ?? '')
      .split(' ')
      .filter((s) => s !== '')
      .map((s) => {
        const [type, name, actions] = s.split(':');
        return { type, name, actions: (actions ?? '').split(',') };
      });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [der.toString('base64')] };
    const claims = {
      iss: issuer,
      sub: user,
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: `${now}-${requests.length}`,
      access,
    };
    const signing = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = createSign('SHA256').update(signing).sign({ key, dsaEncoding: 'ieee-p1363' });
    const token = `${signing}.${b64url(signature)}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
