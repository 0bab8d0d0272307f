// The streaming list-watch informer (src/kube/list-watch.ts) against the real API server: a list in
// pages of a small `limit` delivers every object once, from one snapshot, and the watch that follows
// (from that snapshot's resourceVersion) delivers what changed after it; nothing is lost in between.
import { expect } from 'chai';
import { CoreV1Api, type KubernetesObject } from '@kubernetes/client-node';
import { StreamingListWatch, type ListWatchApi } from '../../src/kube/list-watch.js';
import { KubeRawClient } from '../../src/kube/raw-client.js';
import { controlPlane, createNamespace, waitFor } from '../harness/index.js';

describe('streaming list-watch (real kube-apiserver)', () => {
  it('lists in pages of `limit` (continue tokens), then watches from the list’s resourceVersion', async () => {
    const cp = await controlPlane();
    const kc = cp.kubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const namespace = await createNamespace('pages');
    const label = { 'list-watch-test': namespace };
    for (let i = 0; i < 7; i++) {
      await core.createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: `cm-${i}`, labels: label }, data: { i: String(i) } },
      });
    }
    const raw = new KubeRawClient(kc, 10_000);
    const pages: (string | undefined)[] = [];
    const counting: ListWatchApi = {
      async getJson<T>(
        path: string,
        options: { query?: Readonly<Record<string, string | undefined>>; signal?: AbortSignal },
      ): Promise<T> {
        pages.push(options.query?.continue);
        expect(options.query?.limit).to.equal('2');
        return raw.getJson<T>(path, options);
      },
      stream: (path, options) => raw.stream(path, options),
    };
    const informer = new StreamingListWatch<KubernetesObject>(
      counting,
      { path: `/api/v1/namespaces/${namespace}/configmaps`, labelSelector: `list-watch-test=${namespace}` },
      { pageSize: 2 },
    );
    const events: string[] = [];
    const errors: unknown[] = [];
    informer.on('add', (o: KubernetesObject) => events.push(`add ${o.metadata?.name}`));
    informer.on('update', (o: KubernetesObject) => events.push(`update ${o.metadata?.name}`));
    informer.on('delete', (o: KubernetesObject) => events.push(`delete ${o.metadata?.name}`));
    informer.on('error', (e: unknown) => errors.push(e));
    try {
      await informer.start();
      expect(pages).to.have.length(4);
      expect(pages[0]).to.equal(undefined);
      expect(pages.slice(1).every((c) => typeof c === 'string' && c.length > 0)).to.equal(true);
      expect([...events].sort()).to.deep.equal([0, 1, 2, 3, 4, 5, 6].map((i) => `add cm-${i}`));

      await core.patchNamespacedConfigMap({
        namespace,
        name: 'cm-3',
        body: [{ op: 'replace', path: '/data/i', value: 'x' }],
      });
      await core.deleteNamespacedConfigMap({ namespace, name: 'cm-5' });
      await core.createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: 'cm-7', labels: label } },
      });
      await waitFor('the three changes', () => (events.length === 10 ? true : undefined));
      expect(events.slice(7)).to.deep.equal(['update cm-3', 'delete cm-5', 'add cm-7']);
      expect(pages, 'the watch needed no new list').to.have.length(4);
      expect(errors).to.deep.equal([]);
    } finally {
      await informer.stop();
    }
  });
});
