// Least-privilege identities for tests: a ServiceAccount bound, in each given namespace, to a Role with
// only the given rules (and, when given, to a ClusterRole of its own with `clusterRules`), and a
// kubeconfig that authenticates with a token minted for it.
import path from 'node:path';
import { CoreV1Api, RbacAuthorizationV1Api, type V1PolicyRule } from '@kubernetes/client-node';
import { controlPlane } from './index.js';
import { runDir } from './run-dir.js';
import { writeKubeconfig } from './kubeconfig.js';

/** The rules opa-sync needs on ConfigMaps in each namespace it watches. */
export const CONFIGMAP_RULES: V1PolicyRule[] = [
  { apiGroups: [''], resources: ['configmaps'], verbs: ['list', 'watch', 'patch'] },
];

export async function serviceAccountKubeconfig(
  home: string,
  name: string,
  roleNamespaces: readonly string[],
  rules: V1PolicyRule[],
  { clusterRules }: { clusterRules?: V1PolicyRule[] } = {},
): Promise<string> {
  const cp = await controlPlane();
  const kc = cp.kubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  await core.createNamespacedServiceAccount({ namespace: home, body: { metadata: { name } } });
  for (const namespace of roleNamespaces) {
    await rbac.createNamespacedRole({ namespace, body: { metadata: { name }, rules } });
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
        subjects: [{ kind: 'ServiceAccount', name, namespace: home }],
      },
    });
  }
  if (clusterRules !== undefined) {
    // Named after the home namespace, which is unique per test; deleted with deleteClusterRbac.
    const clusterName = clusterRbacName(home, name);
    await rbac.createClusterRole({ body: { metadata: { name: clusterName }, rules: clusterRules } });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: clusterName },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterName },
        subjects: [{ kind: 'ServiceAccount', name, namespace: home }],
      },
    });
  }
  const token = await core.createNamespacedServiceAccountToken({
    name,
    namespace: home,
    body: { spec: { audiences: ['https://kubernetes.default.svc'], expirationSeconds: 3600 } },
  });
  const file = path.join(runDir(), `kubeconfig-${home}-${name}.json`);
  writeKubeconfig(file, cp.server, cp.ca.pem, name, token.status?.token ?? '');
  return file;
}

function clusterRbacName(home: string, name: string): string {
  return `${home}-${name}`;
}

/** Deletes the ClusterRole and ClusterRoleBinding that `clusterRules` made (namespaces keep the rest). */
export async function deleteClusterRbac(home: string, name: string): Promise<void> {
  const rbac = (await controlPlane()).kubeConfig().makeApiClient(RbacAuthorizationV1Api);
  const clusterName = clusterRbacName(home, name);
  for (const remove of [
    () => rbac.deleteClusterRoleBinding({ name: clusterName }),
    () => rbac.deleteClusterRole({ name: clusterName }),
  ]) {
    try {
      await remove();
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
  }
}
