// Replication of Kubernetes resources into OPA's data, against the real kube-apiserver and real OPAs:
// kube-mgmt's replicate scenario, NetworkPolicies in both layouts through creates, updates and deletes,
// the seed's use-case-1 Rego evaluated on the replicated data, a CRD installed after start, and OPA's
// data equal to the cluster's after an API server restart and after a forced 410 Gone.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import {
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  NetworkingV1Api,
  loadYaml,
  type KubeConfig,
  type V1NetworkPolicy,
} from '@kubernetes/client-node';
import {
  controlPlane,
  createNamespace,
  extraOpa,
  httpRequest,
  waitFor,
  type OpaServer,
} from '../harness/index.js';
import type { OpaSyncProcess } from '../harness/opa-sync.js';
import { cleanupAfterAll, evaluate, opaData, scrapeMetric, startSync } from '../harness/e2e.js';
import { sortKeys } from '../harness/json.js';
import { waitOpaMatchesCluster } from '../harness/cluster-model.js';

const fixture = (name: string): string =>
  readFileSync(new URL(`../fixtures/seed/${name}`, import.meta.url), 'utf8');

interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; managedFields?: unknown };
}

/** What OPA should hold for a collection: the cluster's objects as served, without managedFields. */
async function clusterCollection(
  listPath: string,
  apiVersion: string,
  kind: string,
  layout: 'namespaced' | 'by-name',
  keep: (o: KubeObject) => boolean = () => true,
): Promise<Record<string, unknown>> {
  const cp = await controlPlane();
  const res = await httpRequest(`${cp.server}${listPath}`, {
    ca: cp.ca.pem,
    headers: { authorization: `Bearer ${cp.adminToken}` },
  });
  const items = (JSON.parse(res.body) as { items: KubeObject[] }).items.filter(keep);
  const tree: Record<string, unknown> = {};
  for (const item of items.sort((a, b) =>
    (a.metadata.namespace ?? '').localeCompare(b.metadata.namespace ?? ''),
  )) {
    const obj = { ...item, apiVersion, kind, metadata: { ...item.metadata } };
    delete obj.metadata.managedFields;
    if (layout === 'by-name') {
      // The alphabetically first namespace wins a name collision.
      if (!(item.metadata.name in tree)) tree[item.metadata.name] = obj;
    } else {
      const ns = item.metadata.namespace ?? '';
      ((tree[ns] ??= {}) as Record<string, unknown>)[item.metadata.name] = obj;
    }
  }
  return tree;
}

/** Waits until OPA's document equals the expectation, then asserts it (so a timeout shows the diff). */
async function expectEventually(
  what: string,
  actual: () => Promise<unknown>,
  expected: () => Promise<unknown>,
): Promise<void> {
  try {
    await waitFor(
      what,
      async () =>
        JSON.stringify(sortKeys(await actual())) === JSON.stringify(sortKeys(await expected()))
          ? true
          : undefined,
      {
        timeoutMs: 20_000,
        intervalMs: 100,
      },
    );
  } catch {
    expect(await actual(), what).to.deep.equal(await expected());
  }
}

const NP_PATH = '/apis/networking.k8s.io/v1/networkpolicies';
const NP_VERSION = 'networking.k8s.io/v1';

function seedPolicy(file: string, namespace: string): V1NetworkPolicy {
  const np = loadYaml<V1NetworkPolicy>(fixture(file));
  return { ...np, metadata: { ...np.metadata, namespace } };
}

