// The deployment artifacts run for real, as far as this machine allows (no Docker, no kubelet):
// 1. docker-compose: the real opa runs with deploy/opa-config.yaml (only the service URL pointed at a
//    local opa-sync started with the compose command's flags) and activates and serves the bundle.
// 2. deploy/kubernetes: every manifest passes a server-side dry run on the real kube-apiserver; the
//    namespace, ServiceAccount, RBAC and policy ConfigMaps are applied for real; the init container's
//    script makes OPA's token and authz policy; OPA and opa-sync run with the Deployment's arguments,
//    opa-sync as the ServiceAccount with a token minted for it, and load the policies and replicate
//    NetworkPolicies; `kubectl auth can-i` with that token shows the RBAC grants nothing more.
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import getPort from 'get-port';
import {
  loadAllYaml,
  loadYaml,
  type KubernetesObject,
  type V1ClusterRole,
  type V1ClusterRoleBinding,
  type V1ConfigMap,
  type V1Container,
  type V1Deployment,
  type V1Role,
  type V1RoleBinding,
  type V1Service,
  type V1ValidatingWebhookConfiguration,
} from '@kubernetes/client-node';
import { OPA_VERSION, requireTool } from '../../scripts/tools.js';
import {
  controlPlane,
  createNamespace,
  extraOpa,
  httpRequest,
  kubectlRun,
  testCa,
  waitFor,
} from '../harness/index.js';
import { startOpaSync, type OpaSyncProcess } from '../harness/opa-sync.js';
import { logTail, startProcess, type ManagedProcess } from '../harness/processes.js';
import { runDir } from '../harness/run-dir.js';
import { StopWaiting } from '../harness/wait.js';
import { writeKubeconfig } from '../harness/kubeconfig.js';
import { createServingCert } from '../harness/certs.js';
import { cleanupAfterAll } from '../harness/e2e.js';

const execFileAsync = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const k8sDir = path.join(root, 'deploy', 'kubernetes');
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8');
const pkg = JSON.parse(read('package.json')) as { version: string };
const OPA_IMAGE = `openpolicyagent/opa:${OPA_VERSION.replace(/^v/, '')}`;
const SYNC_IMAGE = `opa-sync:${pkg.version}`;
const OK = '{"status":"ok"}';
const STATUS = 'openpolicyagent.org/policy-status';
const NO_NAP = 'is missing an associated Network Security Policy';

/** The value of `--name=value` in a command line; fails the test when absent or given twice. */
function flag(args: readonly string[], name: string): string {
  const values = args.filter((a) => a.startsWith(`--${name}=`)).map((a) => a.slice(name.length + 3));
  expect(values, `--${name} in ${JSON.stringify(args)}`).to.have.lengthOf(1);
  return values[0]!;
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

/** Dotted paths where two JSON documents differ. */
function differences(a: unknown, b: unknown, at = ''): string[] {
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    return Object.is(a, b) ? [] : [at];
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) =>
    differences(
      (a as Record<string, unknown>)[k],
      (b as Record<string, unknown>)[k],
      at === '' ? k : `${at}.${k}`,
    ),
  );
}

/** An AdmissionReview v1 for creating a Pod labelled app=<app>, as the API server sends it. */
function podReview(app: string, uid: string): unknown {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      operation: 'CREATE',
      namespace: 'apps',
      object: {
        metadata: { name: `${app}-pod`, namespace: 'apps', labels: { app } },
        spec: { containers: [{ name: 'c', image: 'nginx' }] },
      },
    },
  };
}

interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { message?: string };
}

interface ComposeService {
  command?: string[];
  volumes?: string[];
  healthcheck?: { test?: string[] };
}

/** The host path a compose service mounts at `target` (short syntax SOURCE:TARGET[:MODE]). */
function mountSource(service: ComposeService, target: string): string {
  const volume = (service.volumes ?? []).map((v) => v.split(':')).find((parts) => parts[1] === target);
  expect(volume, `a volume mounted at ${target}`).to.not.equal(undefined);
  return path.resolve(root, volume![0]!);
}

