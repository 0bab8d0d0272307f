// Faults a real OPA will not produce on demand, injected at a seam we own: a local HTTP server standing in
// for OPA that hangs, answers 5xx or garbage, or drops a kept-alive connection. Also what the client
// puts on the wire: the encoding of odd ids and paths, headers, and that refused calls send nothing.
import { once } from 'node:events';
import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import {
  OpaClient,
  OpaHttpError,
  OpaUnavailableError,
  jsonPointer,
  type OpaClientOptions,
} from '../../src/opa/client.js';
import { ConfigError, InvalidInputError, RetryableError } from '../../src/util/errors.js';
import { createLogger, silentLogger } from '../../src/util/logger.js';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** 1 for the first request on its connection, 2 for the second… */
  onConnection: number;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void;

interface Stub {
  /** Origin, e.g. http://127.0.0.1:12345 */
  origin: string;
  seen: Seen[];
  connections: number;
  close(): Promise<void>;
}

const stubs: Stub[] = [];

async function stub(handler: Handler): Promise<Stub> {
  const seen: Seen[] = [];
  const perSocket = new WeakMap<object, number>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const n = (perSocket.get(req.socket) ?? 0) + 1;
      perSocket.set(req.socket, n);
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        onConnection: n,
      };
      seen.push(s);
      handler(req, res, s);
    });
  });
  const result: Stub = {
    origin: '',
    seen,
    connections: 0,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  server.on('connection', () => {
    result.connections += 1;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  result.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  stubs.push(result);
  return result;
}

const json = (status: number, body: unknown): Handler => {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
};
const hang: Handler = () => undefined;

const clients: OpaClient[] = [];
function client(s: Stub, options: Partial<OpaClientOptions> = {}): OpaClient {
  const c = new OpaClient({ url: `${s.origin}/v1`, timeoutMs: 5000, logger: silentLogger(), ...options });
  clients.push(c);
  return c;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to reject, it resolved');
}

describe('OpaClient faults and wire format (stub OPA)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-client-unit-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(stubs.splice(0).map((s) => s.close()));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('timeouts and aborts', () => {
    it('rejects a hanging call with opa_timeout after about timeoutMs', async () => {
      const s = await stub(hang);
      const c = client(s, { timeoutMs: 300 });
      const started = performance.now();
      const err = await rejection(c.putPolicy('a/b/c.rego', 'package x'));
      const elapsed = performance.now() - started;
      expect(err).to.be.instanceOf(OpaUnavailableError);
      expect(err).to.be.instanceOf(RetryableError);
      expect((err as OpaUnavailableError).code).to.equal('opa_timeout');
      expect((err as Error).message).to.equal(
        `PUT ${s.origin}/v1/policies/a/b/c.rego failed: no answer within 300 ms`,
      );
      expect(elapsed).to.be.within(280, 1500);
      expect(s.seen).to.have.length(1);
    });

    it('bounds the whole answer, not only its start', async () => {
      const s = await stub((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"result": ');
        // …and never finishes.
      });
      const c = client(s, { timeoutMs: 300 });
      const err = await rejection(c.getData(['a']));
      expect((err as OpaUnavailableError).code).to.equal('opa_timeout');
    });

    it("rejects promptly with the caller's abort reason, unwrapped", async () => {
      const s = await stub(hang);
      const c = client(s, { timeoutMs: 10_000 });
      const controller = new AbortController();
      const reason = new Error('shutting down');
      setTimeout(() => controller.abort(reason), 50);
      const started = performance.now();
      const err = await rejection(c.putData(['a'], { x: 1 }, controller.signal));
      expect(err).to.equal(reason);
      expect(performance.now() - started).to.be.lessThan(1000);
      // health() does not turn a cancellation into "unhealthy" either.
      const again = await rejection(c.health(controller.signal));
      expect(again).to.equal(reason);
    });

    it('sends nothing when the signal is already aborted', async () => {
      const s = await stub(json(200, {}));
      const c = client(s);
      const controller = new AbortController();
      controller.abort();
      const err = await rejection(c.getData(['a'], controller.signal));
      expect((err as Error).name).to.equal('AbortError');
      expect(s.seen).to.have.length(0);
    });

    it("leaves no listener on the caller's signal after a call", async () => {
      const s = await stub(json(200, { result: 1 }));
      const c = client(s, { timeoutMs: 300 });
      const controller = new AbortController();
      await c.getData(['a'], controller.signal);
      expect(getEventListeners(controller.signal, 'abort')).to.have.length(0);
      const hung = await stub(hang);
      const h = client(hung, { timeoutMs: 100 });
      await rejection(h.getData(['a'], controller.signal));
      expect(getEventListeners(controller.signal, 'abort')).to.have.length(0);
    });
  });

  describe('error answers', () => {
    it('turns a 500 into a retryable opa_server_error with OPA’s body', async () => {
      const s = await stub(json(500, { code: 'internal_error', message: 'storage exploded' }));
      const err = await rejection(client(s).putData(['a', 'b'], { x: 1 }));
      expect(err).to.be.instanceOf(OpaUnavailableError);
      const e = err as OpaUnavailableError;
      expect(e.code).to.equal('opa_server_error');
      expect(e.status).to.equal(500);
      expect(e.body).to.deep.equal({ code: 'internal_error', message: 'storage exploded' });
      expect(e.message).to.equal(
        `PUT ${s.origin}/v1/data/a/b failed: OPA answered 500 internal_error: storage exploded`,
      );
    });

    it('keeps a non-JSON 5xx or 4xx body as text under opa_http_<status>', async () => {
      const s = await stub((req, res) => {
        res.writeHead(req.url === '/v1/data/gw' ? 503 : 418, { 'content-type': 'text/html' });
        res.end('<html>bad gateway</html>\n');
      });
      const c = client(s);
      const gw = (await rejection(c.getData(['gw']))) as OpaUnavailableError;
      expect(gw.code).to.equal('opa_server_error');
      expect(gw.body).to.deep.equal({ code: 'opa_http_503', message: '<html>bad gateway</html>' });
      const tea = (await rejection(c.getData(['tea']))) as OpaHttpError;
      expect(tea).to.be.instanceOf(OpaHttpError);
      expect(tea.status).to.equal(418);
      // Our code says OPA refused; what OPA (or the proxy in front) said is in the body.
      expect(tea.code).to.equal('opa_refused');
      expect(tea.body).to.deep.equal({ code: 'opa_http_418', message: '<html>bad gateway</html>' });
      expect(tea.method).to.equal('GET');
      expect(tea.path).to.equal('/v1/data/tea');
    });

    it("keeps OPA's 4xx body as sent, errors included", async () => {
      const body = {
        code: 'invalid_parameter',
        message: 'error(s) occurred while compiling module(s)',
        errors: [
          {
            code: 'rego_type_error',
            message: 'undefined function f',
            location: { file: 'a/b/c', row: 7, col: 3 },
          },
          { code: 'rego_type_error', message: 'another', location: { file: 'a/b/c', row: 9, col: 1 } },
        ],
      };
      const s = await stub(json(400, body));
      const err = (await rejection(client(s).putPolicy('a/b/c', 'package x'))) as OpaHttpError;
      expect(err.body).to.deep.equal(body);
      expect(err.code).to.equal('opa_refused');
      expect(err.message).to.equal(
        `PUT ${s.origin}/v1/policies/a/b/c: OPA answered 400 invalid_parameter: error(s) occurred while ` +
          'compiling module(s) (a/b/c:7:3: rego_type_error: undefined function f, and 1 more)',
      );
    });

    it('treats 404 as done for deletes and removes, as absent for getPolicy, and as an error elsewhere', async () => {
      const s = await stub(json(404, { code: 'resource_not_found', message: 'storage_not_found_error' }));
      const c = client(s);
      await c.deletePolicy('a/b/c.rego');
      await c.removeData(['a', 'b']);
      expect(await c.getPolicy('a/b/c.rego')).to.equal(undefined);
      const err = (await rejection(c.putData(['a'], {}))) as OpaHttpError;
      expect(err).to.be.instanceOf(OpaHttpError);
      expect(err.status).to.equal(404);
    });

    it('turns a 2xx answer that is not OPA JSON into a retryable opa_bad_response', async () => {
      const s = await stub((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>login page of some proxy</html>');
      });
      const err = (await rejection(client(s).listPolicyIds())) as OpaUnavailableError;
      expect(err).to.be.instanceOf(OpaUnavailableError);
      expect(err.code).to.equal('opa_bad_response');
    });

    it('is opa_unreachable when nothing listens', async () => {
      const s = await stub(hang);
      const origin = s.origin;
      await s.close();
      stubs.splice(0);
      const c = new OpaClient({ url: `${origin}/v1`, timeoutMs: 2000, logger: silentLogger() });
      clients.push(c);
      const err = (await rejection(c.getData(['a']))) as OpaUnavailableError;
      expect(err.code).to.equal('opa_unreachable');
      expect(err.message).to.equal(`GET ${origin}/v1/data/a failed: connect ECONNREFUSED ${origin.slice(7)}`);
      expect((err.cause as NodeJS.ErrnoException).code).to.equal('ECONNREFUSED');
      expect(await c.health()).to.equal(false);
    });
  });

  describe('kept-alive connections', () => {
    it('retries once on a fresh connection when a reused one was closed by OPA', async () => {
      // The second request on any connection is dropped without an answer, as when OPA restarted
      // between two calls and the pooled socket is stale.
      const s = await stub((req, res, seen) => {
        if (seen.onConnection > 1) {
          req.socket.destroy();
          return;
        }
        json(200, { result: seen.url })(req, res, seen);
      });
      const c = client(s);
      expect(await c.getData(['first'])).to.deep.equal({ defined: true, value: '/v1/data/first' });
      expect(await c.getData(['second'])).to.deep.equal({ defined: true, value: '/v1/data/second' });
      expect(s.connections).to.equal(2);
      expect(s.seen.map((r) => r.url)).to.deep.equal([
        '/v1/data/first',
        '/v1/data/second',
        '/v1/data/second',
      ]);
    });

    it('does not retry a connection that failed on its first request', async () => {
      const s = await stub((req) => {
        req.socket.destroy();
      });
      const err = (await rejection(client(s).getData(['a']))) as OpaUnavailableError;
      expect(err.code).to.equal('opa_unreachable');
      expect(err.message).to.include('socket hang up');
      expect(s.seen).to.have.length(1);
    });
  });

  describe('what goes on the wire', () => {
    it('encodes each id and path segment on its own', async () => {
      const s = await stub((req, res, seen) => {
        if (req.method === 'GET' && req.url?.startsWith('/v1/policies/')) {
          json(200, { result: { id: 'x', raw: 'package x' } })(req, res, seen);
          return;
        }
        json(200, {})(req, res, seen);
      });
      const c = client(s);
      await c.putPolicy('ns/my config/a b%c?d#e&f=g+h.rego', 'package x\n');
      await c.deletePolicy('ns/ünï/k.rego');
      await c.getPolicy('ns/a\\b/c.rego');
      await c.putData(['ns', 'a/b', '~x', 'c.json'], { v: 1 });
      await c.patchData(['ns', 'p q'], [{ op: 'add', path: '/k', value: 1 }]);
      await c.postData(['ns', 'rule name'], { user: 'u' });
      expect(s.seen.map((r) => `${r.method} ${r.url}`)).to.deep.equal([
        'PUT /v1/policies/ns/my%20config/a%20b%25c%3Fd%23e%26f%3Dg%2Bh.rego',
        'DELETE /v1/policies/ns/%C3%BCn%C3%AF/k.rego',
        'GET /v1/policies/ns/a%5Cb/c.rego',
        'PUT /v1/data/ns/a%2Fb/~x/c.json',
        'PATCH /v1/data/ns/p%20q',
        'POST /v1/data/ns/rule%20name',
      ]);
    });

    it('removes with a JSON pointer escaping ~ and /', async () => {
      const s = await stub(json(204, {}));
      await client(s).removeData(['ns', 'a/b', '~x']);
      expect(s.seen[0]?.method).to.equal('PATCH');
      expect(s.seen[0]?.url).to.equal('/v1/data');
      expect(s.seen[0]?.headers['content-type']).to.equal('application/json');
      expect(JSON.parse(s.seen[0]?.body ?? '')).to.deep.equal([{ op: 'remove', path: '/ns/a~1b/~0x' }]);
      expect(jsonPointer(['~1', '/'])).to.equal('/~01/~1');
    });

    it('sends raw Rego as text/plain and data as JSON', async () => {
      const s = await stub(json(200, {}));
      const c = client(s);
      const rego = 'package x\n\n# ünïcode\np := 1\n';
      await c.putPolicy('a/b/c.rego', rego);
      await c.putData(['a'], { list: [1, 'two'] });
      await c.postData(['a', 'p'], { user: 'u' });
      expect(s.seen[0]?.headers['content-type']).to.equal('text/plain');
      expect(s.seen[0]?.body).to.equal(rego);
      expect(s.seen[1]?.headers['content-type']).to.equal('application/json');
      expect(JSON.parse(s.seen[1]?.body ?? '')).to.deep.equal({ list: [1, 'two'] });
      expect(JSON.parse(s.seen[2]?.body ?? '')).to.deep.equal({ input: { user: 'u' } });
    });

    it('refuses the data root, empty/dot segments and non-JSON values without sending anything', async () => {
      const s = await stub(json(200, {}));
      const c = client(s);
      const refused = async (p: Promise<unknown>, code: string): Promise<void> => {
        const err = await rejection(p);
        expect(err).to.be.instanceOf(InvalidInputError);
        expect((err as InvalidInputError).code).to.equal(code);
      };
      await refused(c.putData([], {}), 'opa_data_root_refused');
      await refused(c.removeData([]), 'opa_data_root_refused');
      await refused(c.patchData([], [{ op: 'remove', path: '/' }]), 'opa_data_root_refused');
      await refused(c.putData(['a', ''], {}), 'opa_invalid_data_path');
      await refused(c.removeData(['a', '..']), 'opa_invalid_data_path');
      await refused(c.getData(['.']), 'opa_invalid_data_path');
      await refused(c.putPolicy('a//b.rego', 'package x'), 'opa_invalid_policy_id');
      await refused(c.putPolicy('', 'package x'), 'opa_invalid_policy_id');
      await refused(c.deletePolicy('a/../b.rego'), 'opa_invalid_policy_id');
      await refused(c.putPolicy('a/\ud800/b', 'package x'), 'opa_invalid_policy_id');
      await refused(c.putData(['a'], undefined), 'opa_invalid_json');
      await refused(c.putData(['a'], { n: 1n }), 'opa_invalid_json');
      expect(s.seen).to.have.length(0);
    });

    it('sends the bearer token, and only the first line of a token file', async () => {
      const s = await stub(json(200, {}));
      await client(s, { token: 'inline-token' }).getData(['a']);
      const tokenFile = path.join(dir, 'token');
      writeFileSync(tokenFile, '  file-token \r\nnot this line\n');
      await client(s, { tokenFile }).getData(['a']);
      await client(s).getData(['a']);
      expect(s.seen.map((r) => r.headers.authorization)).to.deep.equal([
        'Bearer inline-token',
        'Bearer file-token',
        undefined,
      ]);
    });

    it('names an empty or missing token file and sends nothing', async () => {
      const s = await stub(json(200, {}));
      const empty = path.join(dir, 'empty-token');
      writeFileSync(empty, '\nsecond\n');
      const missing = path.join(dir, 'missing-token');
      for (const tokenFile of [empty, missing]) {
        const err = (await rejection(client(s, { tokenFile }).getData(['a']))) as RetryableError;
        expect(err).to.be.instanceOf(RetryableError);
        expect(err.code).to.equal('opa_token_file');
        expect(err.message).to.include(tokenFile);
      }
      expect(s.seen).to.have.length(0);
    });

    it('asks /health at the server root, keeping a path prefix before /v1', async () => {
      const s = await stub((req, res, seen) =>
        json(req.url === '/opa/health' ? 200 : 500, {})(req, res, seen),
      );
      expect(await client(s).health()).to.equal(false);
      expect(await client(s, { url: `${s.origin}/opa/v1/` }).health()).to.equal(true);
      await client(s, { url: `${s.origin}/opa/v1/` })
        .getData(['a'])
        .catch(() => undefined);
      expect(s.seen.map((r) => r.url)).to.deep.equal(['/health', '/opa/health', '/opa/v1/data/a']);
    });

    it('logs each call at debug level with fields, never the token', async () => {
      const s = await stub((req, res, seen) =>
        json(req.url === '/v1/data/bad' ? 400 : 200, { code: 'x', message: 'y' })(req, res, seen),
      );
      const lines: Record<string, unknown>[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _enc, done): void {
          lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
          done();
        },
      });
      const c = client(s, { token: 'secret-token', logger: createLogger('debug', 'json', sink) });
      await c.getData(['ok']);
      await rejection(c.getData(['bad']));
      expect(lines).to.have.length(2);
      expect(lines[0]).to.include({
        level: 20,
        msg: 'opa call',
        method: 'GET',
        path: '/v1/data/ok',
        status: 200,
      });
      expect(lines[0]?.['durationMs']).to.be.a('number');
      expect(lines[1]).to.include({ method: 'GET', path: '/v1/data/bad', status: 400 });
      expect(JSON.stringify(lines)).not.to.include('secret-token');
    });

    it("lists every TLS file it cannot read at once (the rules on the options are parseArgs's)", () => {
      let err: unknown;
      try {
        new OpaClient({
          url: 'https://host/v1',
          timeoutMs: 1000,
          caFile: path.join(dir, 'no-ca.pem'),
          clientCertFile: '/c',
          clientKeyFile: '/k',
          logger: silentLogger(),
        });
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(ConfigError);
      const problems = (err as ConfigError).problems;
      expect(problems).to.have.length(3);
      expect(problems.join('\n')).to.include('no-ca.pem').and.include('/c').and.include('/k');
    });
  });
});
