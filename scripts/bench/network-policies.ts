// NetworkPolicies for the replication scenarios: object k lives in namespace bench-np-<k / 100> as
// np-<k>, so a size is a prefix of every larger size and a cluster can be topped up from one size to
// the next. Created straight through the API server with many concurrent HTTP/2 streams.
import { performance } from 'node:perf_hooks';
import { pool, type KubeHttp } from './kube.js';

export const PER_NAMESPACE = 100;
export const NP_PATH = '/apis/networking.k8s.io/v1/networkpolicies';
/** opa-sync's flag for the scenario and the data path it fills (default layout: [namespace][name]). */
export const REPLICATE_FLAG = '--replicate-cluster=networking.k8s.io/v1/networkpolicies';
export const OPA_DATA_PATH = 'kubernetes/networkpolicies';

export function npNamespace(k: number): string {
  return `bench-np-${String(Math.floor(k / PER_NAMESPACE)).padStart(4, '0')}`;
}

export function npName(k: number): string {
  return `np-${String(k).padStart(6, '0')}`;
}

/** A NetworkPolicy of the usual shape (one ingress rule from labelled pods on one port): ~1 KB as served. */
export function networkPolicy(k: number): Record<string, unknown> {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: npName(k),
      namespace: npNamespace(k),
      labels: { app: `app-${k % 50}`, 'bench.opa-sync/set': 'replication' },
    },
    spec: {
      podSelector: { matchLabels: { app: `app-${k % 50}` } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [
            { podSelector: { matchLabels: { role: 'frontend' } } },
            { namespaceSelector: { matchLabels: { team: `t${k % 7}` } } },
          ],
          ports: [{ protocol: 'TCP', port: 8080 + (k % 10) }],
        },
      ],
    },
  };
}

/** Makes the cluster hold NetworkPolicies 0 … size-1 (creating only those from `have` on); returns the ms taken. */
export async function seedNetworkPolicies(
  kube: KubeHttp,
  have: number,
  size: number,
  log: (line: string) => void,
): Promise<number> {
  if (size <= have) return 0;
  const started = performance.now();
  const firstNs = Math.floor(have / PER_NAMESPACE);
  const lastNs = Math.floor((size - 1) / PER_NAMESPACE);
  await pool(lastNs - firstNs + 1, 32, (i) =>
    kube.ensureNamespace(npNamespace((firstNs + i) * PER_NAMESPACE)),
  );
  let done = 0;
  await pool(size - have, 64, async (i) => {
    const k = have + i;
    const res = await kube.request(
      'POST',
      `/apis/networking.k8s.io/v1/namespaces/${npNamespace(k)}/networkpolicies`,
      networkPolicy(k),
    );
    if (res.status !== 201 && res.status !== 409)
      throw new Error(`create ${npName(k)}: HTTP ${res.status}: ${res.body}`);
    if (++done % 10_000 === 0) log(`  created ${have + done} NetworkPolicies`);
  });
  return performance.now() - started;
}

/** The sentinels checked cheaply before the full count: the first, middle and last object. */
export function sentinels(size: number): number[] {
  return [...new Set([0, Math.floor(size / 2), size - 1])];
}