describe('docker-compose quick start: the real opa with deploy/opa-config.yaml pulls from opa-sync', function () {
  this.timeout(120_000);
  const compose = loadYaml<{ services: Record<string, ComposeService> }>(read('docker-compose.yml'));
  const syncService = compose.services['opa-sync']!;
  const opaService = compose.services.opa!;
  let sync: OpaSyncProcess | undefined;
  let opa: ManagedProcess | undefined;
  let opaUrl = '';
  let bundleUrl = '';

  before(async function () {
    const opaBin = requireTool('opa');
    const bundlePort = await getPort({ host: '127.0.0.1' });
    bundleUrl = `http://127.0.0.1:${bundlePort}`;
    // The compose command, flag by flag: what cannot be the same outside a container is mapped, and a
    // flag this test does not know fails it, so that the test keeps running what compose runs.
    const syncArgs = (syncService.command ?? []).flatMap((arg): string[] => {
      const [name, value = ''] = arg.split(/=(.*)/s);
      switch (name) {
        case '--policies-dir':
          return [`--policies-dir=${mountSource(syncService, value)}`];
        case '--bundle-addr':
          return [`--bundle-addr=127.0.0.1:${bundlePort}`];
        case '--health-endpoint':
          return []; // startOpaSync serves it on a free loopback port
        case '--opa-bin':
          return [`--opa-bin=${opaBin}`];
        default:
          throw new Error(`the compose command has ${arg}, which this test does not map yet`);
      }
    });
    expect(syncArgs).to.have.lengthOf(3);
    sync = await startOpaSync(syncArgs);

    const configFile = flag(opaService.command ?? [], 'config-file');
    const config = loadYaml<{ services: Record<string, { url: string }> }>(
      readFileSync(mountSource(opaService, configFile), 'utf8'),
    );
    const local = structuredClone(config);
    local.services['opa-sync']!.url = bundleUrl;
    // `opa-sync` only resolves inside compose's network: the URL is the one thing that changes.
    expect(differences(config, local)).to.deep.equal(['services.opa-sync.url']);
    const dir = path.join(runDir(), 'compose');
    mkdirSync(dir, { recursive: true });
    const localConfig = path.join(dir, 'opa-config.json'); // JSON is YAML: OPA reads it as it is
    writeFileSync(localConfig, JSON.stringify(local));

    const opaPort = await getPort({ host: '127.0.0.1' });
    opaUrl = `http://127.0.0.1:${opaPort}`;
    const opaArgs = (opaService.command ?? []).map((arg) => {
      if (arg.startsWith('--addr=')) return `--addr=127.0.0.1:${opaPort}`;
      if (arg === `--config-file=${configFile}`) return `--config-file=${localConfig}`;
      return arg;
    });
    opa = startProcess('compose-opa', opaBin, opaArgs, runDir());
  });

  after(async function () {
    await opa?.stop();
    await sync?.stop();
  });

  // The tests that query the compose OPA need its bundle active; the first to ask waits for it.
  let activation: Promise<void> | undefined;
  const activated = (): Promise<void> => (activation ??= waitActivated());

  async function waitActivated(): Promise<void> {
    const proc = opa!;
    await waitFor(
      'the compose OPA to activate its bundles',
      async () => {
        if (proc.hasExited()) throw new StopWaiting(`opa exited:\n${logTail(proc, 30)}`);
        return (await httpRequest(`${opaUrl}/health?bundles=true`, { timeoutMs: 1000 })).status === 200
          ? true
          : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    // The activated bundle may be one built before the whole folder was read (opa-sync's /ready does
    // not wait for that build); long polling brings the complete one: data.system.main then answers.
    await waitFor(
      'data.system.main in the compose OPA',
      async () => {
        const main = await httpRequest(`${opaUrl}/v1/data/system/main`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ input: podReview('web', 'probe') }),
        });
        return (JSON.parse(main.body) as { result?: unknown }).result !== undefined ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
  }

  it('activates the bundle: /health?bundles=true answers 200 and data.system.main is defined', async function () {
    await activated();
    expect((await httpRequest(`${opaUrl}/health?bundles=true`)).status).to.equal(200);
    const res = await httpRequest(`${opaUrl}/v1/data/system/bundles/policies/manifest/revision`);
    expect((JSON.parse(res.body) as { result?: string }).result)
      .to.be.a('string')
      .and.not.equal('');
  });

  it('answers admission queries with the policies of policies/, also as its default decision', async function () {
    await activated();
    const post = (url: string, body: unknown) =>
      httpRequest(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const denied = await post(`${opaUrl}/v1/data/system/main`, { input: podReview('prop', 'u-1') });
    expect(denied.status).to.equal(200);
    const main = (JSON.parse(denied.body) as { result: { response: AdmissionResponse } }).result;
    expect(main.response.uid).to.equal('u-1');
    expect(main.response.allowed).to.equal(false);
    expect(main.response.status?.message).to.include(
      `The Pod: prop-pod could not be created because it ${NO_NAP}.`,
    );

    // POST / is what an admission webhook without a path calls: default_decision answers it.
    const allowed = await post(`${opaUrl}/`, podReview('web', 'u-2'));
    expect(allowed.status).to.equal(200);
    const review = JSON.parse(allowed.body) as { kind: string; response: AdmissionResponse };
    expect(review.kind).to.equal('AdmissionReview');
    expect(review.response).to.deep.equal({ uid: 'u-2', allowed: true });
  });

  it('reports its status to opa-sync: the fleet view shows the revision OPA activated', async function () {
    await activated();
    const res = await httpRequest(`${opaUrl}/v1/data/system/bundles/policies/manifest/revision`);
    const revision = (JSON.parse(res.body) as { result: string }).result;
    await waitFor('the compose OPA in the fleet view', async () => {
      const fleet = JSON.parse((await httpRequest(`${bundleUrl}/v1/fleet`)).body) as {
        instances: { bundles: { name: string; activeRevision?: string }[] }[];
      };
      const active = fleet.instances.flatMap((i) => i.bundles).filter((b) => b.name === 'policies');
      return active.some((b) => b.activeRevision === revision) ? true : undefined;
    });
  });

  it("compose's health check passes on a ready opa-sync and fails where nothing answers", async function () {
    const test = syncService.healthcheck?.test ?? [];
    const port = portOf(flag(syncService.command ?? [], 'health-endpoint'));
    const script = test[3]!;
    expect(script).to.include(`http://127.0.0.1:${port}/`);
    const run = (url: string) =>
      spawnSync(process.execPath, ['-e', script.replace(`http://127.0.0.1:${port}`, url)], {
        timeout: 20_000,
      }).status;
    expect(run(sync!.opsUrl)).to.equal(0);
    expect(run(`http://127.0.0.1:${await getPort({ host: '127.0.0.1' })}`)).to.equal(1);
  });
});

// ---------------------------------------------------------------------------------------------------

const kustomization = loadYaml<{ resources: string[] }>(read('deploy/kubernetes/kustomization.yaml'));
const objects: KubernetesObject[] = kustomization.resources.flatMap(
  (file) => loadAllYaml(readFileSync(path.join(k8sDir, file), 'utf8')) as KubernetesObject[],
);

function find<T extends KubernetesObject>(kind: string, name: string): T {
  const found = objects.filter((o) => o.kind === kind && o.metadata?.name === name);
  expect(found, `${kind} ${name}`).to.have.lengthOf(1);
  return found[0] as T;
}

const deployment = find<V1Deployment>('Deployment', 'opa');
const podSpec = deployment.spec!.template.spec!;
function container(name: string): V1Container {
  const c = [...(podSpec.initContainers ?? []), ...podSpec.containers].find((x) => x.name === name);
  expect(c, `container ${name}`).to.not.equal(undefined);
  return c!;
}
const syncContainer = container('opa-sync');
const opaContainer = container('opa');
const initContainer = container('bootstrap');
const syncArgs = syncContainer.args ?? [];

/** The volume mounted at the folder that holds `file` in `c`, or undefined. */
function volumeOf(c: V1Container, file: string): string | undefined {
  return c.volumeMounts?.find((m) => path.dirname(file) === m.mountPath)?.name;
}

describe('deploy/kubernetes: the manifests as written', function () {
  it('lists every manifest of the folder in kustomization.yaml', function () {
    const files = readdirSync(k8sDir)
      .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
      .sort();
    expect([...kustomization.resources].sort()).to.deep.equal(files);
  });

  it('puts every namespaced object into namespace opa', function () {
    const clusterScoped = [
      'Namespace',
      'ClusterRole',
      'ClusterRoleBinding',
      'ValidatingWebhookConfiguration',
    ];
    for (const o of objects) {
      if (clusterScoped.includes(o.kind!)) expect(o.metadata?.namespace, o.kind).to.equal(undefined);
      else expect(o.metadata?.namespace, `${o.kind} ${o.metadata?.name}`).to.equal('opa');
    }
    find('Namespace', 'opa');
  });

  it('runs the pinned images: OPA on 8443 with TLS and token authorization, opa-sync with its arguments', function () {
    expect(opaContainer.image).to.equal(OPA_IMAGE);
    expect(syncContainer.image).to.equal(SYNC_IMAGE);
    // The init container needs /bin/sh, tr, dd and cat: the opa-sync image has them, OPA's has not.
    expect(initContainer.image).to.equal(SYNC_IMAGE);
    const opaArgs = opaContainer.args ?? [];
    expect(opaArgs.slice(0, 2)).to.deep.equal(['run', '--server']);
    expect(flag(opaArgs, 'addr')).to.equal('0.0.0.0:8443');
    expect(flag(opaArgs, 'authentication')).to.equal('token');
    expect(flag(opaArgs, 'authorization')).to.equal('basic');
    const tlsVolume = podSpec.volumes?.find((v) => v.secret?.secretName === 'opa-server-tls')?.name;
    expect(tlsVolume).to.be.a('string');
    expect(volumeOf(opaContainer, flag(opaArgs, 'tls-cert-file'))).to.equal(tlsVolume);
    expect(volumeOf(opaContainer, flag(opaArgs, 'tls-private-key-file'))).to.equal(tlsVolume);
    expect([...syncArgs].sort()).to.deep.equal(
      [
        '--opa-url=https://127.0.0.1:8443/v1',
        '--opa-allow-insecure',
        '--opa-auth-token-file=/bootstrap/mgmt-token',
        '--namespaces=opa',
        '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
        '--health-endpoint=0.0.0.0:8000',
        '--admission-addr=0.0.0.0:8444',
        '--admission-tls-cert-file=/admission-tls/tls.crt',
        '--admission-tls-key-file=/admission-tls/tls.key',
      ].sort(),
    );
    expect(new URL(flag(syncArgs, 'opa-url')).port).to.equal(String(portOf(flag(opaArgs, 'addr'))));
  });

  it('shares the token and the authz policy the init container writes with opa-sync and OPA', function () {
    const dir = initContainer.env?.find((e) => e.name === 'BOOTSTRAP_DIR')?.value;
    expect(initContainer.command).to.deep.equal(['/bin/sh', '-c']);
    const bootstrap = initContainer.volumeMounts?.find((m) => m.mountPath === dir)?.name;
    expect(podSpec.volumes?.find((v) => v.name === bootstrap)?.emptyDir).to.not.equal(undefined);
    expect(volumeOf(syncContainer, flag(syncArgs, 'opa-auth-token-file'))).to.equal(bootstrap);
    expect(flag(syncArgs, 'opa-auth-token-file')).to.equal(`${dir}/mgmt-token`);
    const authz = (opaContainer.args ?? []).filter((a) => !a.startsWith('-') && a.endsWith('.rego'));
    expect(authz).to.deep.equal([`${dir}/authz.rego`]);
    expect(volumeOf(opaContainer, authz[0]!)).to.equal(bootstrap);
  });

  it("probes opa-sync's /ready and /health on its --health-endpoint port, and OPA's /health over HTTPS", function () {
    const opsPort = syncContainer.ports?.find((p) => p.name === syncContainer.readinessProbe?.httpGet?.port);
    expect(opsPort?.containerPort).to.equal(portOf(flag(syncArgs, 'health-endpoint')));
    expect(syncContainer.readinessProbe?.httpGet?.path).to.equal('/ready');
    expect(syncContainer.livenessProbe?.httpGet?.path).to.equal('/health');
    expect(syncContainer.livenessProbe?.httpGet?.port).to.equal(opsPort?.name);
    for (const probe of [opaContainer.readinessProbe, opaContainer.livenessProbe]) {
      expect(probe?.httpGet?.path).to.equal('/health');
      expect(probe?.httpGet?.scheme).to.equal('HTTPS');
    }
  });

  it('runs every container non-root, read-only, without capabilities, with requests and a memory limit', function () {
    expect(podSpec.securityContext?.runAsNonRoot).to.equal(true);
    expect(podSpec.securityContext?.runAsUser).to.be.greaterThan(0);
    expect(podSpec.securityContext?.seccompProfile?.type).to.equal('RuntimeDefault');
    expect(podSpec.automountServiceAccountToken).to.equal(false);
    expect(podSpec.serviceAccountName).to.equal('opa-sync');
    for (const c of [...(podSpec.initContainers ?? []), ...podSpec.containers]) {
      expect(c.securityContext?.allowPrivilegeEscalation, c.name).to.equal(false);
      expect(c.securityContext?.readOnlyRootFilesystem, c.name).to.equal(true);
      expect(c.securityContext?.capabilities?.drop, c.name).to.deep.equal(['ALL']);
      expect(c.resources?.requests?.cpu, c.name).to.be.a('string');
      expect(c.resources?.requests?.memory, c.name).to.be.a('string');
      expect(c.resources?.limits?.memory, c.name).to.be.a('string');
    }
    // Only opa-sync gets the ServiceAccount token.
    const tokenVolume = podSpec.volumes?.find((v) =>
      v.projected?.sources?.some((s) => s.serviceAccountToken !== undefined),
    )?.name;
    for (const c of [...(podSpec.initContainers ?? []), ...podSpec.containers]) {
      const mounted = c.volumeMounts?.some((m) => m.name === tokenVolume) ?? false;
      expect(mounted, c.name).to.equal(c.name === 'opa-sync');
    }
  });

  it("exposes OPA's HTTPS port as Service opa:443, which the webhook calls", function () {
    const service = find<V1Service>('Service', 'opa');
    expect(service.spec?.selector).to.deep.equal(deployment.spec?.selector.matchLabels);
    const port = service.spec?.ports?.[0];
    expect(port?.port).to.equal(443);
    const target = opaContainer.ports?.find((p) => p.name === port?.targetPort);
    expect(target?.containerPort).to.equal(8443);

    const config = find<V1ValidatingWebhookConfiguration>(
      'ValidatingWebhookConfiguration',
      'validating-webhook.openpolicyagent.org',
    );
    expect(config.webhooks).to.have.lengthOf(1);
    const hook = config.webhooks![0]!;
    expect(hook.clientConfig.service).to.deep.equal({ name: 'opa', namespace: 'opa', port: 443 });
    expect(hook.admissionReviewVersions).to.deep.equal(['v1']);
    expect(hook.sideEffects).to.equal('None');
    expect(hook.failurePolicy).to.equal('Fail');
    expect(hook.rules?.map((r) => [r.apiGroups, r.resources, r.operations])).to.deep.equal([
      [[''], ['pods'], ['CREATE']],
      [['networking.k8s.io'], ['networkpolicies'], ['CREATE', 'UPDATE']],
    ]);
    expect(hook.namespaceSelector?.matchExpressions).to.deep.equal([
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'opa'] },
    ]);
    // The placeholder decodes to what the comment above it says it is.
    expect(Buffer.from(hook.clientConfig.caBundle!, 'base64').toString()).to.match(/^REPLACE-ME: /);
    expect(read('deploy/kubernetes/webhook.yaml')).to.include(
      Buffer.from(hook.clientConfig.caBundle!, 'base64').toString(),
    );
  });

  it("wires opa-sync's admission webhook: Service, certificate Secret, one webhook per label, failurePolicy Ignore", function () {
    const service = find<V1Service>('Service', 'opa-sync-admission');
    expect(service.spec?.selector).to.deep.equal(deployment.spec?.selector.matchLabels);
    const port = service.spec?.ports?.[0];
    expect(port?.port).to.equal(443);
    const target = syncContainer.ports?.find((p) => p.name === port?.targetPort);
    expect(target?.containerPort).to.equal(portOf(flag(syncArgs, 'admission-addr')));
    const tlsVolume = podSpec.volumes?.find((v) => v.secret?.secretName === 'opa-sync-admission-tls')?.name;
    expect(tlsVolume).to.be.a('string');
    expect(volumeOf(syncContainer, flag(syncArgs, 'admission-tls-cert-file'))).to.equal(tlsVolume);
    expect(volumeOf(syncContainer, flag(syncArgs, 'admission-tls-key-file'))).to.equal(tlsVolume);

    const config = find<V1ValidatingWebhookConfiguration>(
      'ValidatingWebhookConfiguration',
      'opa-sync.openpolicyagent.org',
    );
    const namespaces = flag(syncArgs, 'namespaces').split(',');
    expect(config.webhooks?.map((h) => h.objectSelector?.matchLabels)).to.deep.equal([
      { 'openpolicyagent.org/policy': 'rego' },
      { 'openpolicyagent.org/data': 'opa' },
    ]);
    for (const hook of config.webhooks ?? []) {
      expect(hook.clientConfig.service).to.deep.equal({
        name: 'opa-sync-admission',
        namespace: 'opa',
        port: 443,
        path: '/validate/configmaps',
      });
      expect(hook.admissionReviewVersions).to.deep.equal(['v1']);
      expect(hook.sideEffects).to.equal('None');
      expect(hook.failurePolicy).to.equal('Ignore');
      expect(hook.timeoutSeconds).to.be.within(1, 10);
      expect(hook.rules?.map((r) => [r.apiGroups, r.resources, r.operations])).to.deep.equal([
        [[''], ['configmaps'], ['CREATE', 'UPDATE', 'DELETE']],
      ]);
      expect(hook.namespaceSelector?.matchExpressions).to.deep.equal([
        { key: 'kubernetes.io/metadata.name', operator: 'In', values: namespaces },
      ]);
      const placeholder = Buffer.from(hook.clientConfig.caBundle!, 'base64').toString();
      expect(placeholder).to.match(/^REPLACE-ME: /);
      expect(read('deploy/kubernetes/admission-webhook.yaml')).to.include(placeholder);
    }
  });

  it('grants configmaps list/watch/patch in each watched namespace and list/watch on networkpolicies', function () {
    const subject = [{ kind: 'ServiceAccount', name: 'opa-sync', namespace: 'opa' }];
    const namespaces = flag(syncArgs, 'namespaces').split(',');
    for (const namespace of namespaces) {
      const role = objects.find((o) => o.kind === 'Role' && o.metadata?.namespace === namespace) as V1Role;
      expect(role.rules).to.deep.equal([
        { apiGroups: [''], resources: ['configmaps'], verbs: ['list', 'watch', 'patch'] },
      ]);
      const binding = find<V1RoleBinding>('RoleBinding', role.metadata!.name!);
      expect(binding.roleRef).to.deep.equal({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: role.metadata!.name,
      });
      expect(binding.subjects).to.deep.equal(subject);
    }
    const clusterRole = find<V1ClusterRole>('ClusterRole', 'opa-sync-replicate');
    expect(clusterRole.rules).to.deep.equal([
      { apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: ['list', 'watch'] },
    ]);
    const binding = find<V1ClusterRoleBinding>('ClusterRoleBinding', 'opa-sync-replicate');
    expect(binding.roleRef.name).to.equal('opa-sync-replicate');
    expect(binding.subjects).to.deep.equal(subject);
    expect(objects.filter((o) => /Role/.test(o.kind!))).to.have.lengthOf(4);
  });

  it('ships the Rego of policies/ byte for byte, labelled as policies', function () {
    const expected: Record<string, Record<string, string>> = {
      'opa-default-system-main': { 'main.rego': read('policies/system/main.rego') },
      'network-policies': {
        'enforce-correct-nap.rego': read('policies/network-policies/enforce-correct-nap.rego'),
        'ensure-nap-exists.rego': read('policies/network-policies/ensure-nap-exists.rego'),
      },
    };
    for (const [name, data] of Object.entries(expected)) {
      const cm = find<V1ConfigMap>('ConfigMap', name);
      expect(cm.data, name).to.deep.equal(data);
      expect(cm.metadata?.labels?.['openpolicyagent.org/policy']).to.equal('rego');
    }
  });
});

