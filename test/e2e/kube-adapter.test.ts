// The client-node adapter (src/kube/client-node-adapter.ts) against the real API server: the status
// patcher's merge patch and its typed not-found, the reader's 404, and the watcher over the streaming
// list-watch informer: it lists, follows changes, stops cleanly, and a handler that throws rejects
// watch() instead of vanishing.
import { expect } from 'chai';
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { createKubeAdapters } from '../../src/kube/client-node-adapter.js';
import { KubeApiError } from '../../src/kube/errors.js';
import type { KubeAdapters, WatchHandlers } from '../../src/kube/ports.js';
import { controlPlane, createNamespace, waitFor } from '../harness/index.js';

describe('kube adapter: our seams over client-node (real kube-apiserver)', () => {
  let kc: KubeConfig;
  let core: CoreV1Api;
  let kube: KubeAdapters;
  let namespace: string;

  before(async () => {
    const cp = await controlPlane();
    kc = cp.kubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    kube = createKubeAdapters({ kind: 'file', path: cp.kubeconfigFile }, { timeoutMs: 10_000 });
    namespace = await createNamespace('adapter');
  });

  it('merge-patches annotations (null removes a key) and answers not-found for a missing ConfigMap', async () => {
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: 'patched', annotations: { keep: 'me', drop: 'me' } }, data: { x: '1' } },
    });
    const ref = { namespace, name: 'patched' };
    expect(
      await kube.patcher.patchAnnotations(ref, { 'example.com/status': '{"status":"ok"}', drop: null }),
    ).to.equal('patched');
    const cm = await core.readNamespacedConfigMap(ref);
    expect(cm.metadata?.annotations).to.deep.equal({ keep: 'me', 'example.com/status': '{"status":"ok"}' });
    expect(await kube.patcher.patchAnnotations({ namespace, name: 'missing' }, { a: 'b' })).to.equal(
      'not-found',
    );
  });

  it('reads discovery documents; a group that is not served is a KubeApiError with status 404', async () => {
    const v1 = await kube.api.getJson<{ resources: { name: string }[] }>('/api/v1');
    expect(v1.resources.map((r) => r.name)).to.include('configmaps');
    const err = await kube.api.getJson('/apis/not-served.example.com/v1').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(KubeApiError);
    expect((err as KubeApiError).status).to.equal(404);
  });

  it('lists and watches a collection with a label selector, and resolves once stopped', async () => {
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: 'w1', labels: { pick: 'yes' } } },
    });
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'w-other' } } });
    const seen: string[] = [];
    let listed = 0;
    const handlers: WatchHandlers<V1ConfigMap> = {
      add: (o) => seen.push(`add ${o.metadata?.name}`),
      update: (o) => seen.push(`update ${o.metadata?.name}`),
      delete: (o) => seen.push(`delete ${o.metadata?.name}`),
      listed: () => (listed += 1),
    };
    const controller = new AbortController();
    const done = kube.watcher.watch<V1ConfigMap>(
      { path: `/api/v1/namespaces/${namespace}/configmaps`, labelSelector: 'pick=yes' },
      handlers,
      controller.signal,
    );
    await waitFor('the list', () => (listed === 1 ? true : undefined));
    expect(seen).to.deep.equal(['add w1']);
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: 'w2', labels: { pick: 'yes' } } },
    });
    await core.deleteNamespacedConfigMap({ namespace, name: 'w1' });
    await waitFor('the watch events', () => (seen.includes('delete w1') ? true : undefined));
    expect(seen).to.deep.equal(['add w1', 'add w2', 'delete w1']);
    controller.abort();
    await done;
  });

  it('rejects watch() with the error a handler throws on a watch event', async () => {
    const bug = new RangeError('Invalid string length');
    let listed = false;
    const done = kube.watcher.watch<V1ConfigMap>(
      { path: `/api/v1/namespaces/${namespace}/configmaps`, labelSelector: 'throws=yes' },
      {
        add: () => {
          throw bug;
        },
        update: () => undefined,
        delete: () => undefined,
        listed: () => (listed = true),
      },
      new AbortController().signal,
    );
    // Taken at once: the watch event (and the rejection) may come before the create's own answer.
    const outcome = done.catch((e: unknown) => e);
    await waitFor('the list', () => (listed ? true : undefined));
    await core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name: 'boom', labels: { throws: 'yes' } } },
    });
    expect(await outcome).to.equal(bug);
  });
});
