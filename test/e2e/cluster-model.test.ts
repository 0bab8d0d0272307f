// The fault, churn and soak tests trust `waitOpaMatchesCluster` to say when OPA holds what the cluster
// says: here it agrees once opa-sync has loaded a namespace, and names each thing that differs when OPA
// is changed behind opa-sync's back (an extra policy, a changed document, a stale NetworkPolicy).
import { expect } from 'chai';
import { NetworkingV1Api } from '@kubernetes/client-node';
import { controlPlane, createNamespace, extraOpa } from '../harness/index.js';
import { DATA_LABEL, cleanupAfterAll, putConfigMap, startSync, waitOk } from '../harness/e2e.js';
import { diffOpaAgainstCluster, waitOpaMatchesCluster, type ModelScope } from '../harness/cluster-model.js';

describe('the cluster model that fault tests compare OPA against', function () {
  this.timeout(120_000);
  const cleanup = cleanupAfterAll();

  it('agrees with a loaded OPA and names every difference made behind opa-sync’s back', async () => {
    const ns = await createNamespace('model');
    const opa = cleanup.add(await extraOpa());

    await putConfigMap(ns, 'p', { 'p.rego': `package ${ns.replaceAll('-', '_')}.p\n\nallow := true\n` });
    await putConfigMap(ns, 'd', { 'd.json': '{"a":1}' }, { labels: DATA_LABEL });
    const net = (await controlPlane()).kubeConfig().makeApiClient(NetworkingV1Api);
    await net.createNamespacedNetworkPolicy({
      namespace: ns,
      body: { metadata: { name: 'np' }, spec: { podSelector: {} } },
    });
    const scope: ModelScope = { namespaces: [ns], networkPolicies: { namespaces: [ns] } };
    cleanup.add(
      await startSync({
        opa,
        namespaces: ns,
        args: ['--replicate=networking.k8s.io/v1/networkpolicies', '--opa-resync-interval=1h'],
      }),
    );
    await waitOk(ns, 'p');
    await waitOk(ns, 'd');
    await waitOpaMatchesCluster(opa, scope);

    await opa.request(`/v1/policies/${ns}/extra/x.rego`, {
      method: 'PUT',
      body: `package ${ns.replaceAll('-', '_')}.extra\n`,
    });
    await opa.request(`/v1/data/${ns}/d/d.json`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: '{"a":2}',
    });
    await opa.request(`/v1/data/kubernetes/networkpolicies/${ns}/np/metadata/resourceVersion`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: '"1"',
    });
    const diff = await diffOpaAgainstCluster(opa, scope);
    expect(diff).to.have.length(3);
    expect(diff.join('\n'))
      .to.include(`policy ${ns}/extra/x.rego: in OPA, not in the cluster`)
      .and.include(`document ${ns}/d/d.json: OPA holds {"a":2}`)
      .and.include(`networkpolicy ${ns}/np: OPA holds`);
  });
});
