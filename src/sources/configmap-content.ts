// Turns one ConfigMap into desired state: each `.data` key a policy module `<ns>/<name>/<key>` or a data
// document at `<ns>/<name>/<key>`, in sorted key order; what cannot be loaded becomes a problem that
// names the key and the reason, and never stops the other keys.
import { createHash } from 'node:crypto';
import type { V1ConfigMap } from '@kubernetes/client-node';
import type { DataDocument, OriginProblem, OriginState, PolicyModule } from '../model/desired-state.js';
import type { ConfigMapOrigin, OriginRole } from '../model/origin.js';
import { MAX_JSON_DEPTH, nestedDeeperThan } from '../util/json-depth.js';

export interface ConfigMapRef {
  namespace: string;
  name: string;
}

export function refOf(cm: V1ConfigMap): ConfigMapRef {
  return { namespace: cm.metadata?.namespace ?? '', name: cm.metadata?.name ?? '' };
}

/** A ConfigMap joins the named bundle with this label; otherwise the default bundle. */
export const BUNDLE_LABEL = 'openpolicyagent.org/bundle';

function bundleOf(cm: V1ConfigMap): { bundle?: string } {
  const bundle = cm.metadata?.labels?.[BUNDLE_LABEL];
  return bundle === undefined ? {} : { bundle };
}

function origin(cm: V1ConfigMap, role: OriginRole): ConfigMapOrigin {
  return { kind: 'configmap', role, ...refOf(cm) };
}

function sortedKeys(record: Record<string, string> | undefined): string[] {
  return Object.keys(record ?? {}).sort();
}

function binaryDataProblems(cm: V1ConfigMap, what: string): OriginProblem[] {
  return sortedKeys(cm.binaryData).map((key) => ({
    key,
    code: 'binary_data_not_loaded',
    message: `key ${JSON.stringify(key)} is in binaryData: ${what} are read from .data only, so it was not loaded`,
  }));
}

export interface PolicyOptions {
  /**
   * Seed-era mode (every ConfigMap of a policy namespace is a policy, labelled or not): only `*.rego`
   * keys are policies there, since such a namespace also holds ConfigMaps that are not Rego.
   */
  regoKeysOnly: boolean;
}

/** Created by Kubernetes in every namespace; never a policy, even where every ConfigMap is one. */
export const KUBE_ROOT_CA = 'kube-root-ca.crt';

/** Which ConfigMaps are policies and which are data: the labels, and whether policies need theirs. */
export interface ConfigMapRules {
  policies: { enabled: boolean; label: string; value: string; requireLabel: boolean };
  data: { enabled: boolean; label: string; value: string };
}

function hasLabel(cm: V1ConfigMap, label: string, value: string): boolean {
  return cm.metadata?.labels?.[label] === value;
}

/**
 * What a ConfigMap of a watched namespace is in a role: its desired state, or `undefined` when it is
 * not ours in that role. The one rule the ConfigMap source and the admission webhook share: a
 * ConfigMap with the data label is data only; a policy needs the policy label unless seed-era
 * `--policies` mode (then every ConfigMap with a `.rego` key is one, except kube-root-ca.crt).
 */
export function contentAs(cm: V1ConfigMap, role: OriginRole, rules: ConfigMapRules): OriginState | undefined {
  const { policies, data } = rules;
  if (role === 'data')
    return data.enabled && hasLabel(cm, data.label, data.value) ? dataState(cm) : undefined;
  if (!policies.enabled) return undefined;
  // A ConfigMap that carries the data label is data only, as in kube-mgmt.
  if (data.enabled && hasLabel(cm, data.label, data.value)) return undefined;
  const labelled = hasLabel(cm, policies.label, policies.value);
  if (!labelled && (policies.requireLabel || cm.metadata?.name === KUBE_ROOT_CA)) return undefined;
  const state = policyState(cm, { regoKeysOnly: !labelled });
  // Seed-era mode: an unlabelled ConfigMap without any .rego key is not a policy, and is left untouched.
  if (!labelled && state.modules.length === 0) return undefined;
  return state;
}

/** What a ConfigMap of a watched namespace is to opa-sync: data, a policy, or nothing (`undefined`). */
export function contentOf(cm: V1ConfigMap, rules: ConfigMapRules): OriginState | undefined {
  return contentAs(cm, 'data', rules) ?? contentAs(cm, 'policy', rules);
}

export function policyState(cm: V1ConfigMap, options: PolicyOptions): OriginState {
  const { namespace, name } = refOf(cm);
  const modules: PolicyModule[] = sortedKeys(cm.data)
    .filter((key) => !options.regoKeysOnly || key.endsWith('.rego'))
    .map((key) => ({ id: `${namespace}/${name}/${key}`, text: cm.data?.[key] ?? '' }));
  return {
    origin: origin(cm, 'policy'),
    modules,
    documents: [],
    problems: binaryDataProblems(cm, 'policies'),
    ...bundleOf(cm),
  };
}

export function dataState(cm: V1ConfigMap): OriginState {
  const { namespace, name } = refOf(cm);
  const documents: DataDocument[] = [];
  const problems: OriginProblem[] = [];
  for (const key of sortedKeys(cm.data)) {
    const text = cm.data?.[key] ?? '';
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      problems.push({
        key,
        code: 'invalid_json',
        message: `key ${JSON.stringify(key)} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
      });
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
      problems.push({
        key,
        code: 'invalid_data',
        message: `key ${JSON.stringify(key)} must hold a JSON object, not ${kind}`,
      });
      continue;
    }
    // Refused here, before any sink: JSON.stringify and every recursive walk would overflow the stack.
    if (nestedDeeperThan(value, MAX_JSON_DEPTH)) {
      problems.push({
        key,
        code: 'data_too_deep',
        message: `key ${JSON.stringify(key)} is nested deeper than ${MAX_JSON_DEPTH} levels: not loaded`,
      });
      continue;
    }
    documents.push({ path: [namespace, name, key], value });
  }
  problems.push(...binaryDataProblems(cm, 'data documents'));
  return {
    origin: origin(cm, 'data'),
    modules: [],
    documents,
    dataRoot: [namespace, name],
    problems,
    ...bundleOf(cm),
  };
}

/**
 * What a reload depends on: labels, data and binaryData. Annotations (our own status among them) and
 * resourceVersion are left out, so writing the status never causes a reload.
 */
export function fingerprint(cm: V1ConfigMap): string {
  const canonical = (record: Record<string, string> | undefined): [string, string][] =>
    sortedKeys(record).map((k) => [k, record?.[k] ?? '']);
  return createHash('sha256')
    .update(JSON.stringify([canonical(cm.metadata?.labels), canonical(cm.data), canonical(cm.binaryData)]))
    .digest('hex');
}
