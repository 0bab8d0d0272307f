// The admission webhook's Part as app.ts builds it from the flags, with the real opa compiler and a
// real HTTPS client: verdicts over the wire, bad requests, annotation-only updates always admitted
// (opa-sync's own status patches of a broken ConfigMap), and the certificate reloaded when its files
// are replaced.
import { copyFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { expect } from 'chai';
import { requireTool } from '../../scripts/tools.js';
import { admissionPart } from '../../src/app-admission.js';
import { parseArgs } from '../../src/config.js';
import { Metrics } from '../../src/http/metrics.js';
import type { ServerPart } from '../../src/http/server-part.js';
import { DesiredState } from '../../src/model/desired-state.js';
import { OpaClient } from '../../src/opa/client.js';
import { policyState } from '../../src/sources/configmap-content.js';
import { silentLogger } from '../../src/util/logger.js';
import { createServingCert, type ServingCert } from '../harness/certs.js';
import { extraOpa, httpRequest, sharedOpa, testCa, waitFor } from '../harness/index.js';
import { runPart, type RunningPart } from '../harness/parts.js';

const LABELS = { 'openpolicyagent.org/policy': 'rego' };
const BROKEN = 'package app.broken\n\nx := count(1)\n';

function configMap(name: string, text: string, annotations: Record<string, string> = {}) {
  return { metadata: { name, namespace: 'opa', labels: LABELS, annotations }, data: { 'p.rego': text } };
}

function review(operation: string, name: string, object: unknown, oldObject?: unknown): string {
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `uid-${name}`,
      operation,
      namespace: 'opa',
      name,
      resource: { group: '', version: 'v1', resource: 'configmaps' },
      object,
      oldObject,
    },
  });
}

/** The SHA-256 fingerprint of the certificate a TLS server presents. */
function servedFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.end();
    });
    socket.once('error', reject);
  });
}

describe('admission webhook server (real opa, HTTPS)', function () {
  this.timeout(60_000);
  let cert: ServingCert;
  let ca: string;
  let part: ServerPart;
  let running: RunningPart;
  let url: string;
  const metrics = new Metrics({ processMetrics: false });

  before(async () => {
    const authority = await testCa();
    ca = authority.pem;
    cert = await createServingCert(authority, 'admission-int');
    const parsed = parseArgs([
      '--namespaces=opa',
      '--admission-addr=127.0.0.1:0',
      `--admission-tls-cert-file=${cert.certFile}`,
      `--admission-tls-key-file=${cert.keyFile}`,
      `--opa-bin=${requireTool('opa')}`,
      // The pushed OPA (v1) says which Rego version the webhook compiles.
      `--opa-url=${(await sharedOpa()).url}/v1`,
    ]);
    if (parsed.kind !== 'run') throw new Error('expected a configuration');
    const state = new DesiredState();
    // A broken policy that got in while the webhook was down: loaded, failing.
    state.set(policyState(configMap('broken', BROKEN), { regoKeysOnly: false }));
    const built = admissionPart(parsed.config, {
      state,
      metrics,
      logger: silentLogger(),
      searchPath: undefined,
    });
    if (built === undefined) throw new Error('expected the admission part');
    part = built;
    running = runPart(part);
    await running.waitReady();
    url = `https://127.0.0.1:${part.port}/validate/configmaps`;
  });

  after(async () => {
    await running.stop();
  });

  const post = async (body: string): Promise<{ status: number; json: Record<string, unknown> }> => {
    const res = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      ca,
    });
    return { status: res.status, json: JSON.parse(res.body) as Record<string, unknown> };
  };

  it('refuses a ConfigMap that does not compile, naming the policy and OPA’s row:col', async () => {
    const { status, json } = await post(review('CREATE', 'typed', configMap('typed', BROKEN)));
    expect(status).to.equal(200);
    expect(json.response).to.deep.equal({
      uid: 'uid-typed',
      allowed: false,
      status: {
        code: 403,
        reason: 'Forbidden',
        message:
          'configmap opa/typed does not compile: opa/typed/p.rego:3:6: rego_type_error: count: invalid argument(s)',
      },
    });
  });

  it('admits an update that changes only annotations, even of a ConfigMap that does not compile', async () => {
    const { json } = await post(
      review(
        'UPDATE',
        'broken',
        configMap('broken', BROKEN, { status: 'error' }),
        configMap('broken', BROKEN),
      ),
    );
    expect(json.response).to.deep.equal({ uid: 'uid-broken', allowed: true });
    // Its content changed and is still broken: refused.
    const changed = await post(
      review('UPDATE', 'broken', configMap('broken', `${BROKEN}y := 2\n`), configMap('broken', BROKEN)),
    );
    expect((changed.json.response as { allowed: boolean }).allowed).to.equal(false);
  });

  it('answers 400 to what is not an AdmissionReview v1 and 404 elsewhere, counting them', async () => {
    const notJson = await post('{');
    expect(notJson.status).to.equal(400);
    expect(notJson.json.code).to.equal('bad_request');
    const beta = await post(
      JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview' }),
    );
    expect(beta.status).to.equal(400);
    expect(beta.json.message).to.include('only admission.k8s.io/v1');
    const elsewhere = await httpRequest(url.replace('/validate/configmaps', '/'), { ca });
    expect(elsewhere.status).to.equal(404);
    const text = await metrics.registry.metrics();
    expect(text).to.include('opa_sync_admission_requests_total{verdict="invalid"} 2');
    expect(text).to.match(/opa_sync_admission_requests_total\{verdict="denied"\} [1-9]/);
  });

  it('asks a pushed OPA which Rego version it parses, writing nothing', async () => {
    const v1 = await sharedOpa();
    const v0 = await extraOpa({ extraArgs: ['--v0-compatible'] });
    try {
      for (const [opa, expected] of [
        [v1, 1],
        [v0, 0],
      ] as const) {
        const client = new OpaClient({ url: `${opa.url}/v1`, timeoutMs: 5000, logger: silentLogger() });
        try {
          expect(await client.regoVersion()).to.equal(expected);
        } finally {
          client.close();
        }
      }
      // The fresh OPA holds nothing afterwards: the query wrote no policy and no data.
      expect(JSON.parse((await v0.request('/v1/policies')).body)).to.deep.equal({ result: [] });
      expect(JSON.parse((await v0.request('/v1/data')).body)).to.deep.equal({ result: {} });
    } finally {
      await v0.stop();
    }
  });

  it('serves a new certificate once its files are replaced, without a restart', async () => {
    const port = part.port ?? 0;
    const before = await servedFingerprint(port, ca);
    const next = await createServingCert(await testCa(), 'admission-int-next');
    copyFileSync(next.keyFile, cert.keyFile);
    copyFileSync(next.certFile, cert.certFile);
    const after = await waitFor(
      'the new certificate to be served',
      async () => {
        const now = await servedFingerprint(port, ca);
        return now === before ? undefined : now;
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    );
    expect(after).to.not.equal(before);
    const { json } = await post(review('CREATE', 'fine', configMap('fine', 'package app.fine\n\nz := 1\n')));
    expect(json.response).to.deep.equal({ uid: 'uid-fine', allowed: true });
  });
});
