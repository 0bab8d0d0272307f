// The OPA REST client against real OPA servers: policies and data round-trip with ids that need
// encoding, compile errors come back as OPA's own JSON, the data root is never written, and TLS (CA
// file, insecure, client certificates) and bearer tokens (inline and from a rotating file) work as OPA
// sees them. A stopped OPA is a retryable error.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { OpaClient, OpaHttpError, OpaUnavailableError, type OpaClientOptions } from '../../src/opa/client.js';
import { InvalidInputError, PermanentError, RetryableError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { createServingCert } from '../harness/certs.js';
import { extraOpa, sharedOpa, testCa, waitFor, type OpaServer } from '../harness/index.js';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to reject, it resolved');
}

function clientFor(server: OpaServer, options: Partial<OpaClientOptions> = {}): OpaClient {
  return new OpaClient({ url: `${server.url}/v1`, timeoutMs: 10_000, logger: silentLogger(), ...options });
}

const POLICY = (pkg: string): string => `package ${pkg}\n\nallow if input.user == "alice"\n`;

describe('OpaClient against a real OPA', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-client-test-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('policies and data (shared OPA)', () => {
    let opa: OpaServer;
    let client: OpaClient;
    // The shared OPA is not ours alone: everything this suite writes lives under its own namespace.
    const ns = `oc-${randomBytes(3).toString('hex')}`;

    before(async () => {
      opa = await sharedOpa();
      client = clientFor(opa);
    });
    after(async () => {
      for (const id of await client.listPolicyIds()) {
        if (id.startsWith(`${ns}/`)) await client.deletePolicy(id);
      }
      await client.removeData([ns]);
      client.close();
    });

    it('puts, gets, lists and deletes a policy', async () => {
      const id = `${ns}/plain/main.rego`;
      await client.putPolicy(id, POLICY(`${ns.replaceAll('-', '_')}.plain`));
      expect(await client.getPolicy(id)).to.equal(POLICY(`${ns.replaceAll('-', '_')}.plain`));
      expect(await client.listPolicyIds()).to.include(id);

      await client.deletePolicy(id);
      expect(await client.getPolicy(id)).to.equal(undefined);
      expect(await client.listPolicyIds()).not.to.include(id);
      // Already gone is not an error.
      await client.deletePolicy(id);
    });

    it('encodes every id segment, so OPA stores the id exactly as given', async () => {
      const ids = [
        `${ns}/my-config.map/key.with.dots.rego`,
        `${ns}/spaces in/a key with spaces.rego`,
        `${ns}/odd/per%cent?q#h&a=b+c.rego`,
        `${ns}/unicode/ключ-é.rego`,
      ];
      for (const [i, id] of ids.entries()) {
        await client.putPolicy(id, POLICY(`${ns.replaceAll('-', '_')}.enc${i}`));
      }
      const listed = (await client.listPolicyIds()).filter((id) => id.startsWith(`${ns}/`));
      expect(listed).to.have.members(ids);
      for (const [i, id] of ids.entries()) {
        expect(await client.getPolicy(id)).to.equal(POLICY(`${ns.replaceAll('-', '_')}.enc${i}`));
        await client.deletePolicy(id);
        expect(await client.getPolicy(id)).to.equal(undefined);
      }
    });

    it("returns a compile error as an OpaHttpError with OPA's body, located in the id", async () => {
      const id = `${ns}/broken map/policy.rego`;
      const err = await rejection(client.putPolicy(id, 'package broken\n\nallow if {\n  input.x ==\n}\n'));
      expect(err).to.be.instanceOf(OpaHttpError);
      expect(err).to.be.instanceOf(PermanentError);
      const e = err as OpaHttpError;
      expect(e.status).to.equal(400);
      expect(e.code).to.equal('opa_refused');
      expect(e.method).to.equal('PUT');
      expect(e.path).to.equal(`/v1/policies/${ns}/broken%20map/policy.rego`);
      expect(e.body.code).to.equal('invalid_parameter');
      expect(e.body.message).to.equal('error(s) occurred while compiling module(s)');
      expect(e.body.errors).to.be.an('array').with.length.greaterThan(0);
      const first = e.body.errors?.[0] as { code: string; location: { file: string; row: number } };
      expect(first.code).to.equal('rego_parse_error');
      expect(first.location.file).to.equal(id);
      expect(first.location.row).to.be.greaterThan(0);
      // The message names the call and OPA's first error, for logs.
      expect(e.message).to.include('PUT').and.include(`${opa.url}/v1/policies/`).and.include(id);
      // Nothing was loaded.
      expect(await client.getPolicy(id)).to.equal(undefined);
    });

    it('puts, gets and removes data, leaving siblings intact', async () => {
      await client.putData([ns, 'cm', 'a.json'], { x: 1, list: [1, 2] });
      await client.putData([ns, 'cm', 'b/c.json'], { y: 'two' });
      await client.putData([ns, 'other'], { keep: true });

      expect(await client.getData([ns, 'cm', 'a.json'])).to.deep.equal({
        defined: true,
        value: { x: 1, list: [1, 2] },
      });
      // A '/' inside a segment stays inside that key.
      expect(await client.getData([ns, 'cm'])).to.deep.equal({
        defined: true,
        value: { 'a.json': { x: 1, list: [1, 2] }, 'b/c.json': { y: 'two' } },
      });

      await client.removeData([ns, 'cm', 'b/c.json']);
      expect(await client.getData([ns, 'cm'])).to.deep.equal({
        defined: true,
        value: { 'a.json': { x: 1, list: [1, 2] } },
      });
      await client.removeData([ns, 'cm']);
      expect(await client.getData([ns, 'cm'])).to.deep.equal({ defined: false });
      expect(await client.getData([ns, 'other'])).to.deep.equal({ defined: true, value: { keep: true } });

      // Removing what is not there (again, or under a missing parent) succeeds.
      await client.removeData([ns, 'cm']);
      await client.removeData([ns, 'never', 'was', 'here']);
      expect(await client.getData([ns])).to.deep.equal({ defined: true, value: { other: { keep: true } } });
    });

    it('refuses to write or remove the data root, and OPA keeps its data', async () => {
      await client.putData([ns, 'root-guard'], { still: 'here' });
      const put = await rejection(client.putData([], {}));
      expect(put).to.be.instanceOf(InvalidInputError);
      expect((put as InvalidInputError).code).to.equal('opa_data_root_refused');
      const remove = await rejection(client.removeData([]));
      expect((remove as InvalidInputError).code).to.equal('opa_data_root_refused');
      const patch = await rejection(client.patchData([], [{ op: 'replace', path: '', value: {} }]));
      expect((patch as InvalidInputError).code).to.equal('opa_data_root_refused');
      expect(await client.getData([ns, 'root-guard'])).to.deep.equal({
        defined: true,
        value: { still: 'here' },
      });
    });

    it('patches data and evaluates a decision', async () => {
      await client.putData([ns, 'patched'], { a: 1 });
      await client.patchData(
        [ns, 'patched'],
        [
          { op: 'add', path: '/b~1c', value: [1] },
          { op: 'replace', path: '/a', value: 2 },
        ],
      );
      expect(await client.getData([ns, 'patched'])).to.deep.equal({
        defined: true,
        value: { a: 2, 'b/c': [1] },
      });

      const pkg = `${ns.replaceAll('-', '_')}.decide`;
      const id = `${ns}/decide/policy.rego`;
      await client.putPolicy(id, POLICY(pkg));
      const segments = [...pkg.split('.'), 'allow'];
      expect(await client.postData(segments, { user: 'alice' })).to.equal(true);
      // An undefined decision is undefined, not an error.
      expect(await client.postData([...pkg.split('.'), 'nothing'], { user: 'alice' })).to.equal(undefined);
      await client.deletePolicy(id);
    });

    it('reports OPA healthy', async () => {
      expect(await client.health()).to.equal(true);
    });
  });

  describe('TLS and bearer tokens', () => {
    let secured: OpaServer;
    let caFile: string;
    before(async () => {
      secured = await extraOpa({ tlsCa: await testCa(), token: 'x' });
      caFile = path.join(dir, 'ca.pem');
      writeFileSync(caFile, secured.ca ?? '');
    });
    after(async () => {
      await secured.stop();
    });

    it('trusts the CA file in addition to the system roots', async () => {
      const client = clientFor(secured, { caFile, token: 'x' });
      try {
        await client.putData(['tls', 'ok'], { ok: true });
        expect(await client.getData(['tls', 'ok'])).to.deep.equal({ defined: true, value: { ok: true } });
        expect(await client.health()).to.equal(true);
      } finally {
        client.close();
      }
    });

    it('fails with a retryable error naming the certificate problem without the CA file', async () => {
      const client = clientFor(secured, { token: 'x' });
      try {
        const err = await rejection(client.getData(['tls']));
        expect(err).to.be.instanceOf(OpaUnavailableError);
        expect(err).to.be.instanceOf(RetryableError);
        const e = err as OpaUnavailableError;
        expect(e.code).to.equal('opa_unreachable');
        expect(e.message).to.match(/certificate/i);
        expect(e.message).to.include(`GET ${secured.url}/v1/data/tls`);
        expect(e.cause).to.be.instanceOf(Error);
        expect(await client.health()).to.equal(false);
      } finally {
        client.close();
      }
    });

    it('skips verification with allowInsecure', async () => {
      const client = clientFor(secured, { allowInsecure: true, token: 'x' });
      try {
        expect(await client.getData(['tls', 'ok'])).to.deep.equal({ defined: true, value: { ok: true } });
      } finally {
        client.close();
      }
    });

    it('is refused (401) with a wrong token, as an OpaHttpError', async () => {
      const client = clientFor(secured, { caFile, token: 'wrong' });
      try {
        const err = await rejection(client.putPolicy('t/x/y.rego', POLICY('t')));
        expect(err).to.be.instanceOf(OpaHttpError);
        expect((err as OpaHttpError).status).to.equal(401);
        expect((err as OpaHttpError).body.code).to.equal('unauthorized');
      } finally {
        client.close();
      }
    });

    it('reads the token file (first line only) and follows its rotation without a new client', async () => {
      const tokenFile = path.join(dir, 'token');
      writeFileSync(tokenFile, 'wrong\n');
      const client = clientFor(secured, { caFile, tokenFile });
      try {
        const refused = await rejection(client.getData(['tls', 'ok']));
        expect(refused).to.be.instanceOf(OpaHttpError);
        expect((refused as OpaHttpError).status).to.equal(401);

        // Rotated right after the refusal: the very next call must already use the new token.
        writeFileSync(tokenFile, '  x  \nsecond line is not part of the token\n');
        expect(await client.getData(['tls', 'ok'])).to.deep.equal({ defined: true, value: { ok: true } });

        // Rotated to a token OPA refuses: picked up once the file is checked again (about once a second).
        writeFileSync(tokenFile, 'revoked\n');
        const revoked = await waitFor(
          'the revoked token to be used',
          async () => {
            const err = await rejection(client.getData(['tls', 'ok']));
            return (err as OpaHttpError).status === 401 ? err : undefined;
          },
          { timeoutMs: 5000, intervalMs: 100 },
        );
        expect(revoked).to.be.instanceOf(OpaHttpError);
      } finally {
        client.close();
      }
    });

    it('names a missing token file', async () => {
      const tokenFile = path.join(dir, 'no-such-token');
      const client = clientFor(secured, { caFile, tokenFile });
      try {
        const err = await rejection(client.getData(['tls']));
        expect(err).to.be.instanceOf(RetryableError);
        expect((err as RetryableError).code).to.equal('opa_token_file');
        expect((err as Error).message).to.include(tokenFile);
      } finally {
        client.close();
      }
    });
  });

  describe('client certificates (mutual TLS)', () => {
    let mtls: OpaServer;
    let caFile: string;
    before(async () => {
      const ca = await testCa();
      mtls = await extraOpa({ tlsCa: ca, clientCa: ca });
      caFile = path.join(dir, 'mtls-ca.pem');
      writeFileSync(caFile, ca.pem);
    });
    after(async () => {
      await mtls.stop();
    });

    it('presents the client certificate OPA requires', async () => {
      const cert = await createServingCert(await testCa(), `opa-client-${randomBytes(3).toString('hex')}`);
      const client = clientFor(mtls, { caFile, clientCertFile: cert.certFile, clientKeyFile: cert.keyFile });
      try {
        await client.putPolicy('mtls/cm/p.rego', POLICY('mtls'));
        expect(await client.getPolicy('mtls/cm/p.rego')).to.equal(POLICY('mtls'));
      } finally {
        client.close();
      }
    });

    it('is refused at the TLS layer without one', async () => {
      const client = clientFor(mtls, { caFile });
      try {
        const err = await rejection(client.getPolicy('mtls/cm/p.rego'));
        expect(err).to.be.instanceOf(OpaUnavailableError);
        expect((err as OpaUnavailableError).code).to.equal('opa_unreachable');
        // TLS 1.3 reports the refusal as an alert after the handshake; a reset is the other way it shows.
        expect((err as Error).message).to.match(/certificate required|ECONNRESET/);
      } finally {
        client.close();
      }
    });
  });

  describe('a stopped OPA', () => {
    it('is a retryable OpaUnavailableError and unhealthy', async () => {
      const server = await extraOpa();
      const client = clientFor(server, { timeoutMs: 5000 });
      try {
        // A pooled keep-alive socket exists before the stop, as in a long-running sidecar.
        await client.putData(['stopped', 'x'], { v: 1 });
        expect(await client.health()).to.equal(true);
        await server.stop();

        const err = await rejection(client.putData(['stopped', 'x'], { v: 2 }));
        expect(err).to.be.instanceOf(OpaUnavailableError);
        expect(err).to.be.instanceOf(RetryableError);
        const e = err as OpaUnavailableError;
        expect(e.code).to.equal('opa_unreachable');
        expect(e.message).to.include(`PUT ${server.url}/v1/data/stopped/x`);
        expect(e.message).to.include('ECONNREFUSED');
        expect(await client.health()).to.equal(false);
      } finally {
        client.close();
      }
    });
  });
});
