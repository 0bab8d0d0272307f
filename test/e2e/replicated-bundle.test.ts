// Replicated Kubernetes data for OPAs outside the cluster (--bundle-replicated), against the real
// kube-apiserver and real OPAs: one opa-sync pushes NetworkPolicies into a sidecar OPA and serves them
// as a data bundle; an OPA that only pulls that bundle (the README's configuration) holds the same
// data.kubernetes.networkpolicies as the pushed OPA and as the cluster, and answers the article's
// use-case-1 query the same, through creates, updates and deletes, and after 1,000 updates; with
// deltas, one-object changes travel as small delta bundles; and the bundle is published to OCI too.
import { mkdtempSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { NetworkingV1Api, loadYaml, type V1NetworkPolicy } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { opaWithConfig } from '../harness/bundles.js';
import { cleanupAfterAll, evaluate, opaData, scrapeMetric, startBundleSync } from '../harness/e2e.js';
import {
  controlPlane,
  createNamespace,
  extraOpa,
  httpRequest,
  waitFor,
  type OpaServer,
} from '../harness/index.js';
import { sortKeys } from '../harness/json.js';
import { startOciRegistry } from '../harness/oci-registry.js';
import { runDir } from '../harness/run-dir.js';

const BUNDLE = 'kubernetes-data';
const fixture = (name: string): string =>
  readFileSync(new URL(`../fixtures/seed/${name}`, import.meta.url), 'utf8');
const policyV1 = readFileSync(
  new URL('../../policies/network-policies/ensure-nap-exists.rego', import.meta.url),
  'utf8',
);

/** The OPA configuration of the README's "Kubernetes data for OPAs outside the cluster". */
function readmeOpaConfig(bundleUrl: string): unknown {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const block = /<!-- replicated-opa-config -->\s*```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
  if (block === undefined) throw new Error('the README has no <!-- replicated-opa-config --> yaml block');
  return parseYaml(block.replaceAll('http://opa-sync.opa.svc:8282', bundleUrl));
}

describe('replicated data as a bundle: an OPA outside the cluster (real kube-apiserver + OPAs)', function () {
  this.timeout(300_000);
  const stops = cleanupAfterAll();
  let net: NetworkingV1Api;
  let pushed: OpaServer;
  let outside: OpaServer;

  const podReview = {
    request: {
      kind: { group: '', version: 'v1', kind: 'Pod' },
      operation: 'CREATE',
      object: { kind: 'Pod', apiVersion: 'v1', metadata: { name: 'prop-1', labels: { app: 'prop' } } },
    },
  };

  /** Both OPAs hold what the cluster holds, and answer use case 1 alike. */
  async function same(step: string, denied?: boolean): Promise<void> {
    const cluster = async (): Promise<unknown> => {
      const list = await net.listNetworkPolicyForAllNamespaces();
      const tree: Record<string, Record<string, unknown>> = {};
      for (const np of list.items) {
        const ns = np.metadata?.namespace ?? '';
        (tree[ns] ??= {})[np.metadata?.name ?? ''] = np.metadata?.resourceVersion;
      }
      return tree;
    };
    const versions = (data: unknown): unknown => {
      const tree: Record<string, Record<string, unknown>> = {};
      for (const [ns, byName] of Object.entries(
        (data ?? {}) as Record<string, Record<string, V1NetworkPolicy>>,
      )) {
        for (const [name, np] of Object.entries(byName))
          (tree[ns] ??= {})[name] = np.metadata?.resourceVersion;
      }
      return tree;
    };
    await waitFor(
      `${step}: both OPAs hold the cluster's NetworkPolicies`,
      async () => {
        const want = JSON.stringify(sortKeys(await cluster()));
        const a = JSON.stringify(sortKeys(versions(await opaData(pushed, 'kubernetes/networkpolicies'))));
        const b = JSON.stringify(sortKeys(versions(await opaData(outside, 'kubernetes/networkpolicies'))));
        if (a !== want || b !== want) throw new Error(`cluster ${want}\npushed ${a}\noutside ${b}`);
        return true;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    expect(sortKeys(await opaData(outside, 'kubernetes/networkpolicies')), step).to.deep.equal(
      sortKeys(await opaData(pushed, 'kubernetes/networkpolicies')),
    );
    const answer = await evaluate(outside, 'kubernetes/admission/deny', podReview);
    expect(answer, step).to.deep.equal(await evaluate(pushed, 'kubernetes/admission/deny', podReview));
    if (denied !== undefined) expect((answer as unknown[]).length > 0, `${step}: denied`).to.equal(denied);
  }

  before(async () => {
    net = (await controlPlane()).kubeConfig().makeApiClient(NetworkingV1Api);
    pushed = stops.add(await extraOpa());
    const sync = stops.add(
      await startBundleSync({
        opa: pushed,
        args: [
          '--enable-policies=false',
          '--enable-data=false',
          '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
          `--bundle-replicated=${BUNDLE}`,
        ],
      }),
    );
    outside = stops.add(await opaWithConfig(readmeOpaConfig(sync.bundleUrl)));
    for (const opa of [pushed, outside]) {
      const put = await opa.request('/v1/policies/ensure-nap-exists.rego', { method: 'PUT', body: policyV1 });
      expect(put.status, put.body).to.equal(200);
    }
  });

  it('answers use case 1 like the pushed OPA through creates, updates and deletes', async () => {
    // A NetworkPolicy for app=prop left by another test would make the policy allow from the start.
    for (const np of (await net.listNetworkPolicyForAllNamespaces()).items) {
      if (np.spec?.podSelector?.matchLabels?.app === 'prop') {
        await net.deleteNamespacedNetworkPolicy({
          name: np.metadata?.name ?? '',
          namespace: np.metadata?.namespace ?? '',
        });
      }
    }
    const namespace = await createNamespace('outside');
    await same('at start', true);
    const nap = loadYaml<V1NetworkPolicy>(fixture('network-policy.yaml'));
    await net.createNamespacedNetworkPolicy({
      namespace,
      body: { ...nap, metadata: { ...nap.metadata, namespace } },
    });
    await same('after a create', false);
    await net.patchNamespacedNetworkPolicy({
      name: nap.metadata?.name ?? '',
      namespace,
      body: [{ op: 'replace', path: '/spec/podSelector/matchLabels/app', value: 'not-prop' }],
    });
    await same('after an update', true);
    await net.deleteNamespacedNetworkPolicy({ name: nap.metadata?.name ?? '', namespace });
    await same('after a delete', true);
  });

  it('equals the cluster after 1,000 NetworkPolicy updates', async () => {
    const namespace = await createNamespace('outside-churn');
    const names = Array.from({ length: 20 }, (_, i) => `churn-${i}`);
    for (const name of names) {
      await net.createNamespacedNetworkPolicy({
        namespace,
        body: {
          metadata: { name },
          spec: { podSelector: { matchLabels: { app: name } }, policyTypes: ['Ingress'] },
        },
      });
    }
    // 1,000 updates, 20 at a time (one per object in flight, so each object's updates stay in order).
    for (let round = 0; round < 50; round += 1) {
      await Promise.all(
        names.map((name) =>
          net.patchNamespacedNetworkPolicy({
            name,
            namespace,
            body: [{ op: 'replace', path: '/spec/podSelector/matchLabels/app', value: `${name}-${round}` }],
          }),
        ),
      );
    }
    await same('after 1,000 updates');
    const one = (await opaData(
      outside,
      `kubernetes/networkpolicies/${namespace}/churn-7`,
    )) as V1NetworkPolicy;
    expect(one.spec?.podSelector?.matchLabels).to.deep.equal({ app: 'churn-7-49' });
    for (const name of names) await net.deleteNamespacedNetworkPolicy({ name, namespace });
    await same('after the deletes');
  });

  it('with --bundle-deltas, an OPA gets one-object changes as delta bundles, a small fraction of the snapshot', async () => {
    const namespace = await createNamespace('outside-delta');
    const names = Array.from({ length: 100 }, (_, i) => `delta-${i}`);
    await Promise.all(
      names.map((name) =>
        net.createNamespacedNetworkPolicy({
          namespace,
          body: {
            metadata: { name },
            spec: { podSelector: { matchLabels: { app: name } }, policyTypes: ['Ingress'] },
          },
        }),
      ),
    );
    const sync = stops.add(
      await startBundleSync({
        args: [
          '--enable-policies=false',
          '--enable-data=false',
          '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
          `--bundle-replicated=${BUNDLE}`,
          '--bundle-deltas',
        ],
      }),
    );
    const deltaOpa = stops.add(await opaWithConfig(readmeOpaConfig(sync.bundleUrl)));
    const holds = async (want: string): Promise<void> => {
      await waitFor(
        `the delta OPA to hold app=${want}`,
        async () => {
          const np = (await opaData(
            deltaOpa,
            `kubernetes/networkpolicies/${namespace}/delta-7`,
          )) as V1NetworkPolicy;
          return np.spec?.podSelector?.matchLabels?.app === want ? true : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
    };
    await holds('delta-7');
    for (const value of ['one', 'two', 'three']) {
      await net.patchNamespacedNetworkPolicy({
        name: 'delta-7',
        namespace,
        body: [{ op: 'replace', path: '/spec/podSelector/matchLabels/app', value }],
      });
      await holds(value);
    }
    const deltas = await scrapeMetric(sync, 'opa_sync_bundle_deltas_total', { bundle: BUNDLE });
    const deltaBytes = await scrapeMetric(sync, 'opa_sync_bundle_delta_bytes_total', { bundle: BUNDLE });
    const snapshotBytes = (await httpRequest(`${sync.bundleUrl}/bundles/${BUNDLE}`)).bytes.length;
    expect(deltas, 'delta bundles sent').to.be.at.least(3);
    // Reported by the run: a one-object change against a snapshot of 100+ NetworkPolicies.
    process.stdout.write(
      `      delta bundle: ${Math.round(deltaBytes / deltas)} bytes per one-object change, snapshot ${snapshotBytes} bytes\n`,
    );
    expect(deltaBytes / deltas).to.be.lessThan(snapshotBytes / 5);
    // The data the deltas built equals the cluster's, as a snapshot would.
    const list = await net.listNamespacedNetworkPolicy({ namespace });
    const held = (await opaData(deltaOpa, `kubernetes/networkpolicies/${namespace}`)) as Record<
      string,
      V1NetworkPolicy
    >;
    expect(Object.keys(held).sort()).to.deep.equal(list.items.map((np) => np.metadata?.name ?? '').sort());
    expect(
      Object.fromEntries(Object.entries(held).map(([k, np]) => [k, np.metadata?.resourceVersion])),
    ).to.deep.equal(
      Object.fromEntries(list.items.map((np) => [np.metadata?.name ?? '', np.metadata?.resourceVersion])),
    );
    for (const name of names) await net.deleteNamespacedNetworkPolicy({ name, namespace });
  });

  it('publishes the data bundle to an OCI registry like the others, byte for byte what it serves', async () => {
    const registry = stops.add(await startOciRegistry());
    const sync = stops.add(
      await startBundleSync({
        args: [
          '--enable-policies=false',
          '--enable-data=false',
          '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
          `--bundle-replicated=${BUNDLE}`,
          `--oci-repository=${registry.host}/opa/{bundle}`,
          '--oci-plain-http',
        ],
      }),
    );
    const served = await httpRequest(`${sync.bundleUrl}/bundles/${BUNDLE}`);
    const out = mkdtempSync(path.join(runDir(), 'oras-data-'));
    await waitFor('the data bundle in the registry', async () => {
      await registry.oras([
        'pull',
        `${registry.host}/opa/${BUNDLE}:${String(served.headers.etag).replaceAll('"', '')}`,
        '--output',
        out,
      ]);
      return true;
    });
    expect(readFileSync(path.join(out, 'bundle.tar.gz')).equals(served.bytes)).to.equal(true);
  });
});
