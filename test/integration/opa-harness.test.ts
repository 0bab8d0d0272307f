// Proves the harness's real OPA: policies load through the REST API, data answers, compile errors come
// back as OPA's own JSON, and the TLS + token variant refuses callers without the token.
import { expect } from 'chai';
import { extraOpa, sharedOpa, testCa, type OpaServer } from '../harness/index.js';

interface OpaErrorBody {
  code: string;
  message: string;
  errors?: { code: string; message: string; location?: { file: string; row: number; col: number } }[];
}

describe('harness: real OPA', () => {
  let opa: OpaServer;
  before(async () => {
    opa = await sharedOpa();
  });

  it('accepts PUT /v1/policies/… and answers POST /v1/data/…', async () => {
    const put = await opa.request('/v1/policies/harness/smoke/ok.rego', {
      method: 'PUT',
      headers: { 'content-type': 'text/plain' },
      body: 'package harness.smoke\n\nallow if input.user == "alice"\n',
    });
    expect(put.status).to.equal(200);

    const data = await opa.request('/v1/data/harness/smoke/allow', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input: { user: 'alice' } }),
    });
    expect(data.status).to.equal(200);
    expect(JSON.parse(data.body)).to.deep.equal({ result: true });
  });

  it("returns a compile error as OPA's JSON, located in the module's id", async () => {
    const res = await opa.request('/v1/policies/harness/smoke/broken.rego', {
      method: 'PUT',
      headers: { 'content-type': 'text/plain' },
      body: 'package harness.broken\n\nallow if {\n  input.x ==\n}\n',
    });
    expect(res.status).to.equal(400);
    const body = JSON.parse(res.body) as OpaErrorBody;
    expect(body.code).to.equal('invalid_parameter');
    expect(body.message).to.be.a('string').and.not.be.empty;
    expect(body.errors).to.be.an('array').with.length.greaterThan(0);
    const first = body.errors?.[0];
    expect(first?.location?.file).to.equal('harness/smoke/broken.rego');
    expect(first?.location?.row).to.be.a('number').greaterThan(0);
    expect(first?.location?.col).to.be.a('number').greaterThan(0);

    const gone = await opa.request('/v1/policies/harness/smoke/broken.rego');
    expect(gone.status).to.equal(404);
  });

  it('starts more instances, with TLS and token authentication', async () => {
    const ca = await testCa();
    const secured = await extraOpa({ tlsCa: ca, token: 'harness-secret' });
    try {
      expect(secured.url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
      const ok = await secured.request('/v1/data');
      expect(ok.status).to.equal(200);
      const noToken = await secured.request('/v1/data', { headers: { authorization: '' } });
      expect(noToken.status).to.equal(401);
      const wrong = await secured.request('/v1/data', { headers: { authorization: 'Bearer nope' } });
      expect(wrong.status).to.equal(401);
    } finally {
      await secured.stop();
    }
    expect(secured.process.hasExited()).to.equal(true);
  });
});
