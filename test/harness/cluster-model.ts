// "OPA holds what the cluster says": a model of what opa-sync must have loaded, computed from the
// cluster as it is now (policy and data ConfigMaps of the watched namespaces, replicated resources), and
// a diff of it against what a real OPA holds (GET /v1/policies and GET /v1/data). The fault, churn and
// soak tests end with `waitOpaMatchesCluster`, which polls until the diff is empty.
import { NetworkingV1Api, type V1ConfigMap } from '@kubernetes/client-node';
import { controlPlane, waitFor, type OpaServer } from './index.js';
import { DATA_LABEL, OK, POLICY_LABEL, STATUS, adminCore } from './e2e.js';
import { sortKeys } from './json.js';

/** What opa-sync was told to load: its watched namespaces, and what it replicates. */
export interface ModelScope {
  /** --namespaces: their policy and data ConfigMaps (by the default labels) are modelled. */
  namespaces: readonly string[];
  /**
   * Replicated NetworkPolicies (default layout `data.<path>.networkpolicies[<namespace>][<name>]`) of
   * these namespaces; OPA's view is read for exactly them, other owners' namespaces are not compared.
   */
  networkPolicies?: { namespaces: readonly string[]; path?: string };
}

/** What OPA must hold, or holds, within a scope. */
export interface ModelView {
  /** Policy id → Rego text. */
  policies: Map<string, string>;
  /** `<namespace>/<name>/<key>` → the JSON document at data.<namespace>.<name>.<key>. */
  documents: Map<string, string>;
  /** `<namespace>/<name>` → `<uid>@<resourceVersion>` of a replicated NetworkPolicy. */
  networkPolicies: Map<string, string>;
}

/** The model, and what it cannot predict: ConfigMaps whose status is not ok (OPA may keep older text). */
export interface ClusterModel extends ModelView {
  /** Policy ids and document keys left out of the comparison, because their ConfigMap failed. */
  unchecked: Set<string>;
}

const json = (value: unknown): string => JSON.stringify(sortKeys(value));
const hasLabels = (cm: V1ConfigMap, labels: Readonly<Record<string, string>>): boolean =>
  Object.entries(labels).every(([k, v]) => cm.metadata?.labels?.[k] === v);

/** A data key's document as the model compares it; a key that is not JSON yet annotated ok never matches. */
function documentOf(text: string): string {
  try {
    return json(JSON.parse(text));
  } catch {
    return `(not JSON, yet annotated ok: ${text.slice(0, 40)})`;
  }
}

/** The model of what OPA must hold now, read from the cluster. */
export async function clusterModel(scope: ModelScope): Promise<ClusterModel> {
  const core = await adminCore();
  const model: ClusterModel = {
    policies: new Map(),
    documents: new Map(),
    networkPolicies: new Map(),
    unchecked: new Set(),
  };
  for (const namespace of scope.namespaces) {
    const list = await core.listNamespacedConfigMap({ namespace });
    for (const cm of list.items) {
      const name = cm.metadata?.name ?? '';
      const ok = cm.metadata?.annotations?.[STATUS] === OK;
      const isData = hasLabels(cm, DATA_LABEL);
      if (!isData && !hasLabels(cm, POLICY_LABEL)) continue;
      for (const [key, text] of Object.entries(cm.data ?? {})) {
        const id = `${namespace}/${name}/${key}`;
        if (!ok) {
          model.unchecked.add(id);
          continue;
        }
        if (isData) model.documents.set(id, documentOf(text));
        else model.policies.set(id, text);
      }
    }
  }
  if (scope.networkPolicies !== undefined) {
    const networking = (await controlPlane()).kubeConfig().makeApiClient(NetworkingV1Api);
    for (const namespace of scope.networkPolicies.namespaces) {
      const list = await networking.listNamespacedNetworkPolicy({ namespace });
      for (const np of list.items) {
        const meta = np.metadata ?? {};
        model.networkPolicies.set(
          `${namespace}/${meta.name ?? ''}`,
          `${meta.uid ?? ''}@${meta.resourceVersion ?? ''}`,
        );
      }
    }
  }
  return model;
}

