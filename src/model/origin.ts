// What a piece of desired state came from, and how it is named: a ConfigMap (as policy or as data), or
// a file of the local policies folder. Replicated collections are named by their resource instead.

export type OriginRole = 'policy' | 'data';

export interface ConfigMapOrigin {
  kind: 'configmap';
  role: OriginRole;
  namespace: string;
  name: string;
}

export interface FileOrigin {
  kind: 'file';
  role: OriginRole;
  /** Path relative to the policies folder, '/'-separated. */
  path: string;
}

export type Origin = ConfigMapOrigin | FileOrigin;

/** A stable key per origin: the same ConfigMap as policy and as data are two origins. */
export function originKey(origin: Origin): string {
  return origin.kind === 'configmap'
    ? `${origin.kind}:${origin.role}:${origin.namespace}/${origin.name}`
    : `${origin.kind}:${origin.role}:${origin.path}`;
}

/** How an origin is named in logs and errors: `configmap opa/my-policy`, `file authz/main.rego`. */
export function describeOrigin(origin: Origin): string {
  return origin.kind === 'configmap'
    ? `${origin.kind} ${origin.namespace}/${origin.name}`
    : `${origin.kind} ${origin.path}`;
}