describe('deploy/kubernetes on the real kube-apiserver: dry run, RBAC, opa-sync as its ServiceAccount', function () {
  this.timeout(240_000);
  const stops = cleanupAfterAll();
  let appNamespace: string | undefined;

  const kubectlOk = async (args: string[], input?: string): Promise<string> => {
    const res = await kubectlRun(args, { cwd: root, ...(input === undefined ? {} : { input }) });
    expect(res.code, `kubectl ${args.join(' ')}: ${res.stderr}`).to.equal(0);
    return res.stdout;
  };

  // Namespace `opa` is used by other tests too: leave nothing of ours behind, and start from nothing.
  const cleanUp = async (): Promise<void> => {
    await kubectlOk([
      'delete',
      '-k',
      'deploy/kubernetes',
      '--ignore-not-found',
      '--wait=true',
      '--timeout=120s',
    ]);
    if (appNamespace !== undefined) await kubectlOk(['delete', 'namespace', appNamespace, '--wait=false']);
  };

  before(async function () {
    await controlPlane();
    await cleanUp();
  });

  after(async function () {
    await stops.run();
    await cleanUp();
  });

  // What several tests need, made by the first that asks (so each test also runs alone).
  let applying: Promise<void> | undefined;
  /** Namespace opa, its ServiceAccount, RBAC and policy ConfigMaps, applied for real. */
  const applied = (): Promise<void> =>
    (applying ??= (async () => {
      const real = ['namespace.yaml', 'serviceaccount.yaml', 'rbac.yaml', 'policies.yaml'];
      await kubectlOk(['apply', ...real.flatMap((f) => ['-f', `deploy/kubernetes/${f}`])]);
    })());

  /** Runs the init container's script with BOOTSTRAP_DIR=dir; returns the token it wrote. */
  const runBootstrap = (dir: string): string => {
    const script = initContainer.args?.[0] ?? '';
    mkdirSync(dir, { recursive: true });
    const res = spawnSync('/bin/sh', ['-c', script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BOOTSTRAP_DIR: dir },
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(res.status, res.stderr).to.equal(0);
    return readFileSync(path.join(dir, 'mgmt-token'), 'utf8');
  };
  let bootstrapping: { dir: string; token: string } | undefined;
  /** The folder the init container writes (token, authz policy), as the pod's containers share it. */
  const bootstrapped = (): { dir: string; token: string } => {
    if (bootstrapping === undefined) {
      const dir = path.join(runDir(), 'bootstrap');
      bootstrapping = { dir, token: runBootstrap(dir) };
    }
    return bootstrapping;
  };

  let minting: Promise<string> | undefined;
  /** A kubeconfig with a token minted for ServiceAccount opa/opa-sync. */
  const saKubeconfig = (): Promise<string> =>
    (minting ??= (async () => {
      await applied();
      const cp = await controlPlane();
      const minted = (await kubectlOk(['create', 'token', 'opa-sync', '-n', 'opa', '--duration=1h'])).trim();
      const file = path.join(runDir(), 'kubeconfig-opa-sync-deploy.json');
      writeKubeconfig(file, cp.server, cp.ca.pem, 'opa-sync', minted);
      return file;
    })());

  it('applies the namespace, ServiceAccount, RBAC and policies, and passes a server-side dry run of everything', async function () {
    await applied();
    const res = await kubectlRun(['apply', '--dry-run=server', '-k', 'deploy/kubernetes'], { cwd: root });
    expect(res.code, res.stderr).to.equal(0);
    // No Pod Security warnings: the namespace warns on anything below `restricted`.
    expect(res.stderr).to.equal('');
    for (const o of objects) {
      const kind = o.kind!.toLowerCase();
      const name = o.metadata!.name!.replace(/\./g, '\\.');
      expect(res.stdout).to.match(
        new RegExp(`^${kind}(\\.[a-z0-9.]+)?/${name} \\w+ \\(server dry run\\)$`, 'm'),
      );
    }
  });

  it("the Deployment's pod is admitted under the namespace's `restricted` Pod Security enforcement", async function () {
    await applied();
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'opa-pod-security-probe',
        namespace: 'opa',
        labels: deployment.spec!.template.metadata!.labels,
      },
      spec: podSpec,
    };
    await kubectlOk(['create', '--dry-run=server', '-f', '-'], JSON.stringify(pod));
    // The control: a pod without the security settings is refused there.
    const plain = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'plain-probe', namespace: 'opa' },
      spec: { containers: [{ name: 'c', image: SYNC_IMAGE }] },
    };
    const refused = await kubectlRun(['create', '--dry-run=server', '-f', '-'], {
      input: JSON.stringify(plain),
    });
    expect(refused.code).to.not.equal(0);
    expect(refused.stderr).to.include('violates PodSecurity "restricted');
  });

  it("the init container's script writes a random token and an authz policy that OPA compiles", function () {
    const { dir: bootstrapDir, token } = bootstrapped();
    expect(token).to.match(/^[A-F0-9]{32}$/);
    expect(runBootstrap(path.join(runDir(), 'bootstrap-again'))).to.not.equal(token);
    const authz = readFileSync(path.join(bootstrapDir, 'authz.rego'), 'utf8');
    expect(authz).to.include(`allow if input.identity == "${token}"`);
    const check = spawnSync(
      requireTool('opa'),
      ['check', '--strict', path.join(bootstrapDir, 'authz.rego')],
      {
        encoding: 'utf8',
      },
    );
    expect(check.status, check.stderr).to.equal(0);
  });

  it("runs OPA and opa-sync with the Deployment's arguments: ready, policies loaded, NetworkPolicies replicated", async function () {
    await applied();
    const { dir: bootstrapDir, token } = bootstrapped();
    // OPA as the Deployment runs it, on a free loopback port with the run's CA instead of Secret
    // opa-server-tls, and the authz policy the init container wrote.
    const opaArgs = (opaContainer.args ?? []).filter(
      (a) =>
        !['run', '--server'].includes(a) &&
        !/^--(addr|tls-cert-file|tls-private-key-file)=/.test(a) &&
        !a.endsWith('/authz.rego'),
    );
    const opa = stops.add(
      await extraOpa({
        tlsCa: await testCa(),
        extraArgs: opaArgs,
        paths: [path.join(bootstrapDir, 'authz.rego')],
      }),
    );

    const admissionPort = await getPort({ host: '127.0.0.1' });
    const admissionCert = await createServingCert(await testCa(), 'deploy-admission');
    // Exactly the manifest's arguments, except where OPA is, the token file, the health port, and the
    // admission webhook's address and certificate.
    const args = syncArgs.flatMap((arg): string[] => {
      if (arg.startsWith('--opa-url=')) return [`--opa-url=${opa.url}/v1`];
      if (arg.startsWith('--opa-auth-token-file='))
        return [`--opa-auth-token-file=${path.join(bootstrapDir, 'mgmt-token')}`];
      if (arg.startsWith('--health-endpoint=')) return [];
      // The admission webhook on a free loopback port, with a certificate of the run's CA.
      if (arg.startsWith('--admission-addr=')) return [`--admission-addr=127.0.0.1:${admissionPort}`];
      if (arg.startsWith('--admission-tls-cert-file='))
        return [`--admission-tls-cert-file=${admissionCert.certFile}`];
      if (arg.startsWith('--admission-tls-key-file='))
        return [`--admission-tls-key-file=${admissionCert.keyFile}`];
      return [arg];
    });
    expect(args).to.include('--opa-allow-insecure');
    // Still running when it fails to get ready, so that the failure report shows its log.
    const sync = stops.add(
      await startOpaSync([`--kubeconfig=${await saKubeconfig()}`, ...args], { waitReady: false }),
    );
    await sync.waitReady();

    for (const name of ['opa-default-system-main', 'network-policies']) {
      await waitFor(`status of opa/${name}`, async () => {
        const cm = JSON.parse(
          await kubectlOk(['get', 'configmap', name, '-n', 'opa', '-o', 'json']),
        ) as V1ConfigMap;
        return cm.metadata?.annotations?.[STATUS] === OK ? true : undefined;
      });
    }
    const auth = { authorization: `Bearer ${token}` };
    const policies = JSON.parse((await opa.request('/v1/policies', { headers: auth })).body) as {
      result: { id: string }[];
    };
    expect(policies.result.map((p) => p.id)).to.include.members([
      'opa/opa-default-system-main/main.rego',
      'opa/network-policies/enforce-correct-nap.rego',
      'opa/network-policies/ensure-nap-exists.rego',
    ]);

    // OPA requires the token for everything but the webhook's POST / and the probes' GET /health.
    expect((await opa.request('/v1/policies')).status).to.equal(401);
    expect(
      (await opa.request('/v1/policies', { headers: { authorization: 'Bearer wrong' } })).status,
    ).to.equal(401);
    expect((await opa.request('/health')).status).to.equal(200);
    const webhookCall = async (uid: string): Promise<AdmissionResponse> => {
      const res = await opa.request('/', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(podReview('prop', uid)),
      });
      expect(res.status, res.body).to.equal(200);
      return (JSON.parse(res.body) as { response: AdmissionResponse }).response;
    };
    const before = await webhookCall('before');
    expect(before.allowed).to.equal(false);
    expect(before.status?.message).to.include(NO_NAP);

    // A NetworkPolicy for app=prop, created by the admin elsewhere, reaches OPA through the ClusterRole.
    appNamespace = await createNamespace('deploy-apps');
    const np = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'app-inbound-policy', namespace: appNamespace },
      spec: {
        podSelector: { matchLabels: { app: 'prop' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'frontend' } } }] }],
      },
    };
    await kubectlOk(['apply', '-f', '-'], JSON.stringify(np));
    const ns = appNamespace;
    await waitFor('the NetworkPolicy in OPA', async () => {
      const res = await opa.request(`/v1/data/kubernetes/networkpolicies/${ns}/app-inbound-policy`, {
        headers: auth,
      });
      const doc = (JSON.parse(res.body) as { result?: { spec?: unknown } }).result;
      return doc?.spec !== undefined ? true : undefined;
    });
    const after = await webhookCall('after');
    expect(after).to.deep.equal({ uid: 'after', allowed: true });

    // opa-sync's own webhook answers, as this ServiceAccount, with no permission added for it.
    const review = await httpRequest(`https://127.0.0.1:${admissionPort}/validate/configmaps`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      ca: (await testCa()).pem,
      body: JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: 'cm',
          operation: 'CREATE',
          namespace: 'opa',
          name: 'typo',
          resource: { group: '', version: 'v1', resource: 'configmaps' },
          object: {
            metadata: { name: 'typo', namespace: 'opa', labels: { 'openpolicyagent.org/policy': 'rego' } },
            data: { 'p.rego': 'package typo\n\nx := count(1)\n' },
          },
        },
      }),
    });
    expect(review.status, review.body).to.equal(200);
    expect((JSON.parse(review.body) as { response: AdmissionResponse }).response.status?.message).to.equal(
      'configmap opa/typo does not compile: opa/typo/p.rego:3:6: rego_type_error: count: invalid argument(s)',
    );

    const forbidden = sync.logLines().filter((l) => JSON.stringify(l).toLowerCase().includes('forbidden'));
    expect(forbidden, 'opa-sync was refused something').to.deep.equal([]);
  });

  it('grants the ServiceAccount nothing beyond what opa-sync needs (kubectl auth can-i with its token)', async function () {
    const kubeconfig = await saKubeconfig();
    const canI = async (...args: string[]): Promise<boolean> => {
      try {
        await execFileAsync(
          requireTool('kubectl'),
          [`--kubeconfig=${kubeconfig}`, 'auth', 'can-i', ...args],
          {
            timeout: 30_000,
          },
        );
        return true;
      } catch (err) {
        const e = err as { code?: unknown; stdout?: string; stderr?: string };
        // Exit code 1 with "no" is a refusal; anything else is a broken check.
        expect(e.code, `${args.join(' ')}: ${e.stderr ?? ''}`).to.equal(1);
        expect(e.stdout?.trim()).to.match(/^no/);
        return false;
      }
    };
    const allowed = [
      ['list', 'configmaps', '-n', 'opa'],
      ['watch', 'configmaps', '-n', 'opa'],
      ['patch', 'configmaps', '-n', 'opa'],
      ['list', 'networkpolicies.networking.k8s.io', '--all-namespaces'],
      ['watch', 'networkpolicies.networking.k8s.io', '--all-namespaces'],
    ];
    const refused = [
      ['get', 'configmaps', '-n', 'opa'],
      ['list', 'configmaps', '-n', 'default'],
      ['list', 'configmaps', '--all-namespaces'],
      ['update', 'configmaps', '-n', 'opa'],
      ['create', 'configmaps', '-n', 'opa'],
      ['delete', 'configmaps', '-n', 'opa'],
      ['get', 'secrets', '-n', 'opa'],
      ['list', 'secrets', '--all-namespaces'],
      ['create', 'networkpolicies.networking.k8s.io', '-n', 'default'],
      ['update', 'networkpolicies.networking.k8s.io', '-n', 'opa'],
      ['get', 'networkpolicies.networking.k8s.io', '-n', 'default'],
      ['list', 'pods', '--all-namespaces'],
      ['create', 'pods', '-n', 'opa'],
      ['create', 'serviceaccounts', '--subresource=token', '-n', 'opa'],
      ['patch', 'validatingwebhookconfigurations.admissionregistration.k8s.io'],
    ];
    for (const args of allowed) expect(await canI(...args), args.join(' ')).to.equal(true);
    for (const args of refused) expect(await canI(...args), args.join(' ')).to.equal(false);
  });
});
