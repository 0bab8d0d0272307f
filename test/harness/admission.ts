// opa-sync's admission webhook on the shared control plane: a serving certificate for 127.0.0.1 from
// the run's CA, opa-sync started with --admission-addr on a free port, and the
// ValidatingWebhookConfiguration that makes the real kube-apiserver call it for one namespace, as
// deploy/kubernetes/admission-webhook.yaml does in a cluster (objectSelector on the policy and data
// labels, or none for seed-era --policies mode).
import { randomBytes } from 'node:crypto';
import getPort from 'get-port';
import { requireTool } from '../../scripts/tools.js';
import { createServingCert, type ServingCert } from './certs.js';
import { startSync, DATA_LABEL, POLICY_LABEL, type SyncOptions } from './e2e.js';
import { kubectlRun, testCa, waitFor, type KubectlResult } from './index.js';
import type { OpaSyncProcess } from './opa-sync.js';

export interface AdmissionSync extends OpaSyncProcess {
  /** https://127.0.0.1:<port>/validate/configmaps */
  readonly webhookUrl: string;
  readonly cert: ServingCert;
}

/** opa-sync with its admission webhook on a free port (and `options.args`), ready. */
export async function startAdmissionSync(options: SyncOptions = {}): Promise<AdmissionSync> {
  const cert = await createServingCert(await testCa(), `admission-${randomBytes(3).toString('hex')}`);
  const port = await getPort({ host: '127.0.0.1' });
  const sync = await startSync({
    ...options,
    args: [
      `--admission-addr=127.0.0.1:${port}`,
      `--admission-tls-cert-file=${cert.certFile}`,
      `--admission-tls-key-file=${cert.keyFile}`,
      `--opa-bin=${requireTool('opa')}`,
      ...(options.args ?? []),
    ],
  });
  return Object.assign(sync, { webhookUrl: `https://127.0.0.1:${port}/validate/configmaps`, cert });
}

/** The name of a webhook of configuration `name` (the API server wants three dot-separated segments). */
export function webhookName(kind: 'policies' | 'data' | 'configmaps', name: string): string {
  return `${kind}.${name}.opa-sync.test`;
}

/** The webhooks of one configuration: by label (today's ConfigMaps), or every ConfigMap (seed-era). */
export async function webhookConfiguration(
  name: string,
  url: string,
  namespace: string,
  { labels = true, failurePolicy = 'Ignore' }: { labels?: boolean; failurePolicy?: 'Ignore' | 'Fail' } = {},
): Promise<string> {
  const caBundle = Buffer.from((await testCa()).pem).toString('base64');
  const hook = (hookName: string, objectSelector?: Record<string, string>): unknown => ({
    name: hookName,
    clientConfig: { url, caBundle },
    rules: [
      {
        apiGroups: [''],
        apiVersions: ['v1'],
        operations: ['CREATE', 'UPDATE', 'DELETE'],
        resources: ['configmaps'],
        scope: 'Namespaced',
      },
    ],
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    failurePolicy,
    timeoutSeconds: 10,
    namespaceSelector: {
      matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: [namespace] }],
    },
    ...(objectSelector === undefined ? {} : { objectSelector: { matchLabels: objectSelector } }),
  });
  return JSON.stringify({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingWebhookConfiguration',
    metadata: { name },
    webhooks: labels
      ? [hook(webhookName('policies', name), POLICY_LABEL), hook(webhookName('data', name), DATA_LABEL)]
      : [hook(webhookName('configmaps', name))],
  });
}

/**
 * Applies the configuration and waits until the API server calls the webhook: a server-side dry run
 * of `probe` (a ConfigMap the webhook refuses) fails with its answer.
 */
export async function installWebhook(configuration: string, probe: string): Promise<void> {
  const applied = await kubectlRun(['apply', '-f', '-'], { input: configuration });
  if (applied.code !== 0) throw new Error(`kubectl apply of the webhook failed: ${applied.stderr}`);
  await waitFor('the API server to call the admission webhook', async () => {
    const result = await kubectlRun(['create', '-f', '-', '--dry-run=server'], { input: probe });
    return result.code !== 0 && result.stderr.includes('denied the request') ? true : undefined;
  });
}

/** A ConfigMap manifest (JSON) for `kubectl create -f -`. */
export function configMapManifest(
  namespace: string,
  name: string,
  data: Record<string, string>,
  labels: Record<string, string> = POLICY_LABEL,
): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels }, data });
}

/** `kubectl <verb> -f -` of a manifest, and its outcome. */
export function kubectlManifest(args: string[], manifest: string): Promise<KubectlResult> {
  return kubectlRun([...args, '-f', '-'], { input: manifest });
}

/** The `Warning: …` lines kubectl printed. */
export function warningLines(result: KubectlResult): string[] {
  return result.stderr.split('\n').filter((l) => l.startsWith('Warning: '));
}
