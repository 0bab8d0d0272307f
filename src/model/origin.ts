// What a piece of desired state came from, and how it is named: a ConfigMap (as policy or as data)
// today; folder files and replicated collections later.

export type OriginRole = 'policy' | 'data';

export interface ConfigMapOrigin {
  kind: 'configmap';
  role: OriginRole;
  namespace: string;
  name: string;
}

export type Origin = ConfigMapOrigin;

/** A stable key per origin: the same ConfigMap as policy and as data are two origins. */
export function originKey(origin: Origin): string {
  return `${origin.kind}:${origin.role}:${origin.namespace}/${origin.name}`;
}

/** How an origin is named in logs and errors: `configmap opa/my-policy`. */
export function describeOrigin(origin: Origin): string {
  return `${origin.kind} ${origin.namespace}/${origin.name}`;
}
