// Publishing bundles to an OCI registry, end to end against real components: opa-sync (the command
// line, serving a policies folder) pushes to a real CNCF distribution registry with htpasswd users;
// the real oras CLI fetches what it pushed, byte for byte the bundle the HTTP server serves; a real
// OPA with `services.reg.type: oci` (the README's snippet) pulls and activates it, and the next revision
// on its next poll; an unchanged revision pushes nothing; a signed bundle activates with the right key
// and is refused with a wrong one; a wrong password is a clear error and /ready's `oci` check while the
// bundle server goes on serving.
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import getPort from 'get-port';
import { parse as parseYaml } from 'yaml';
import { requireTool } from '../../scripts/tools.js';
import { opaWithConfig } from '../harness/bundles.js';
import { httpRequest, testCa, waitFor, type OpaServer } from '../harness/index.js';
import { startOciRegistry, type OciRegistry } from '../harness/oci-registry.js';
import { startTokenService } from '../harness/registry-token-service.js';
import { startOpaSync, type OpaSyncProcess } from '../harness/opa-sync.js';
import { logTail } from '../harness/processes.js';
import { runDir } from '../harness/run-dir.js';

const USER = 'opa';
const PASSWORD = 'registry-secret';
const policy = (version: number): string =>
  `package authz\n\nallow if input.user == "admin"\n\nversion := ${version}\n`;

