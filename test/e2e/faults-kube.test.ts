// Faults of the Kubernetes API, against the real kube-apiserver and etcd and a real OPA: the API
// server paused (SIGSTOP) and killed while policy and data ConfigMaps and NetworkPolicies change and
// are deleted (through a second API server on the same etcd, as in an HA control plane), and the
// connection to it frozen without closing (a TCP proxy that stops forwarding on the connections open,
// and lets new ones through, as a half-dead NAT or load balancer entry does). Each ends with OPA's
// policies, data and NetworkPolicies equal to the model read from the cluster; the times to converge
// are printed (the bench notes hold them), only the frozen connection's staleness is bounded (the
// feature: at most twice --kube-watch-idle-timeout).
import { expect } from 'chai';
import { CoreV1Api, NetworkingV1Api, type KubeConfig } from '@kubernetes/client-node';
import { KubeRawClient } from '../../src/kube/raw-client.js';
import { waitOpaMatchesCluster, type ModelScope } from '../harness/cluster-model.js';
import type { ApiServerReplica } from '../harness/control-plane.js';
import {
  DATA_LABEL,
  POLICY_LABEL,
  cleanupAfterAll,
  cleanupAfterEach,
  countLog,
  startSync,
  waitOk,
} from '../harness/e2e.js';
import {
  controlPlane,
  createNamespace,
  extraOpa,
  httpRequest,
  waitFor,
  type OpaServer,
} from '../harness/index.js';
import { writeKubeconfig } from '../harness/kubeconfig.js';
import type { OpaSyncProcess } from '../harness/opa-sync.js';
import { runDir } from '../harness/run-dir.js';
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.js';

/** --kube-watch-idle-timeout of these tests: short, so that a dead watch is found in seconds. */
const IDLE_S = 6;
const NP = 'networking.k8s.io/v1/networkpolicies';

/** Writes the cluster through one API server (the admin user). */
class Writer {
  private readonly core: CoreV1Api;
  private readonly net: NetworkingV1Api;

  constructor(
    kc: KubeConfig,
    private readonly namespace: string,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.net = kc.makeApiClient(NetworkingV1Api);
  }

  async policy(name: string, rule: string): Promise<void> {
    await this.configMap(name, POLICY_LABEL, {
      'main.rego': `package faults.${name.replaceAll('-', '_')}\n\nallow := ${rule}\n`,
    });
  }

  async data(name: string, value: unknown): Promise<void> {
    await this.configMap(name, DATA_LABEL, { 'x.json': JSON.stringify(value) });
  }

  async networkPolicy(name: string, app: string): Promise<void> {
    const body = { metadata: { name }, spec: { podSelector: { matchLabels: { app } } } };
    try {
      await this.net.replaceNamespacedNetworkPolicy({ name, namespace: this.namespace, body });
    } catch {
      await this.net.createNamespacedNetworkPolicy({ namespace: this.namespace, body });
    }
  }

  async deleteConfigMap(name: string): Promise<void> {
    await this.core.deleteNamespacedConfigMap({ name, namespace: this.namespace });
  }

  async deleteNetworkPolicy(name: string): Promise<void> {
    await this.net.deleteNamespacedNetworkPolicy({ name, namespace: this.namespace });
  }

  private async configMap(name: string, labels: Record<string, string>, data: Record<string, string>) {
    const { namespace } = this;
    const existing = await this.core.readNamespacedConfigMap({ name, namespace }).catch(() => undefined);
    if (existing === undefined) {
      await this.core.createNamespacedConfigMap({ namespace, body: { metadata: { name, labels }, data } });
      return;
    }
    // Replace keeps the status annotation opa-sync wrote, as an edit with kubectl does.
    existing.data = data;
    await this.core.replaceNamespacedConfigMap({ name, namespace, body: existing });
  }
}

/** The objects every scenario starts from. */
async function seed(w: Writer): Promise<void> {
  await w.policy('keep', 'true');
  await w.policy('edit', 'false');
  await w.policy('drop', 'true');
  await w.data('dkeep', { a: 1 });
  await w.data('dedit', { a: 1 });
  await w.data('ddrop', { a: 1 });
  await w.networkPolicy('nkeep', 'keep');
  await w.networkPolicy('nedit', 'before');
  await w.networkPolicy('ndrop', 'drop');
}

/** What changes during a fault: an edit, a delete and a create of each kind. */
async function churn(w: Writer, round: string): Promise<void> {
  await w.policy('edit', `"${round}" == "${round}"`);
  await w.deleteConfigMap('drop');
  await w.policy(`new-${round}`, 'true');
  await w.data('dedit', { round });
  await w.deleteConfigMap('ddrop');
  await w.data(`dnew-${round}`, { round });
  await w.networkPolicy('nedit', round);
  await w.deleteNetworkPolicy('ndrop');
  await w.networkPolicy(`nnew-${round}`, round);
}

