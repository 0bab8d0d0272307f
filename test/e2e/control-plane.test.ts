// Proves the harness's real control plane: client-node creates, lists, watches and merge-patches a
// ConfigMap; kubectl sees the patch; the controller manager turns a Deployment into Pending pods.
import { expect } from 'chai';
import {
  AppsV1Api,
  CoreV1Api,
  PatchStrategy,
  Watch,
  setHeaderOptions,
  type KubeConfig,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import { controlPlane, createNamespace, kubectl, waitFor } from '../harness/index.js';

describe('harness: real control plane', () => {
  let kc: KubeConfig;
  let core: CoreV1Api;
  let namespace: string;

  before(async () => {
    kc = (await controlPlane()).kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    namespace = await createNamespace('harness');
  });

  it('creates, lists, watches and merge-patches a ConfigMap with client-node; kubectl sees it', async () => {
    const events: { type: string; obj: V1ConfigMap }[] = [];
    const controller = await new Watch(kc).watch(
      `/api/v1/namespaces/${namespace}/configmaps`,
      {},
      (type, obj: V1ConfigMap) => events.push({ type, obj }),
      () => undefined,
    );
    try {
      await core.createNamespacedConfigMap({
        namespace,
        body: {
          metadata: { name: 'smoke', labels: { 'openpolicyagent.org/policy': 'rego' } },
          data: { 'a.rego': 'package a' },
        },
      });
      const listed = await core.listNamespacedConfigMap({
        namespace,
        labelSelector: 'openpolicyagent.org/policy=rego',
      });
      expect(listed.items.map((c) => c.metadata?.name)).to.deep.equal(['smoke']);

      const status = '{"status":"ok"}';
      await core.patchNamespacedConfigMap(
        {
          name: 'smoke',
          namespace,
          body: { metadata: { annotations: { 'openpolicyagent.org/policy-status': status } } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );

      await waitFor('the watch to see ADDED then MODIFIED', () =>
        events.some((e) => e.type === 'MODIFIED') ? true : undefined,
      );
      expect(events[0]?.type).to.equal('ADDED');
      const modified = events.find((e) => e.type === 'MODIFIED');
      expect(modified?.obj.metadata?.annotations?.['openpolicyagent.org/policy-status']).to.equal(status);
      expect(modified?.obj.data).to.deep.equal({ 'a.rego': 'package a' });

      const seen = await kubectl([
        'get',
        'configmap',
        'smoke',
        '-n',
        namespace,
        '-o',
        'jsonpath={.metadata.annotations.openpolicyagent\\.org/policy-status}',
      ]);
      expect(seen).to.equal(status);
    } finally {
      controller.abort();
    }
  });

  it('turns a Deployment into a ReplicaSet and Pending pods (no scheduler, no kubelet)', async () => {
    const apps = kc.makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: { containers: [{ name: 'web', image: 'nginx:1.27' }] },
          },
        },
      },
    });
    const rs = await waitFor('a ReplicaSet owned by the Deployment', async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace, labelSelector: 'app=web' });
      return list.items.find((r) =>
        r.metadata?.ownerReferences?.some((o) => o.kind === 'Deployment' && o.name === 'web'),
      );
    });
    const pods = await waitFor('two pods of the ReplicaSet', async () => {
      const list = await core.listNamespacedPod({ namespace, labelSelector: 'app=web' });
      return list.items.length === 2 ? list.items : undefined;
    });
    for (const pod of pods) {
      expect(pod.status?.phase).to.equal('Pending');
      expect(pod.metadata?.ownerReferences?.[0]?.name).to.equal(rs.metadata?.name);
    }
    const out = await kubectl(['get', 'pods', '-n', namespace, '-l', 'app=web', '-o', 'name']);
    expect(out.trim().split('\n')).to.have.length(2);
  });
});
