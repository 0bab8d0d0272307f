// opa-sync as a bundle server, end to end: ConfigMaps in the real kube-apiserver become bundles that real
// OPA instances pull (periodic and long polling, with a bearer token, signed), broken policies never
// reach them, two opa-sync instances serve identical bytes, and the fleet view lists the OPAs.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import getPort from 'get-port';
import { CoreV1Api } from '@kubernetes/client-node';
import {
  controlPlane,
  createNamespace,
  extraOpa,
  httpRequest,
  waitFor,
  type OpaServer,
} from '../harness/index.js';
import { startOpaSync, type OpaSyncProcess } from '../harness/opa-sync.js';
import { runDir } from '../harness/run-dir.js';
import { requireTool } from '../../scripts/tools.js';

const STATUS = 'openpolicyagent.org/policy-status';
const OK = '{"status":"ok"}';
const POLICY = { 'openpolicyagent.org/policy': 'rego' };

describe('bundle server: ConfigMaps into bundles that real OPAs pull (real OPA + kube-apiserver)', function () {
  this.timeout(180_000);
  let core: CoreV1Api;
  let ns: string;
  let token: string;
  let tokenFile: string;
  let bundleUrl: string;
  let sync: OpaSyncProcess;
  const stops: (() => Promise<void>)[] = [];

  async function annotation(name: string): Promise<string | undefined> {
    return (await core.readNamespacedConfigMap({ name, namespace: ns })).metadata?.annotations?.[STATUS];
  }

  async function putPolicy(name: string, rego: string): Promise<void> {
    const body = { metadata: { name, labels: POLICY }, data: { 'p.rego': rego } };
    try {
      await core.replaceNamespacedConfigMap({ name, namespace: ns, body });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await core.createNamespacedConfigMap({ namespace: ns, body });
    }
  }

  /** An OPA whose configuration file points it at opa-sync's bundle `policies`. */
  async function pullingOpa(
    name: string,
    polling: Record<string, number>,
    extra: Record<string, unknown> = {},
  ): Promise<OpaServer> {
    const config = {
      labels: { name, app: 'bundle-e2e' },
      services: { opasync: { url: bundleUrl, credentials: { bearer: { token } } } },
      bundles: { policies: { service: 'opasync', resource: 'bundles/policies', polling } },
      status: { service: 'opasync' },
      ...extra,
    };
    const file = path.join(runDir(), `${name}-config.json`);
    writeFileSync(file, JSON.stringify(config));
    const opa = await extraOpa({ extraArgs: [`--config-file=${file}`] });
    stops.push(() => opa.stop());
    return opa;
  }

  async function decide(opa: OpaServer, pkg: string): Promise<unknown> {
    const res = await opa.request(`/v1/data/${pkg}`, {
      method: 'POST',
      body: '{"input":{}}',
      headers: { 'content-type': 'application/json' },
    });
    return (JSON.parse(res.body) as { result?: unknown }).result;
  }

  before(async () => {
    const cp = await controlPlane();
    core = cp.kubeConfig().makeApiClient(CoreV1Api);
    ns = await createNamespace('bundles');
    token = 'fleet-token-1';
    tokenFile = path.join(runDir(), 'bundle-tokens');
    writeFileSync(tokenFile, `# tokens of the OPA fleet\n${token}\n`);
    await putPolicy('first', 'package bundles.e2e.first\n\nallow := true\n');
    const port = await getPort({ host: '127.0.0.1' });
    bundleUrl = `http://127.0.0.1:${port}`;
    sync = await startOpaSync([
      `--kubeconfig=${cp.kubeconfigFile}`,
      `--namespaces=${ns}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
      `--bundle-token-file=${tokenFile}`,
      `--bundles-dir=${path.join(runDir(), 'bundles-out')}`,
      '--log-level=debug',
    ]);
    stops.push(() => sync.stop());
  });
  after(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  it('refuses a request without the token (401) and serves one with it', async () => {
    const none = await httpRequest(`${bundleUrl}/bundles/policies`);
    expect(none.status).to.equal(401);
    const wrong = await httpRequest(`${bundleUrl}/bundles/policies`, {
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.status).to.equal(401);
    const ok = await httpRequest(`${bundleUrl}/bundles/policies`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(ok.status).to.equal(200);
    expect(ok.headers['content-type']).to.equal('application/vnd.openpolicyagent.bundles');
    expect(ok.headers.etag).to.match(/^"[0-9a-f]{64}"$/);
    expect(ok.headers['content-encoding']).to.equal(undefined);
  });

  it('a periodically polling OPA activates the bundle, gets an edit on its next poll, and unchanged polls are 304', async () => {
    const opa = await pullingOpa('periodic', { min_delay_seconds: 1, max_delay_seconds: 2 });
    await waitFor('the first policy to be live', async () =>
      (await decide(opa, 'bundles/e2e/first/allow')) === true ? true : undefined,
    );
    expect(await annotation('first')).to.equal(OK);

    await putPolicy('first', 'package bundles.e2e.first\n\nallow := false\n');
    await waitFor(
      'the edit to reach the OPA',
      async () => ((await decide(opa, 'bundles/e2e/first/allow')) === false ? true : undefined),
      {
        timeoutMs: 15_000,
      },
    );
    await waitFor(
      '304 answers to unchanged polls',
      async () => {
        const metrics = (await httpRequest(`${sync.opsUrl}/metrics`)).body;
        const match = /^opa_sync_bundle_requests_total\{[^}]*result="304"[^}]*\} (\d+)/m.exec(metrics);
        return match && Number(match[1]) >= 2 ? true : undefined;
      },
      { timeoutMs: 15_000 },
    );
  });

  it('a long-polling OPA gets a change in under a second and is held while idle', async () => {
    const opa = await pullingOpa('longpoll', { long_polling_timeout_seconds: 10 });
    await waitFor('the bundle to be live', async () =>
      (await decide(opa, 'bundles/e2e/first/allow')) === false ? true : undefined,
    );
    const requestsOf = async (): Promise<number> => {
      const metrics = (await httpRequest(`${sync.opsUrl}/metrics`)).body;
      return [...metrics.matchAll(/^opa_sync_bundle_requests_total\{[^}]*\} (\d+)/gm)].reduce(
        (n, m) => n + Number(m[1]),
        0,
      );
    };
    const before = await requestsOf();
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    const idle = (await requestsOf()) - before;
    // The periodic OPA of the previous test still polls every 1-2 s; the long-polling one adds at most ~2.
    expect(idle, 'requests over 10 s of idling').to.be.below(14);

    await putPolicy('second', 'package bundles.e2e.second\n\nallow := true\n');
    const changed = Date.now();
    await waitFor(
      'the change to reach the long-polling OPA',
      async () => ((await decide(opa, 'bundles/e2e/second/allow')) === true ? true : undefined),
      {
        timeoutMs: 5000,
        intervalMs: 20,
      },
    );
    // Debounce (100 ms) and validation with the opa binary are part of the path.
    expect(Date.now() - changed).to.be.below(1000);
  });

  it("keeps a broken ConfigMap out: OPAs keep its last good version and the annotation carries OPA's error", async () => {
    const opa = await pullingOpa('broken-watch', { min_delay_seconds: 1, max_delay_seconds: 1 });
    await waitFor('second live', async () =>
      (await decide(opa, 'bundles/e2e/second/allow')) === true ? true : undefined,
    );
    await putPolicy('second', 'package bundles.e2e.second\n\nallow if {\n  input.x ==\n}\n');
    const status = await waitFor('the error on the ConfigMap', async () => {
      const value = await annotation('second');
      return value !== undefined && value !== OK ? value : undefined;
    });
    const parsed = JSON.parse(status) as {
      status: string;
      error: { code: string; errors: { code: string; location: { file: string; row: number } }[] };
    };
    expect(parsed.status).to.equal('error');
    expect(parsed.error.code).to.equal('invalid_parameter');
    expect(parsed.error.errors[0]?.code).to.equal('rego_parse_error');
    expect(parsed.error.errors[0]?.location.file).to.equal(`${ns}/second/p.rego`);
    // The bundle still holds the last good version, and the other ConfigMap is untouched.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(await decide(opa, 'bundles/e2e/second/allow')).to.equal(true);
    expect(await decide(opa, 'bundles/e2e/first/allow')).to.equal(false);
    expect(await annotation('first')).to.equal(OK);
  });

  it('two OPAs report status and GET /v1/fleet lists both with their active revision', async () => {
    const revision = await waitFor('the current revision', async () => {
      const res = await httpRequest(`${bundleUrl}/bundles/policies`, {
        method: 'HEAD',
        headers: { authorization: `Bearer ${token}` },
      });
      return typeof res.headers.etag === 'string' ? res.headers.etag.replaceAll('"', '') : undefined;
    });
    const fleet = await waitFor(
      'both OPAs in the fleet view on the current revision',
      async () => {
        const res = await httpRequest(`${bundleUrl}/v1/fleet`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const body = JSON.parse(res.body) as {
          instances: {
            id: string;
            labels: Record<string, string>;
            bundles: { name: string; activeRevision?: string }[];
          }[];
        };
        const ours = body.instances.filter(
          (i) => i.labels.app === 'bundle-e2e' && ['periodic', 'longpoll'].includes(i.labels.name ?? ''),
        );
        const current = ours.filter((i) =>
          i.bundles.some((b) => b.name === 'policies' && b.activeRevision === revision),
        );
        return current.length === 2 ? ours : undefined;
      },
      { timeoutMs: 20_000 },
    );
    expect(fleet.map((i) => i.labels.name).sort()).to.deep.equal(['longpoll', 'periodic']);
    // OPA sets labels.id to its own instance id, which is the fleet view's key.
    for (const instance of fleet) expect(instance.id).to.equal(instance.labels.id);
  });

  it('refuses hostile names: special bundle entries from ConfigMap keys, traversal in bundle URLs', async () => {
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: { name: 'hostile', labels: POLICY },
        data: {
          'patch.json': '{"data": []}',
          '.manifest': '{"roots": [""]}',
          'x.signatures.json': '{}',
          'ok.rego': 'package bundles.e2e.hostile\n\nallow := true\n',
        },
      },
    });
    const status = await waitFor('the hostile ConfigMap to be refused', async () => {
      const value = await annotation('hostile');
      return value !== undefined && value !== OK ? value : undefined;
    });
    const errors = (JSON.parse(status) as { error: { code: string; message: string }[] }).error;
    expect(errors.map((e) => e.code)).to.deep.equal([
      'invalid_bundle_path',
      'invalid_bundle_path',
      'invalid_bundle_path',
    ]);
    const bundle = await httpRequest(`${bundleUrl}/bundles/policies`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const { gunzipSync } = await import('node:zlib');
    const tar = gunzipSync(bundle.bytes).toString('latin1');
    expect(tar).to.not.include('hostile/patch.json');
    expect(tar).to.not.include('hostile/.manifest');
    expect(tar).to.include(`${ns}/hostile/ok.rego`);
    for (const evil of ['/bundles/..%2f..%2fetc%2fpasswd', '/bundles/%2e%2e/x', '/bundles/a%00b']) {
      const res = await httpRequest(`${bundleUrl}${evil}`, { headers: { authorization: `Bearer ${token}` } });
      expect([400, 404], evil).to.include(res.status);
    }
  });

  it('serves named bundles from the bundle label, refuses overlapping roots, and writes --bundles-dir', async () => {
    const labelled = (bundle: string) => ({ ...POLICY, 'openpolicyagent.org/bundle': bundle });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: { name: 'team-a', labels: labelled('team-a') },
        data: { 'a.rego': 'package teams.a\n\nallow := true\n' },
      },
    });
    await waitFor('team-a to be ok', async () =>
      (await core.readNamespacedConfigMap({ name: 'team-a', namespace: ns })).metadata?.annotations?.[
        STATUS
      ] === OK
        ? true
        : undefined,
    );
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: { name: 'team-b', labels: labelled('team-b') },
        data: { 'b.rego': 'package teams.a.sub\n\nallow := true\n' },
      },
    });
    const refused = await waitFor('team-b to be refused', async () => {
      const value = (await core.readNamespacedConfigMap({ name: 'team-b', namespace: ns })).metadata
        ?.annotations?.[STATUS];
      return value !== undefined && value !== OK ? value : undefined;
    });
    const error = (JSON.parse(refused) as { error: { code: string; message: string } }).error;
    expect(error.code).to.equal('bundle_roots_overlap');
    expect(error.message).to.include('bundle "team-b"');
    expect(error.message).to.include('bundle "team-a"');
    const teamA = await httpRequest(`${bundleUrl}/bundles/team-a`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(teamA.status).to.equal(200);
    const { gunzipSync } = await import('node:zlib');
    expect(gunzipSync(teamA.bytes).toString('latin1')).to.include(`${ns}/team-a/a.rego`);
    expect(gunzipSync(teamA.bytes).toString('latin1')).to.not.include('bundles/e2e');
    const { existsSync, readFileSync } = await import('node:fs');
    const written = path.join(runDir(), 'bundles-out', 'team-a.tar.gz');
    expect(existsSync(written)).to.equal(true);
    expect(readFileSync(written).equals(teamA.bytes)).to.equal(true);
    await core.deleteNamespacedConfigMap({ name: 'team-a', namespace: ns });
    await core.deleteNamespacedConfigMap({ name: 'team-b', namespace: ns });
  });

  it('two opa-sync instances on the same inputs serve byte-identical bundles with the same ETag', async () => {
    // The same inputs: no ConfigMap is on a last good version that only the first instance has seen.
    await putPolicy('second', 'package bundles.e2e.second\n\nallow := true\n');
    await waitFor('second to be ok again', async () =>
      (await annotation('second')) === OK ? true : undefined,
    );
    const cp = await controlPlane();
    const port = await getPort({ host: '127.0.0.1' });
    const twin = await startOpaSync([
      `--kubeconfig=${cp.kubeconfigFile}`,
      `--namespaces=${ns}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
    ]);
    stops.push(() => twin.stop());
    const a = await httpRequest(`${bundleUrl}/bundles/policies.tar.gz`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const b = await waitFor('the twin to have built the same revision', async () => {
      const res = await httpRequest(`http://127.0.0.1:${port}/bundles/policies.tar.gz`);
      return res.headers.etag === a.headers.etag ? res : undefined;
    });
    expect(b.bytes.equals(a.bytes)).to.equal(true);
    expect(a.bytes.length).to.be.greaterThan(100);
  });

  it('pushes into an OPA and serves bundles from one process when both are configured', async () => {
    const cp = await controlPlane();
    const pushed = await extraOpa();
    stops.push(() => pushed.stop());
    const port = await getPort({ host: '127.0.0.1' });
    const both = await startOpaSync([
      `--kubeconfig=${cp.kubeconfigFile}`,
      `--namespaces=${ns}`,
      `--opa-url=${pushed.url}/v1`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
      '--status-annotation=example.com/both-status',
    ]);
    stops.push(() => both.stop());
    await waitFor('the policy pushed into the OPA', async () =>
      (await decide(pushed, 'bundles/e2e/second/allow')) === true ? true : undefined,
    );
    const bundle = await httpRequest(`http://127.0.0.1:${port}/bundles/policies`);
    expect(bundle.status).to.equal(200);
    const { gunzipSync } = await import('node:zlib');
    expect(gunzipSync(bundle.bytes).toString('latin1')).to.include(`${ns}/second/p.rego`);
    const ready = JSON.parse((await httpRequest(`${both.opsUrl}/ready`)).body) as {
      checks: Record<string, boolean>;
    };
    expect(ready.checks).to.deep.equal({
      ops: true,
      'bundle-server': true,
      status: true,
      opa: true,
      bundles: true,
      configmaps: true,
    });
    await waitFor('the combined status', async () =>
      (await core.readNamespacedConfigMap({ name: 'second', namespace: ns })).metadata?.annotations?.[
        'example.com/both-status'
      ] === OK
        ? true
        : undefined,
    );
  });

  it('signs bundles: an OPA with the public key activates, one with a wrong key refuses', async () => {
    const cp = await controlPlane();
    const signer = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(runDir(), 'bundle-signing.pem');
    writeFileSync(keyFile, signer.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const port = await getPort({ host: '127.0.0.1' });
    const signing = await startOpaSync([
      `--kubeconfig=${cp.kubeconfigFile}`,
      `--namespaces=${ns}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
      `--bundle-signing-key=${keyFile}`,
      '--bundle-signing-keyid=fleet',
    ]);
    stops.push(() => signing.stop());
    const signedOpa = async (name: string, publicKey: string): Promise<OpaServer> => {
      const config = {
        labels: { id: name },
        services: { signed: { url: `http://127.0.0.1:${port}` } },
        keys: { fleet: { algorithm: 'RS256', key: publicKey } },
        bundles: {
          policies: {
            service: 'signed',
            resource: 'bundles/policies',
            polling: { min_delay_seconds: 1, max_delay_seconds: 2 },
            signing: { keyid: 'fleet' },
          },
        },
      };
      const file = path.join(runDir(), `${name}-config.json`);
      writeFileSync(file, JSON.stringify(config));
      const opa = await extraOpa({ extraArgs: [`--config-file=${file}`] });
      stops.push(() => opa.stop());
      return opa;
    };
    const good = await signedOpa(
      'signed-good',
      signer.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    );
    const bad = await signedOpa(
      'signed-bad',
      wrong.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    );
    await waitFor('the signed bundle to be live', async () =>
      (await decide(good, 'bundles/e2e/first/allow')) === false ? true : undefined,
    );
    // The wrong key never activates: OPA's bundle health stays failing and its log names the verification.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect((await bad.request('/health?bundles=true')).status).to.not.equal(200);
    expect(await decide(bad, 'bundles/e2e/first/allow')).to.equal(undefined);
    const { logTail } = await import('../harness/processes.js');
    expect(logTail(bad.process, 200)).to.match(/verif/i);
  });
});