interface Ready {
  status: number;
  body: { ready?: boolean; reasons?: Record<string, string[]> };
}

async function ready(sync: OpaSyncProcess): Promise<Ready> {
  const res = await httpRequest(`${sync.opsUrl}/ready`, { timeoutMs: 2000 });
  return { status: res.status, body: JSON.parse(res.body) as Ready['body'] };
}

/** Polls /ready until stopped; keeps the first 503 answer that names a stale watch. */
function watchReady(sync: OpaSyncProcess): { stop(): Promise<Ready | undefined> } {
  let stopped = false;
  let seen: Ready | undefined;
  const loop = (async () => {
    while (!stopped) {
      const r = await ready(sync).catch(() => undefined);
      if (r !== undefined && r.status === 503 && seen === undefined && staleReasons(r).length > 0) seen = r;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return seen;
    },
  };
}

function staleReasons(r: Ready): string[] {
  return Object.values(r.body.reasons ?? {})
    .flat()
    .filter((line) => line.includes('has heard nothing from the API server since'));
}

/** The warn lines "the watch of … has heard nothing …", one per watch and time it went stale. */
function staleLogLines(sync: OpaSyncProcess): number {
  return countLog(sync, (l) => l.level === 40 && String(l.msg).includes('has heard nothing from the API'));
}

describe('Kubernetes API faults: OPA ends equal to the cluster', function () {
  this.timeout(240_000);
  const suite = cleanupAfterAll();
  const stops = cleanupAfterEach();
  let replica: ApiServerReplica;

  before(async () => {
    const cp = await controlPlane();
    replica = suite.add(await cp.startApiServerReplica());
  });

  async function scenario(
    prefix: string,
    kubeconfig?: string,
  ): Promise<{ namespace: string; opa: OpaServer; sync: OpaSyncProcess; scope: ModelScope; direct: Writer }> {
    const cp = await controlPlane();
    const namespace = await createNamespace(prefix);
    const opa = stops.add(await extraOpa());
    const direct = new Writer(cp.kubeConfig(), namespace);
    await seed(direct);
    const sync = stops.add(
      await startSync({
        opa,
        namespaces: namespace,
        ...(kubeconfig === undefined ? {} : { kubeconfig }),
        args: [`--replicate-cluster=${NP}`, `--kube-watch-idle-timeout=${IDLE_S}s`],
      }),
    );
    const scope: ModelScope = { namespaces: [namespace], networkPolicies: { namespaces: [namespace] } };
    for (const name of ['keep', 'edit', 'drop', 'dkeep', 'dedit', 'ddrop']) await waitOk(namespace, name);
    await waitOpaMatchesCluster(opa, scope);
    return { namespace, opa, sync, scope, direct };
  }

  /** A TCP proxy in front of the API server, and an admin kubeconfig that goes through it. */
  async function proxiedKubeconfig(): Promise<{ proxy: TcpProxy; kubeconfig: string }> {
    const cp = await controlPlane();
    const proxy = stops.add(
      await startTcpProxy({ host: '127.0.0.1', port: Number(new URL(cp.server).port) }),
    );
    const kubeconfig = writeKubeconfig(
      `${runDir()}/kubeconfig-proxy-${proxy.port}.json`,
      `https://${proxy.address}`,
      cp.ca.pem,
      'admin',
      cp.adminToken,
    );
    return { proxy, kubeconfig };
  }

  it('a frozen connection (open, forwarding nothing) is found dead and replaced: stale at most 2× the idle timeout, /ready 503 meanwhile', async () => {
    const { proxy, kubeconfig } = await proxiedKubeconfig();
    const { namespace, opa, sync, scope, direct } = await scenario('frozen', kubeconfig);
    const readyWatch = watchReady(sync);
    // Every connection opa-sync has now (its three watches, kept-alive ones of its status patches)
    // stops forwarding, and stays open; the test changes the cluster directly on the API server.
    const frozen = proxy.freeze();
    expect(frozen, 'connections frozen').to.be.at.least(3);
    const frozenAt = Date.now();
    await churn(direct, 'frozen');
    const changedAt = Date.now();
    await waitOpaMatchesCluster(opa, scope, { timeoutMs: 90_000, intervalMs: 100 });
    const staleMs = Date.now() - changedAt;
    // The status patches of the new ConfigMaps get through too (a patch on a frozen connection times out).
    await waitOk(namespace, 'new-frozen');
    await waitOk(namespace, 'dnew-frozen');
    const annotatedMs = Date.now() - frozenAt;
    await waitOpaMatchesCluster(opa, scope);
    await sync.waitReady(30_000);
    const seen = await readyWatch.stop();
    console.log(
      `      frozen connection: OPA equal to the cluster ${staleMs} ms after the changes ` +
        `(${Date.now() - frozenAt} ms after the freeze), new ConfigMaps annotated after ${annotatedMs} ms`,
    );
    expect(staleMs, 'ms OPA stayed stale').to.be.at.most(2 * IDLE_S * 1000);
    expect(seen, '/ready answered 503 naming a stale watch while it was being replaced').to.not.equal(
      undefined,
    );
    expect(staleLogLines(sync), 'one warning per watch found dead').to.be.within(1, 3);
    proxy.thaw();
  });

  it('list requests and status patches on a frozen kept-alive connection time out; new connections work', async () => {
    const cp = await controlPlane();
    const { proxy, kubeconfig } = await proxiedKubeconfig();
    const namespace = await createNamespace('frozen-calls');
    await new Writer(cp.kubeConfig(), namespace).policy('p', 'true');
    const { KubeConfig } = await import('@kubernetes/client-node');
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const raw = new KubeRawClient(kc, 2000);
    const list = `/api/v1/namespaces/${namespace}/configmaps`;
    await raw.getJson(list);
    expect(proxy.openConnections(), 'the kept-alive connection').to.equal(1);
    proxy.freeze();
    const started = Date.now();
    const listed = await raw.getJson(list).then(
      () => 'answered',
      (err: { code?: string }) => err.code,
    );
    expect(listed, 'a list on the frozen connection').to.equal('kube_timeout');
    expect(Date.now() - started, 'ms until the list gave up').to.be.below(15_000);
    // The timed-out request took its connection with it: the patch gets a new one and lands.
    expect(await raw.patchAnnotations({ namespace, name: 'p' }, { 'faults/test': '1' })).to.equal('patched');
    // A frozen idle connection in the pool: a patch on it times out, and once dropped, the next works.
    proxy.freeze();
    const patched = await raw.patchAnnotations({ namespace, name: 'p' }, { 'faults/test': '2' }).then(
      (outcome) => outcome,
      (err: { code?: string }) => err.code,
    );
    expect(patched, 'a patch on the frozen connection').to.equal('kube_timeout');
    await raw.getJson(list);
    proxy.freeze();
    raw.dropIdleConnections();
    await raw.getJson(list);
  });

  it('the API server paused (SIGSTOP) while objects change and are deleted: no stale object stays, /ready 503 meanwhile', async () => {
    const cp = await controlPlane();
    const { namespace, opa, sync, scope } = await scenario('paused');
    const other = new Writer(replica.kubeConfig(), namespace);
    cp.pauseApiServer();
    const pausedAt = Date.now();
    let resumedAt: number;
    let notReady: Ready;
    try {
      await churn(other, 'paused');
      notReady = await waitFor(
        '/ready to say a watch is stale',
        async () => {
          const r = await ready(sync);
          return r.status === 503 && staleReasons(r).length > 0 ? r : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 200 },
      );
    } finally {
      cp.resumeApiServer();
      resumedAt = Date.now();
    }
    const convergedMs = await waitOpaMatchesCluster(opa, scope, { timeoutMs: 120_000, intervalMs: 100 });
    await waitOk(namespace, 'new-paused');
    await waitOk(namespace, 'dnew-paused');
    await waitOpaMatchesCluster(opa, scope);
    await sync.waitReady(60_000);
    console.log(
      `      API server paused ${resumedAt - pausedAt} ms: OPA equal to the cluster ${convergedMs} ms after SIGCONT`,
    );
    expect(staleReasons(notReady).join('\n')).to.match(
      /the watch of .+ has heard nothing from the API server since \d{4}-/,
    );
  });

  it('the API server killed and restarted while objects change and are deleted: no stale object stays', async () => {
    const cp = await controlPlane();
    const { namespace, opa, sync, scope } = await scenario('killed');
    const other = new Writer(replica.kubeConfig(), namespace);
    await cp.killApiServer();
    const killedAt = Date.now();
    let restartedAt: number;
    try {
      await churn(other, 'killed');
    } finally {
      await cp.startApiServer();
      restartedAt = Date.now();
    }
    await waitOpaMatchesCluster(opa, scope, { timeoutMs: 120_000, intervalMs: 100 });
    const convergedMs = Date.now() - restartedAt;
    await waitOk(namespace, 'new-killed');
    await waitOk(namespace, 'dnew-killed');
    await waitOpaMatchesCluster(opa, scope);
    await sync.waitReady(60_000);
    console.log(
      `      API server killed, ready again after ${restartedAt - killedAt} ms: OPA equal to the cluster ${convergedMs} ms after that`,
    );
  });
});
