// Policy ConfigMaps for the sidecar scenarios (P2, P9): labelled as opa-sync and kube-mgmt expect, and
// the status annotation opa-sync writes back on them.
import type { KubeHttp } from './kube.js';

export const POLICY_LABEL = { 'openpolicyagent.org/policy': 'rego' };
export const STATUS_ANNOTATION = 'openpolicyagent.org/policy-status';
export const OK = '{"status":"ok"}';

export function policyConfigMap(
  namespace: string,
  name: string,
  data: Record<string, string>,
): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels: POLICY_LABEL }, data };
}

export async function createConfigMap(
  kube: KubeHttp,
  namespace: string,
  body: Record<string, unknown>,
): Promise<{ at: number; resourceVersion: string }> {
  const res = await kube.request('POST', `/api/v1/namespaces/${namespace}/configmaps`, body);
  if (res.status !== 201)
    throw new Error(`create ConfigMap in ${namespace}: HTTP ${res.status}: ${res.body.slice(0, 300)}`);
  const created = JSON.parse(res.body) as { metadata: { resourceVersion: string } };
  return { at: res.at, resourceVersion: created.metadata.resourceVersion };
}

/** The policy-status annotation of one ConfigMap now (undefined when not written yet). */
export async function statusOf(
  kube: KubeHttp,
  namespace: string,
  name: string,
): Promise<{ status: string | undefined; resourceVersion: string }> {
  const cm = await kube.json<{ metadata: { resourceVersion: string; annotations?: Record<string, string> } }>(
    'GET',
    `/api/v1/namespaces/${namespace}/configmaps/${name}`,
  );
  return {
    status: cm.metadata.annotations?.[STATUS_ANNOTATION],
    resourceVersion: cm.metadata.resourceVersion,
  };
}
