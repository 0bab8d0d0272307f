// The RBAC the deploy manifests grant, read from the files: nothing more than opa-sync needs. No
// Secrets (replicating them is an opt-in, --replicate-allow-secrets, that needs a rule of its own), no
// wildcard, no write at cluster scope, and the only write anywhere is `patch` on ConfigMaps (the status
// annotation) in the namespaces it watches. test/e2e/security.test.ts shows on the real API server that
// each verb granted is needed; test/e2e/deploy-manifests.test.ts asks `kubectl auth can-i`.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { loadAllYaml, type V1ClusterRole, type V1Role } from '@kubernetes/client-node';

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../deploy/kubernetes');
const READ = new Set(['get', 'list', 'watch']);

function objects(): { file: string; obj: { kind?: string } }[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((file) =>
      (loadAllYaml(readFileSync(path.join(dir, file), 'utf8')) as { kind?: string }[]).map((obj) => ({
        file,
        obj,
      })),
    );
}

describe('security: the deploy manifests grant the minimum', function () {
  const roles = objects().filter(({ obj }) => obj.kind === 'Role' || obj.kind === 'ClusterRole');

  it('has the Role and the ClusterRole opa-sync runs with', function () {
    expect(roles.map(({ obj }) => obj.kind).sort()).to.deep.equal(['ClusterRole', 'Role']);
  });

  it('grants nothing on Secrets, no wildcard, no non-resource URL', function () {
    for (const { file, obj } of roles) {
      for (const rule of (obj as V1Role).rules ?? []) {
        const where = `${file}: ${JSON.stringify(rule)}`;
        expect(rule.resources ?? [], where).to.not.include('secrets');
        expect([...(rule.resources ?? []), ...rule.verbs, ...(rule.apiGroups ?? [])], where).to.not.include(
          '*',
        );
        expect(rule.nonResourceURLs, where).to.equal(undefined);
        expect(rule.resourceNames, where).to.equal(undefined);
      }
    }
  });

  it('writes nothing at cluster scope; the one write is patch on ConfigMaps in a watched namespace', function () {
    for (const { file, obj } of roles) {
      for (const rule of (obj as V1ClusterRole).rules ?? []) {
        const writes = rule.verbs.filter((v) => !READ.has(v));
        const where = `${file}: ${obj.kind} ${JSON.stringify(rule)}`;
        if (obj.kind === 'ClusterRole') expect(writes, where).to.deep.equal([]);
        else {
          expect(
            writes.filter((v) => v !== 'patch'),
            where,
          ).to.deep.equal([]);
          if (writes.length > 0) expect(rule.resources, where).to.deep.equal(['configmaps']);
        }
      }
    }
  });

  it("mounts the ServiceAccount token into opa-sync's container only, not OPA's", function () {
    const all = objects();
    const account = all.find(({ obj }) => obj.kind === 'ServiceAccount')?.obj as
      { automountServiceAccountToken?: boolean } | undefined;
    expect(account?.automountServiceAccountToken).to.equal(false);
    const deployment = all.find(({ obj }) => obj.kind === 'Deployment')?.obj as {
      spec: {
        template: {
          spec: {
            automountServiceAccountToken?: boolean;
            containers: { name: string; volumeMounts?: { name: string }[] }[];
          };
        };
      };
    };
    const pod = deployment.spec.template.spec;
    expect(pod.automountServiceAccountToken).to.equal(false);
    const mounting = pod.containers
      .filter((c) => (c.volumeMounts ?? []).some((m) => m.name === 'kube-api-access'))
      .map((c) => c.name);
    expect(mounting).to.deep.equal(['opa-sync']);
  });
});