async function getResult(opa: OpaServer, path: string): Promise<unknown> {
  const res = await opa.request(path);
  if (res.status !== 200)
    throw new Error(`GET ${path} of ${opa.name}: ${res.status} ${res.body.slice(0, 300)}`);
  return (JSON.parse(res.body) as { result?: unknown }).result;
}

const objectEntries = (value: unknown): [string, unknown][] =>
  value !== null && typeof value === 'object' && !Array.isArray(value) ? Object.entries(value) : [];

/** What OPA holds within the scope. */
export async function opaView(opa: OpaServer, scope: ModelScope): Promise<ModelView> {
  const view: ModelView = { policies: new Map(), documents: new Map(), networkPolicies: new Map() };
  const namespaces = new Set(scope.namespaces);
  const policies = (await getResult(opa, '/v1/policies')) as { id: string; raw: string }[];
  for (const p of policies) if (namespaces.has(p.id.split('/')[0] ?? '')) view.policies.set(p.id, p.raw);
  for (const namespace of scope.namespaces) {
    for (const [name, keys] of objectEntries(await getResult(opa, `/v1/data/${namespace}`)))
      for (const [key, value] of objectEntries(keys))
        view.documents.set(`${namespace}/${name}/${key}`, json(value));
  }
  if (scope.networkPolicies !== undefined) {
    const base = `/v1/data/${scope.networkPolicies.path ?? 'kubernetes'}/networkpolicies`;
    for (const namespace of scope.networkPolicies.namespaces) {
      for (const [name, obj] of objectEntries(await getResult(opa, `${base}/${namespace}`))) {
        const meta = (obj as { metadata?: { uid?: string; resourceVersion?: string } }).metadata ?? {};
        view.networkPolicies.set(`${namespace}/${name}`, `${meta.uid ?? ''}@${meta.resourceVersion ?? ''}`);
      }
    }
  }
  return view;
}

function diffMaps(
  what: string,
  want: Map<string, string>,
  got: Map<string, string>,
  unchecked: Set<string>,
): string[] {
  const out: string[] = [];
  for (const [key, value] of want) {
    const held = got.get(key);
    if (held === undefined) out.push(`${what} ${key}: missing from OPA`);
    else if (held !== value)
      out.push(`${what} ${key}: OPA holds ${held.slice(0, 80)}, the cluster ${value.slice(0, 80)}`);
  }
  for (const key of got.keys())
    if (!want.has(key) && !unchecked.has(key)) out.push(`${what} ${key}: in OPA, not in the cluster`);
  return out;
}

/** The differences between the model and OPA's view, one line each ([] when OPA holds what it must). */
export function diffModel(model: ClusterModel, view: ModelView): string[] {
  return [
    ...diffMaps('policy', model.policies, view.policies, model.unchecked),
    ...diffMaps('document', model.documents, view.documents, model.unchecked),
    ...diffMaps('networkpolicy', model.networkPolicies, view.networkPolicies, new Set()),
  ];
}

/** The differences between what the cluster says now and what OPA holds. */
export async function diffOpaAgainstCluster(opa: OpaServer, scope: ModelScope): Promise<string[]> {
  const model = await clusterModel(scope);
  return diffModel(model, await opaView(opa, scope));
}

/**
 * Waits until OPA holds exactly what the cluster says within the scope; resolves with the milliseconds
 * it took. On timeout the error lists the differences still left (the first 20).
 */
export async function waitOpaMatchesCluster(
  opa: OpaServer,
  scope: ModelScope,
  { timeoutMs = 60_000, intervalMs = 200 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<number> {
  const start = Date.now();
  let last: string[] = [];
  try {
    await waitFor(
      `${opa.name} to hold what the cluster says`,
      async () => {
        last = await diffOpaAgainstCluster(opa, scope);
        return last.length === 0 ? true : undefined;
      },
      { timeoutMs, intervalMs },
    );
  } catch (err) {
    const lines = last.slice(0, 20).join('\n  ');
    throw new Error(`${(err as Error).message}\n${last.length} differences left:\n  ${lines}`, {
      cause: err,
    });
  }
  return Date.now() - start;
}