describe('replication: Kubernetes resources into OPA data (real OPA + kube-apiserver)', function () {
  this.timeout(180_000);
  let kc: KubeConfig;
  let core: CoreV1Api;
  let net: NetworkingV1Api;
  const stops = cleanupAfterAll();

  before(async () => {
    kc = (await controlPlane()).kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    net = kc.makeApiClient(NetworkingV1Api);
  });
  async function opaAndSync(
    args: string[],
    opaArgs: string[] = [],
  ): Promise<{ opa: OpaServer; sync: OpaSyncProcess }> {
    const opa = stops.add(await extraOpa({ extraArgs: opaArgs }));
    const sync = stops.add(
      await startSync({
        opa,
        args: ['--enable-policies=false', '--enable-data=false', '--opa-resync-interval=1s', ...args],
      }),
    );
    return { opa, sync };
  }

  it("kube-mgmt's scenario: --replicate=v1/services with an ignored namespace holds exactly the other services", async () => {
    const keep = await createNamespace('dont-ignore-me');
    const ignore = await createNamespace('ignore-me');
    const svc = (name: string) => ({ metadata: { name }, spec: { ports: [{ port: 80 }] } });
    await core.createNamespacedService({ namespace: keep, body: svc('kept') });
    await core.createNamespacedService({ namespace: ignore, body: svc('ignored') });
    const { opa } = await opaAndSync(['--replicate=v1/services', `--replicate-ignore-namespaces=${ignore}`]);
    await core.createNamespacedService({ namespace: keep, body: svc('added-later') });
    await core.createNamespacedService({ namespace: ignore, body: svc('ignored-later') });

    await expectEventually(
      'data.kubernetes.services equals the services outside the ignored namespace',
      () => opaData(opa, 'kubernetes/services'),
      () =>
        clusterCollection(
          '/api/v1/services',
          'v1',
          'Service',
          'namespaced',
          (o) => o.metadata.namespace !== ignore,
        ),
    );
    const services = (await opaData(opa, 'kubernetes/services')) as Record<
      string,
      Record<string, KubeObject>
    >;
    expect(Object.keys(services[keep] ?? {}).sort()).to.deep.equal(['added-later', 'kept']);
    expect(services[ignore]).to.equal(undefined);
    expect(services.default?.kubernetes?.metadata.name).to.equal('kubernetes');
    expect(JSON.stringify(services)).to.not.include('managedFields');
  });

  it('--replicate-cluster=networking.k8s.io/v1/networkpolicies: OPA equals the cluster in both layouts through creates, updates and deletes', async () => {
    const a = await createNamespace('np-a');
    const b = await createNamespace('np-b');
    const layered = await opaAndSync(['--replicate-cluster=networking.k8s.io/v1/networkpolicies']);
    const byName = await opaAndSync([
      '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
      '--replicate-cluster-by-name',
    ]);
    const np = (name: string, app: string): V1NetworkPolicy => ({
      metadata: { name },
      spec: { podSelector: { matchLabels: { app } }, policyTypes: ['Ingress'] },
    });
    const check = async (step: string): Promise<void> => {
      await expectEventually(
        `${step}: default layout`,
        () => opaData(layered.opa, 'kubernetes/networkpolicies'),
        () => clusterCollection(NP_PATH, NP_VERSION, 'NetworkPolicy', 'namespaced'),
      );
      await expectEventually(
        `${step}: by-name layout`,
        () => opaData(byName.opa, 'kubernetes/networkpolicies'),
        () => clusterCollection(NP_PATH, NP_VERSION, 'NetworkPolicy', 'by-name'),
      );
    };

    await net.createNamespacedNetworkPolicy({ namespace: a, body: np('one', 'x') });
    await net.createNamespacedNetworkPolicy({ namespace: a, body: np('two', 'y') });
    await net.createNamespacedNetworkPolicy({ namespace: b, body: np('three', 'z') });
    await check('after creates');

    await net.patchNamespacedNetworkPolicy({
      name: 'one',
      namespace: a,
      body: [{ op: 'replace', path: '/spec/podSelector/matchLabels/app', value: 'changed' }],
    });
    await check('after an update');
    const one = ((await opaData(layered.opa, `kubernetes/networkpolicies/${a}/one`)) as V1NetworkPolicy).spec
      ?.podSelector?.matchLabels;
    expect(one).to.deep.equal({ app: 'changed' });

    await net.deleteNamespacedNetworkPolicy({ name: 'two', namespace: a });
    await net.deleteNamespacedNetworkPolicy({ name: 'three', namespace: b });
    await check('after deletes');
    // The namespace whose last NetworkPolicy went is gone from OPA too.
    expect(await opaData(layered.opa, `kubernetes/networkpolicies/${b}`)).to.equal(undefined);

    // Same name in two namespaces: the by-name layout keeps the alphabetically first namespace's.
    await net.createNamespacedNetworkPolicy({ namespace: b, body: np('one', 'from-b') });
    await check('after a same-named NetworkPolicy in another namespace');
    const kept = (await opaData(byName.opa, 'kubernetes/networkpolicies/one')) as V1NetworkPolicy;
    expect(kept.metadata?.namespace).to.equal([a, b].sort()[0]);
    const warnings = byName.sync
      .logLines()
      .filter((l) => l.level === 40 && String(l.msg).includes('have the same name'));
    expect(warnings.length).to.be.greaterThan(0);
    expect(
      await scrapeMetric(byName.sync, 'opa_sync_replication_name_collisions_total', {
        collection: 'networking.k8s.io/v1/networkpolicies',
      }),
    ).to.be.at.least(1);
  });

  describe("the seed's use case 1 on replicated NetworkPolicies", () => {
    const podReview = (name: string) => ({
      request: {
        kind: { group: '', version: 'v1', kind: 'Pod' },
        operation: 'CREATE',
        object: {
          kind: 'Pod',
          apiVersion: 'v1',
          metadata: { name, labels: { app: 'prop', 'pod-template-hash': '9c9cf7d47' } },
        },
      },
    });
    const deny = (opa: OpaServer): Promise<unknown> =>
      evaluate(opa, 'kubernetes/admission/deny', podReview('prop-deployment-9c9cf7d47-qd74j'));
    const message =
      'The Pod: prop-deployment-9c9cf7d47-qd74j could not be created because it is missing an associated Network Security Policy.';

    async function scenario(opa: OpaServer, namespace: string): Promise<void> {
      await waitFor('the policy to deny without a NetworkPolicy for app=prop', async () =>
        JSON.stringify(await deny(opa)) === JSON.stringify([message]) ? true : undefined,
      );
      await net.createNamespacedNetworkPolicy({ namespace, body: seedPolicy('nap2.yaml', namespace) });
      await waitFor('app-inbound-policy2 to be replicated', async () =>
        JSON.stringify(await opaData(opa, 'kubernetes/networkpolicies')).includes('app-inbound-policy2')
          ? true
          : undefined,
      );
      expect(await deny(opa), 'still denied with only app: backend').to.deep.equal([message]);
      await net.createNamespacedNetworkPolicy({
        namespace,
        body: seedPolicy('network-policy.yaml', namespace),
      });
      await waitFor('the policy to allow once app-inbound-policy exists', async () =>
        JSON.stringify(await deny(opa)) === '[]' ? true : undefined,
      );
    }

    // Each variant runs in a fresh cluster state for its NetworkPolicies: one namespace each, cleaned after.
    it('the article’s Rego verbatim (OPA --v0-compatible) with --replicate-cluster-by-name', async () => {
      const namespace = await createNamespace('seed-v0');
      const { opa } = await opaAndSync(
        ['--replicate-cluster=networking.k8s.io/v1/networkpolicies', '--replicate-cluster-by-name'],
        ['--v0-compatible'],
      );
      const put = await opa.request('/v1/policies/opa/ensure-nap-existence/ensure-nap-exists.rego', {
        method: 'PUT',
        body: fixture('ensure-nap-exists.rego'),
      });
      expect(put.status, put.body).to.equal(200);
      await cleanSeedPolicies();
      await scenario(opa, namespace);
      await cleanSeedPolicies();
    });

    it('a Rego v1 version iterating networkpolicies[_][_] with the default layout', async () => {
      const namespace = await createNamespace('seed-v1');
      const { opa } = await opaAndSync(['--replicate-cluster=networking.k8s.io/v1/networkpolicies']);
      const put = await opa.request('/v1/policies/policies/ensure-nap-exists.rego', {
        method: 'PUT',
        body: readFileSync(
          new URL('../../policies/network-policies/ensure-nap-exists.rego', import.meta.url),
          'utf8',
        ),
      });
      expect(put.status, put.body).to.equal(200);
      await cleanSeedPolicies();
      await scenario(opa, namespace);
      await cleanSeedPolicies();
    });

    /** NetworkPolicies selecting app=prop elsewhere in the cluster would make the policy allow at once. */
    async function cleanSeedPolicies(): Promise<void> {
      const all = await net.listNetworkPolicyForAllNamespaces();
      for (const np of all.items) {
        if (
          np.spec?.podSelector?.matchLabels?.app === 'prop' ||
          np.metadata?.name?.startsWith('app-inbound-policy')
        ) {
          await net.deleteNamespacedNetworkPolicy({
            name: np.metadata?.name ?? '',
            namespace: np.metadata?.namespace ?? '',
          });
        }
      }
    }
  });

  it('replicates a CRD installed after opa-sync started', async () => {
    const group = `e2e${Date.now().toString(36)}.example.com`;
    const namespace = await createNamespace('crd');
    const opa = stops.add(await extraOpa());
    const sync = stops.add(
      await startSync({
        opa,
        args: ['--enable-policies=false', '--enable-data=false', `--replicate=${group}/v1/widgets`],
        waitReady: false,
      }),
    );
    // Not ready while the resource is not served; the error names it.
    const notReady = await waitFor('opa-sync to answer /ready', async () => {
      const res = await httpRequest(`${sync.opsUrl}/ready`).catch(() => undefined);
      return res?.status === 503 ? res : undefined;
    });
    expect(JSON.parse(notReady.body)).to.deep.include({ ready: false });
    await waitFor('the error naming the missing resource', () =>
      sync
        .logLines()
        .some((l) => l.level === 50 && String(l.msg).includes(`does not serve ${group}/v1/widgets`))
        ? true
        : undefined,
    );
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    await ext.createCustomResourceDefinition({
      body: {
        metadata: { name: `widgets.${group}` },
        spec: {
          group,
          scope: 'Namespaced',
          names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
          versions: [
            {
              name: 'v1',
              served: true,
              storage: true,
              schema: { openAPIV3Schema: { type: 'object', x_kubernetes_preserve_unknown_fields: true } },
            },
          ],
        },
      },
    });
    const custom = kc.makeApiClient(CustomObjectsApi);
    await waitFor('the CRD to be served', async () => {
      await custom.listNamespacedCustomObject({ group, version: 'v1', namespace, plural: 'widgets' });
      return true;
    });
    await custom.createNamespacedCustomObject({
      group,
      version: 'v1',
      namespace,
      plural: 'widgets',
      body: { apiVersion: `${group}/v1`, kind: 'Widget', metadata: { name: 'w1' }, spec: { size: 3 } },
    });
    await expectEventually(
      'data.kubernetes.widgets equals the cluster',
      () => opaData(opa, 'kubernetes/widgets'),
      () => clusterCollection(`/apis/${group}/v1/widgets`, `${group}/v1`, 'Widget', 'namespaced'),
    );
    const w1 = (await opaData(opa, `kubernetes/widgets/${namespace}/w1`)) as { spec: unknown };
    expect(w1.spec).to.deep.equal({ size: 3 });
    await sync.waitReady(20_000);
  });

  it('refuses --replicate on a cluster-scoped kind with a clear error', async () => {
    const opa = stops.add(await extraOpa());
    const sync = await startSync({ opa, args: ['--replicate=v1/namespaces'], waitReady: false });
    const exit = await sync.process.exited;
    expect(exit).to.not.equal('exit 0');
    const errors = sync
      .logLines()
      .filter((l) => l.level === 50)
      .map((l) => String(l.err));
    expect(errors.join('\n')).to.include(
      '--replicate=v1/namespaces: Namespace is cluster-scoped; use --replicate-cluster=v1/namespaces',
    );
  });

  it('OPA equals the cluster after an API server restart and after a forced 410 Gone', async () => {
    const namespace = await createNamespace('gone');
    const { opa, sync } = await opaAndSync(['--replicate-cluster=networking.k8s.io/v1/networkpolicies']);
    const np = (name: string): V1NetworkPolicy => ({
      metadata: { name },
      spec: { podSelector: { matchLabels: { app: name } } },
    });
    await net.createNamespacedNetworkPolicy({ namespace, body: np('before-restart') });
    const expected = () => clusterCollection(NP_PATH, NP_VERSION, 'NetworkPolicy', 'namespaced');
    const actual = () => opaData(opa, 'kubernetes/networkpolicies');
    await expectEventually('before the restart', actual, expected);

    const cp = await controlPlane();
    await cp.stopApiServer();
    await cp.startApiServer();
    await net.createNamespacedNetworkPolicy({ namespace, body: np('after-restart') });
    await expectEventually('after the API server restart', actual, expected);

    // Stall opa-sync's watch, change the cluster, compact etcd and restart the API server: the stalled
    // watch resumes from a resourceVersion that no longer exists and gets 410 Gone, so opa-sync must
    // relist and remove what was deleted meanwhile.
    process.kill(sync.process.pid, 'SIGSTOP');
    try {
      await net.deleteNamespacedNetworkPolicy({ name: 'before-restart', namespace });
      await net.createNamespacedNetworkPolicy({ namespace, body: np('while-stalled') });
      await compactEtcd(cp.etcdUrl);
      await cp.stopApiServer();
      await cp.startApiServer();
    } finally {
      process.kill(sync.process.pid, 'SIGCONT');
    }
    await expectEventually('after the forced 410', actual, expected);
    const names = Object.keys(
      ((await actual()) as Record<string, Record<string, unknown>>)[namespace] ?? {},
    ).sort();
    expect(names).to.deep.equal(['after-restart', 'while-stalled']);
    await waitOpaMatchesCluster(opa, { namespaces: [], networkPolicies: { namespaces: [namespace] } });
  });
});

/** Compacts etcd's history up to its current revision, through etcd's JSON gateway. */
async function compactEtcd(etcdUrl: string): Promise<void> {
  const range = await httpRequest(`${etcdUrl}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: Buffer.from('/').toString('base64') }),
  });
  const revision = (JSON.parse(range.body) as { header: { revision: string } }).header.revision;
  const compact = await httpRequest(`${etcdUrl}/v3/kv/compaction`, {
    method: 'POST',
    body: JSON.stringify({ revision, physical: true }),
  });
  expect(compact.status, compact.body).to.equal(200);
}