/** The OPA configuration of the README's "Publishing to an OCI registry", for this registry. */
function readmeOpaConfig(registry: OciRegistry): unknown {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const block = /<!-- oci-opa-config -->\s*```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
  if (block === undefined) throw new Error('the README has no <!-- oci-opa-config --> yaml block');
  return parseYaml(block.replaceAll('127.0.0.1:5000', registry.host));
}

async function query(opa: OpaServer, dataPath: string): Promise<unknown> {
  const res = await opa.request(`/v1/data/${dataPath}`);
  if (res.status !== 200) throw new Error(`OPA answered ${res.status}: ${res.body}`);
  return (JSON.parse(res.body) as { result?: unknown }).result;
}

async function until(opa: OpaServer, dataPath: string, want: unknown): Promise<void> {
  await waitFor(
    `${dataPath} = ${JSON.stringify(want)} in ${opa.name}`,
    async () => {
      const got = await query(opa, dataPath);
      if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`it is ${JSON.stringify(got)}`);
      return true;
    },
    { timeoutMs: 30_000, intervalMs: 200 },
  );
}

function logged(
  sync: OpaSyncProcess,
  msg: string,
  match: (line: Record<string, unknown>) => boolean = () => true,
) {
  return sync.logLines().filter((l) => l.msg === msg && match(l));
}

describe('OCI publishing: opa-sync → real distribution registry → oras and a real OPA', function () {
  this.timeout(120_000);
  let registry: OciRegistry;
  let folder: string;
  let passwordFile: string;
  const running = new Set<{ stop(): Promise<void> }>();

  async function sync(
    extra: string[],
    bundleName = 'policies',
  ): Promise<{ sync: OpaSyncProcess; url: string }> {
    const port = await getPort({ host: '127.0.0.1' });
    const started = await startOpaSync([
      `--policies-dir=${folder}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--bundle-name=${bundleName}`,
      `--opa-bin=${requireTool('opa')}`,
      '--oci-plain-http',
      ...extra,
    ]);
    running.add(started);
    return { sync: started, url: `http://127.0.0.1:${port}` };
  }

  async function stop(p: { stop(): Promise<void> }): Promise<void> {
    running.delete(p);
    await p.stop();
  }

  before(async () => {
    registry = await startOciRegistry({ users: { [USER]: PASSWORD } });
    folder = mkdtempSync(path.join(tmpdir(), 'opa-sync-oci-'));
    mkdirSync(path.join(folder, 'authz'));
    writeFileSync(path.join(folder, 'authz', 'main.rego'), policy(1));
    passwordFile = path.join(runDir(), 'oci-password');
    writeFileSync(passwordFile, `${PASSWORD}\n`);
  });

  afterEach(async () => {
    await Promise.all([...running].map((p) => stop(p)));
  });

  after(async () => {
    await registry.stop();
  });

  it('pushes each revision (revision tag and latest) as an artifact that oras fetches byte for byte, and an OPA activates it and the next one', async () => {
    const { sync: s, url } = await sync([
      `--oci-repository=${registry.host}/opa/{bundle}`,
      `--oci-username=${USER}`,
      `--oci-password-file=${passwordFile}`,
    ]);
    await waitFor('the first push', () => (logged(s, 'bundle pushed to OCI').length > 0 ? true : undefined));
    const served = await httpRequest(`${url}/bundles/policies`);
    expect(served.status).to.equal(200);
    const revision = String(served.headers.etag).replaceAll('"', '');

    const ref = `${registry.host}/opa/policies`;
    const manifest = JSON.parse(await registry.oras(['manifest', 'fetch', `${ref}:latest`])) as {
      mediaType: string;
      config: { mediaType: string };
      layers: { mediaType: string }[];
    };
    expect(manifest.mediaType).to.equal('application/vnd.oci.image.manifest.v1+json');
    expect(manifest.config.mediaType).to.equal('application/vnd.oci.image.config.v1+json');
    expect(manifest.layers.map((l) => l.mediaType)).to.deep.equal([
      'application/vnd.oci.image.layer.v1.tar+gzip',
    ]);
    for (const tag of ['latest', revision]) {
      const out = mkdtempSync(path.join(runDir(), `oras-pull-${tag.slice(0, 8)}-`));
      await registry.oras(['pull', `${ref}:${tag}`, '--output', out]);
      expect(readFileSync(path.join(out, 'bundle.tar.gz')).equals(served.bytes), `:${tag}`).to.equal(true);
    }

    const opa = await opaWithConfig(readmeOpaConfig(registry));
    running.add(opa);
    await until(opa, 'authz/version', 1);
    writeFileSync(path.join(folder, 'authz', 'main.rego'), policy(2));
    await until(opa, 'authz/version', 2);
    const pushes = logged(s, 'bundle pushed to OCI');
    expect(pushes.length).to.be.greaterThanOrEqual(2);
    // The second revision shares the config blob with the first: only the layer and the manifest went.
    const second = pushes.at(-1) ?? {};
    const layerBytes = (await httpRequest(`${url}/bundles/policies`)).bytes.length;
    expect(second.uploadedBytes)
      .to.be.greaterThan(layerBytes)
      .and.lessThan(layerBytes + 2 * 1024);
  });

  it('pushes nothing for an unchanged revision (a restart, logged in from a docker config.json, finds the blobs and tags)', async () => {
    const repository = `--oci-repository=${registry.host}/opa/{bundle}`;
    const first = await sync([repository, `--oci-username=${USER}`, `--oci-password-file=${passwordFile}`]);
    await waitFor('a push or its check', () =>
      logged(first.sync, 'bundle pushed to OCI').length + logged(first.sync, 'bundle already in OCI').length >
      0
        ? true
        : undefined,
    );
    await stop(first.sync);
    const dockerConfig = path.join(runDir(), 'docker-config.json');
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    writeFileSync(dockerConfig, JSON.stringify({ auths: { [`http://${registry.host}`]: { auth } } }));
    const again = await sync([repository, `--oci-docker-config=${dockerConfig}`]);
    const [line] = await waitFor('the unchanged check', () => {
      const lines = logged(again.sync, 'bundle already in OCI');
      return lines.length > 0 ? lines : undefined;
    });
    expect(line?.uploadedBytes).to.equal(0);
    expect(logged(again.sync, 'bundle pushed to OCI')).to.deep.equal([]);
    const metrics = await httpRequest(`${again.sync.opsUrl}/metrics`);
    expect(metrics.body).to.match(/opa_sync_oci_pushes_total\{bundle="policies",result="unchanged"\} 1/);
  });

  it('pushes a signed bundle that activates with the right key and is refused with a wrong one', async () => {
    const signer = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(runDir(), 'oci-signing.pem');
    writeFileSync(keyFile, signer.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(path.join(folder, 'authz', 'main.rego'), policy(3));
    const { sync: s } = await sync([
      `--oci-repository=${registry.host}/opa/signed`,
      `--oci-username=${USER}`,
      `--oci-password-file=${passwordFile}`,
      `--bundle-signing-key=${keyFile}`,
      '--bundle-signing-keyid=fleet',
    ]);
    await waitFor('the signed push', () =>
      logged(s, 'bundle pushed to OCI').length + logged(s, 'bundle already in OCI').length > 0
        ? true
        : undefined,
    );
    const signedOpa = async (publicKey: string): Promise<OpaServer> => {
      const opa = await opaWithConfig({
        services: {
          reg: {
            url: `http://${registry.host}`,
            type: 'oci',
            credentials: { bearer: { scheme: 'Basic', token: `${USER}:${PASSWORD}` } },
          },
        },
        keys: { fleet: { algorithm: 'RS256', key: publicKey } },
        bundles: {
          policies: {
            service: 'reg',
            resource: `${registry.host}/opa/signed:latest`,
            polling: { min_delay_seconds: 1, max_delay_seconds: 2 },
            signing: { keyid: 'fleet' },
          },
        },
      });
      running.add(opa);
      return opa;
    };
    const good = await signedOpa(signer.publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const bad = await signedOpa(wrong.publicKey.export({ type: 'spki', format: 'pem' }).toString());
    await until(good, 'authz/version', 3);
    await waitFor('the wrong-key OPA to refuse the signature', () =>
      /verif/i.test(logTail(bad.process, 200)) ? true : undefined,
    );
    expect((await bad.request('/health?bundles=true')).status).to.not.equal(200);
    expect(await query(bad, 'authz/version')).to.equal(undefined);
  });

  it('a wrong registry password is a clear error and /ready check (oci false), while HTTP serving goes on', async () => {
    const wrongFile = path.join(runDir(), 'oci-wrong-password');
    writeFileSync(wrongFile, 'not-the-password\n');
    const { sync: s, url } = await sync([
      `--oci-repository=${registry.host}/opa/refused`,
      `--oci-username=${USER}`,
      `--oci-password-file=${wrongFile}`,
    ]);
    const [line] = await waitFor('the push failure', () => {
      const lines = logged(s, 'OCI push failed; retrying with backoff (bundles are still served over HTTP)');
      return lines.length > 0 ? lines : undefined;
    });
    expect(line?.code).to.equal('oci_auth_failed');
    expect(String(line?.err)).to.include(registry.host).and.include('opa/refused').and.include('401');
    const ready = await httpRequest(`${s.opsUrl}/ready`);
    expect(ready.status).to.equal(200);
    const body = JSON.parse(ready.body) as { checks: Record<string, boolean> };
    expect(body.checks.oci).to.equal(false);
    expect(body.checks['bundle-server']).to.equal(true);
    expect((await httpRequest(`${url}/bundles/policies`)).status).to.equal(200);
    const metrics = await httpRequest(`${s.opsUrl}/metrics`);
    expect(metrics.body).to.match(/opa_sync_oci_push_errors_total\{code="oci_auth_failed"\} [1-9]/);
  });

  it('pushes over HTTPS to a registry whose certificate --oci-ca-file trusts, and names the TLS failure without it', async () => {
    const ca = await testCa();
    const tlsRegistry = await startOciRegistry({ users: { [USER]: PASSWORD }, tlsCa: ca });
    running.add(tlsRegistry);
    const port = await getPort({ host: '127.0.0.1' });
    const common = [
      `--policies-dir=${folder}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
      `--oci-repository=${tlsRegistry.host}/opa/{bundle}`,
      `--oci-username=${USER}`,
      `--oci-password-file=${passwordFile}`,
    ];
    const trusted = await startOpaSync([...common, `--oci-ca-file=${ca.certFile}`]);
    running.add(trusted);
    await waitFor('the HTTPS push', () =>
      logged(trusted, 'bundle pushed to OCI').length > 0 ? true : undefined,
    );
    const manifest = JSON.parse(
      await tlsRegistry.oras(['manifest', 'fetch', `${tlsRegistry.host}/opa/policies:latest`]),
    ) as {
      layers: unknown[];
    };
    expect(manifest.layers).to.have.length(1);
    await stop(trusted);

    const untrusted = await startOpaSync(common);
    running.add(untrusted);
    const [line] = await waitFor('the TLS failure', () => {
      const lines = logged(
        untrusted,
        'OCI push failed; retrying with backoff (bundles are still served over HTTP)',
      );
      return lines.length > 0 ? lines : undefined;
    });
    expect(line?.code).to.equal('oci_unreachable');
    expect(String(line?.err))
      .to.include(tlsRegistry.host)
      .and.match(/certificate/i);
  });

  it("follows the registry's token-auth challenge (Bearer realm): a token fetched with the user and password", async () => {
    const ca = await testCa();
    const tokens = await startTokenService(ca, { [USER]: PASSWORD });
    running.add(tokens);
    const tokenRegistry = await startOciRegistry({
      users: { [USER]: PASSWORD },
      token: {
        realm: tokens.realm,
        service: tokens.service,
        issuer: tokens.issuer,
        rootCertFile: ca.certFile,
      },
    });
    running.add(tokenRegistry);
    const { sync: s } = await sync([
      `--oci-repository=${tokenRegistry.host}/opa/{bundle}`,
      `--oci-username=${USER}`,
      `--oci-password-file=${passwordFile}`,
    ]);
    await waitFor('the push through the token service', () =>
      logged(s, 'bundle pushed to OCI').length > 0 ? true : undefined,
    );
    expect(
      tokens.requests.some((r) => r.granted && r.scope === 'repository:opa/policies:pull,push'),
    ).to.equal(true);
    const manifest = JSON.parse(
      await tokenRegistry.oras(['manifest', 'fetch', `${tokenRegistry.host}/opa/policies:latest`]),
    ) as { layers: unknown[] };
    expect(manifest.layers).to.have.length(1);
  });
});
