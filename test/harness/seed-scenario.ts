// The network-policy article, replayed step by step on the real control plane with OPA as a real TLS
// admission webhook and opa-sync as its sidecar. The e2e test and `npm run demo` both run this one
// scenario: the test asserts what it records, the demo prints each kubectl command and its output.
// A variant may have the webhook OPA pull its policies and the NetworkPolicy data as bundles from
// opa-sync (--bundle-replicated) instead of opa-sync pushing them.
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import getPort from 'get-port';
import { OPA_VERSION, requireOpa } from '../../scripts/tools.js';
import { runDir } from './run-dir.js';
import {
  controlPlane,
  extraOpa,
  kubectlRun,
  testCa,
  waitFor,
  type KubectlResult,
  type OpaServer,
} from './index.js';
import { startSync } from './e2e.js';
import type { OpaSyncProcess } from './opa-sync.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const seedDir = path.join(repo, 'test', 'fixtures', 'seed');
export const WEBHOOK_NAME = 'validating-webhook.openpolicyagent.org';
const POLICY_NAMESPACE = 'opa';
const APP_NAMESPACE = 'default';

export interface SeedVariant {
  name: string;
  /** Extra `opa run` flags (the article's Rego is pre-1.0 and needs --v0-compatible). */
  opaArgs: string[];
  /** opa-sync flags besides the connection to OPA and the cluster. */
  syncArgs: string[];
  /** Policy files (relative to the repository) by ConfigMap name. */
  policies: { ensureNap: string; enforceNap: string };
  /** Today's flags need the policy label; the seed-era --policies mode takes plain ConfigMaps. */
  labelPolicies: boolean;
  /** The OPA pulls `policies` and this data bundle from opa-sync's bundle server; nothing is pushed. */
  dataBundle?: string;
}

export const ARTICLE_VARIANT: SeedVariant = {
  name: "the article's flags and Rego (seed-era --policies, by-name layout, OPA --v0-compatible)",
  opaArgs: ['--v0-compatible'],
  syncArgs: [
    '--policies=opa',
    '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
    '--replicate-cluster-by-name',
  ],
  policies: {
    ensureNap: 'test/fixtures/seed/ensure-nap-exists.rego',
    enforceNap: 'test/fixtures/seed/enforce-correct-nap.rego',
  },
  labelPolicies: false,
};

export const TODAY_VARIANT: SeedVariant = {
  name: "today's flags, labelled ConfigMaps, default layout, Rego v1",
  opaArgs: [],
  syncArgs: ['--namespaces=opa', '--replicate-cluster=networking.k8s.io/v1/networkpolicies'],
  policies: {
    ensureNap: 'policies/network-policies/ensure-nap-exists.rego',
    enforceNap: 'policies/network-policies/enforce-correct-nap.rego',
  },
  labelPolicies: true,
};

export const BUNDLES_VARIANT: SeedVariant = {
  name: "today's flags, the webhook OPA pulling its policies and the NetworkPolicy data as bundles from opa-sync (no push)",
  opaArgs: [],
  syncArgs: [
    '--namespaces=opa',
    '--replicate-cluster=networking.k8s.io/v1/networkpolicies',
    '--bundle-replicated=kubernetes-data',
  ],
  policies: TODAY_VARIANT.policies,
  labelPolicies: true,
  dataBundle: 'kubernetes-data',
};

/** Where the scenario reports: the demo prints, the test keeps quiet. */
export interface ScenarioIO {
  section(title: string): void | Promise<void>;
  command(line: string, result: KubectlResult): void;
  note(text: string): void;
}

/** What the test asserts afterwards. */
export interface ScenarioRecord {
  ensureNapStatus: string;
  enforceNapStatus: string;
  deniedMessages: string[];
  podsWithoutPolicy: string[];
  podsWithPolicy: string[];
  riskyPolicy: KubectlResult;
  recreatedPolicy: KubectlResult;
}

export const POD_DENIAL =
  /admission webhook "validating-webhook\.openpolicyagent\.org" denied the request: The Pod: prop-deployment-[a-z0-9]+-[a-z0-9]{5} could not be created because it is missing an associated Network Security Policy\./;
export const RISKY_DENIAL =
  'The Network Policy: risky-policy could not be created because it violates the proprietary app security policy.';

/**
 * The `opa run` flags of a variant on an OPA version: OPA 0.x parses Rego v0 by default, so the
 * article's `--v0-compatible` is not needed there (its Rego is native).
 */
export function opaArgsOf(variant: SeedVariant, opaVersion: string): string[] {
  return opaVersion.startsWith('v0.')
    ? variant.opaArgs.filter((a) => a !== '--v0-compatible')
    : [...variant.opaArgs];
}

/** The scenario with the webhook OPA (and the validating --opa-bin) of `opaVersion` (default OPA_VERSION). */
export async function runSeedScenario(
  variant: SeedVariant,
  io: ScenarioIO,
  { opaVersion = OPA_VERSION }: { opaVersion?: string } = {},
): Promise<ScenarioRecord> {
  const opaArgs = opaArgsOf(variant, opaVersion);
  const started: { stop(): Promise<void> }[] = [];
  const run = async (
    args: string[],
    options: { show?: string; input?: string; mayFail?: boolean } = {},
  ): Promise<KubectlResult> => {
    const result = await kubectlRun(args, {
      cwd: seedDir,
      ...(options.input === undefined ? {} : { input: options.input }),
    });
    io.command(options.show ?? `kubectl ${args.join(' ')}`, result);
    if (result.code !== 0 && !options.mayFail) {
      throw new Error(`kubectl ${args.join(' ')} failed: ${result.stderr}`);
    }
    return result;
  };
  const quiet = (args: string[], input?: string): Promise<KubectlResult> =>
    kubectlRun(args, { cwd: seedDir, ...(input === undefined ? {} : { input }) });

  try {
    await io.section('Setting up: OPA as a TLS admission webhook, opa-sync as its sidecar');
    await controlPlane();
    const ca = await testCa();
    await cleanUp(quiet);
    await quiet(['create', 'namespace', POLICY_NAMESPACE]);
    let opa: OpaServer;
    let sync: OpaSyncProcess;
    if (variant.dataBundle === undefined) {
      opa = await extraOpa({ tlsCa: ca, extraArgs: opaArgs, version: opaVersion });
      started.push(opa);
      sync = await startSync({
        opa,
        args: [`--opa-ca-file=${ca.certFile}`, '--opa-resync-interval=2s', ...variant.syncArgs],
      });
    } else {
      // The OPA first (it waits for the bundle server), then opa-sync as a pure bundle server.
      const port = await getPort({ host: '127.0.0.1' });
      const poll = { long_polling_timeout_seconds: 10 };
      const config = {
        services: { 'opa-sync': { url: `http://127.0.0.1:${port}` } },
        bundles: {
          policies: { service: 'opa-sync', resource: 'bundles/policies', polling: poll },
          [variant.dataBundle]: {
            service: 'opa-sync',
            resource: `bundles/${variant.dataBundle}`,
            polling: poll,
          },
        },
      };
      const configFile = path.join(runDir(), `seed-opa-bundles-${port}.json`);
      writeFileSync(configFile, JSON.stringify(config));
      opa = await extraOpa({
        tlsCa: ca,
        extraArgs: [...opaArgs, `--config-file=${configFile}`],
        version: opaVersion,
      });
      started.push(opa);
      sync = await startSync({
        args: [`--bundle-addr=127.0.0.1:${port}`, `--opa-bin=${requireOpa(opaVersion)}`, ...variant.syncArgs],
      });
    }
    started.push(sync);
    io.note(
      `OPA ${opaVersion} ${opa.url} (${opaArgs.join(' ') || 'its default Rego version'}); opa-sync ${variant.syncArgs.join(' ')}`,
    );

    const createPolicy = async (name: string, file: string, key?: string): Promise<string> => {
      const from =
        key === undefined
          ? path.relative(seedDir, path.join(repo, file))
          : `${key}=${path.relative(seedDir, path.join(repo, file))}`;
      await run(['create', 'configmap', name, `--from-file=${from}`, '-n', POLICY_NAMESPACE]);
      if (variant.labelPolicies) {
        await run(['label', 'configmap', name, 'openpolicyagent.org/policy=rego', '-n', POLICY_NAMESPACE]);
      }
      return waitFor(`the policy-status annotation of ${name}`, async () => {
        const out = await quiet([
          'get',
          'configmap',
          name,
          '-n',
          POLICY_NAMESPACE,
          '-o',
          'jsonpath={.metadata.annotations.openpolicyagent\\.org/policy-status}',
        ]);
        return out.stdout === '' ? undefined : out.stdout;
      });
    };
    const mainStatus = await createPolicy(
      'opa-default-system-main',
      'policies/system/main.rego',
      'main.rego',
    );
    if (mainStatus !== '{"status":"ok"}') throw new Error(`system.main did not load: ${mainStatus}`);
    await quiet(['apply', '-f', '-'], webhookConfiguration(opa, ca.pem));
    io.note(
      `ValidatingWebhookConfiguration ${WEBHOOK_NAME} → ${opa.url}/ (Pod CREATE, NetworkPolicy CREATE/UPDATE)`,
    );
    // The API server picks webhook configurations up asynchronously: wait until it calls OPA.
    await waitFor('the webhook to answer', async () =>
      (await dryRunPod(quiet, 'web')).code === 0 ? true : undefined,
    );

    await io.section('The lab: a NetworkPolicy for app=prop, the protected Deployment, two clients');
    await run(['apply', '-f', 'network-policy.yaml']);
    await waitForNetworkPolicy(opa, 'app-inbound-policy', true);
    await run(['apply', '-f', 'prop-deployment.yaml']);
    await run(['apply', '-f', 'client-deployment.yaml']);
    await run(['apply', '-f', 'illegal-client-deployment.yaml']);
    await waitForPods(quiet, 'app=prop', 2);
    await run(['get', 'pods', '-n', APP_NAMESPACE]);
    io.note('Pods stay Pending: this cluster has no kubelet, so the article’s curl checks are out of scope.');

    await io.section('Use case 1: a Pod labelled app=prop needs a NetworkPolicy');
    const ensureNapStatus = await createPolicy('ensure-nap-existence', variant.policies.ensureNap);
    await run([
      'get',
      'cm',
      'ensure-nap-existence',
      '-n',
      POLICY_NAMESPACE,
      '-o',
      'jsonpath={.metadata.annotations}',
    ]);

    const deniedMessages: string[] = [];
    const recreateDeployment = async (): Promise<void> => {
      await run(['delete', 'deployments', 'prop-deployment', '-n', APP_NAMESPACE]);
      await waitForPods(quiet, 'app=prop', 0);
      await waitFor('the old ReplicaSet to be gone', async () =>
        (await quiet(['get', 'rs', '-n', APP_NAMESPACE, '-l', 'app=prop', '-o', 'name'])).stdout.trim() === ''
          ? true
          : undefined,
      );
    };
    const expectDenied = async (): Promise<void> => {
      // Prove the webhook denies before the Deployment exists: a ReplicaSet keeps its first failure.
      await waitFor('a Pod labelled app=prop to be denied', async () =>
        (await dryRunPod(quiet, 'prop')).stderr.includes(
          'The Pod: prop-probe could not be created because it is missing an associated Network Security Policy.',
        )
          ? true
          : undefined,
      );
      await run(['apply', '-f', 'prop-deployment.yaml']);
      const message = await waitFor('the Deployment to report the denial', async () => {
        const out = await quiet([
          'get',
          'deployments',
          'prop-deployment',
          '-n',
          APP_NAMESPACE,
          '-o',
          'jsonpath={.status.conditions[?(@.type=="ReplicaFailure")].message}',
        ]);
        return out.stdout.includes('denied the request') ? out.stdout : undefined;
      });
      deniedMessages.push(message);
      await run([
        'get',
        'deployments',
        'prop-deployment',
        '-n',
        APP_NAMESPACE,
        '-o',
        'jsonpath={range .status.conditions[*]}{.message}{"\\n"}{end}',
      ]);
    };

    await recreateDeployment();
    await run(['delete', 'networkpolicies', 'app-inbound-policy', '-n', APP_NAMESPACE]);
    await waitForNetworkPolicy(opa, 'app-inbound-policy', false);
    await expectDenied();
    const podsWithoutPolicy = await podNames(quiet, 'app=prop');
    await run(['get', 'pods', '-n', APP_NAMESPACE]);

    await io.section('A NetworkPolicy that protects app=backend pods does not count');
    await run(['apply', '-f', 'nap2.yaml']);
    await waitForNetworkPolicy(opa, 'app-inbound-policy2', true);
    await recreateDeployment();
    await expectDenied();

    await io.section('With app-inbound-policy back, the prop pods are created');
    await run(['apply', '-f', 'network-policy.yaml']);
    await waitForNetworkPolicy(opa, 'app-inbound-policy', true);
    await recreateDeployment();
    await waitFor('a Pod labelled app=prop to be allowed', async () =>
      (await dryRunPod(quiet, 'prop')).code === 0 ? true : undefined,
    );
    await run(['apply', '-f', 'prop-deployment.yaml']);
    const podsWithPolicy = await waitForPods(quiet, 'app=prop', 2);
    await run(['get', 'pods', '-n', APP_NAMESPACE]);

    await io.section('Use case 2: a NetworkPolicy for app=prop must admit app=frontend only');
    const enforceNapStatus = await createPolicy('enforce-correct-nap', variant.policies.enforceNap);
    await waitFor('the risky NetworkPolicy to be refused', async () =>
      (await quiet(['create', '--dry-run=server', '-f', 'risky-policy.yaml'])).code !== 0 ? true : undefined,
    );
    const riskyPolicy = await run(['apply', '-f', 'risky-policy.yaml'], { mayFail: true });
    await run(['delete', '-f', 'network-policy.yaml']);
    const recreatedPolicy = await run(['apply', '-f', 'network-policy.yaml'], { mayFail: true });

    return {
      ensureNapStatus,
      enforceNapStatus,
      deniedMessages,
      podsWithoutPolicy,
      podsWithPolicy,
      riskyPolicy,
      recreatedPolicy,
    };
  } finally {
    await cleanUp(quiet);
    for (const s of started.reverse()) await s.stop();
  }
}

function webhookConfiguration(opa: OpaServer, caPem: string): string {
  return JSON.stringify({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingWebhookConfiguration',
    metadata: { name: WEBHOOK_NAME },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        clientConfig: { url: `${opa.url}/`, caBundle: Buffer.from(caPem).toString('base64') },
        rules: [
          { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'] },
          {
            apiGroups: ['networking.k8s.io'],
            apiVersions: ['v1'],
            operations: ['CREATE', 'UPDATE'],
            resources: ['networkpolicies'],
          },
        ],
        admissionReviewVersions: ['v1'],
        sideEffects: 'None',
        failurePolicy: 'Fail',
        timeoutSeconds: 10,
        // System namespaces and opa-sync's own stay out of the webhook's reach.
        namespaceSelector: {
          matchExpressions: [
            {
              key: 'kubernetes.io/metadata.name',
              operator: 'NotIn',
              values: ['kube-system', 'kube-public', 'kube-node-lease', POLICY_NAMESPACE],
            },
          ],
        },
      },
    ],
  });
}

type Quiet = (args: string[], input?: string) => Promise<KubectlResult>;

/** A server-side dry run of a Pod labelled app=<app>: runs the webhook, creates nothing. */
function dryRunPod(quiet: Quiet, app: string): Promise<KubectlResult> {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `${app}-probe`, namespace: APP_NAMESPACE, labels: { app } },
    spec: { containers: [{ name: 'c', image: 'nginx:1.14.2' }] },
  };
  return quiet(['create', '--dry-run=server', '-f', '-'], JSON.stringify(pod));
}

async function podNames(quiet: Quiet, selector: string): Promise<string[]> {
  const out = await quiet([
    'get',
    'pods',
    '-n',
    APP_NAMESPACE,
    '-l',
    selector,
    '-o',
    'jsonpath={.items[*].metadata.name}',
  ]);
  return out.stdout.split(' ').filter((n) => n !== '');
}

function waitForPods(quiet: Quiet, selector: string, count: number): Promise<string[]> {
  return waitFor(
    `${count} pods with ${selector}`,
    async () => {
      const names = await podNames(quiet, selector);
      return names.length === count ? names : undefined;
    },
    { timeoutMs: 60_000 },
  );
}

/** Waits until opa-sync has (or no longer has) the NetworkPolicy in OPA's data, whatever the layout. */
function waitForNetworkPolicy(opa: OpaServer, name: string, present: boolean): Promise<true> {
  return waitFor(`NetworkPolicy ${name} ${present ? 'in' : 'gone from'} OPA's data`, async () => {
    const body = (await opa.request('/v1/data/kubernetes/networkpolicies')).body;
    return body.includes(`"name":"${name}"`) === present ? true : undefined;
  });
}

/** Leaves the cluster as the scenario found it (also before it starts, after an interrupted run). */
async function cleanUp(quiet: Quiet): Promise<void> {
  await quiet(['delete', 'validatingwebhookconfiguration', WEBHOOK_NAME, '--ignore-not-found']);
  for (const file of [
    'prop-deployment.yaml',
    'client-deployment.yaml',
    'illegal-client-deployment.yaml',
    'network-policy.yaml',
    'nap2.yaml',
    'risky-policy.yaml',
  ]) {
    await quiet(['delete', '-f', file, '--ignore-not-found', '--wait=false']);
  }
  await quiet([
    'delete',
    'namespace',
    POLICY_NAMESPACE,
    '--ignore-not-found',
    '--wait=true',
    '--timeout=60s',
  ]);
}

/** The fixture's text, for showing what a step applies. */
export function seedFile(name: string): string {
  return readFileSync(path.join(seedDir, name), 'utf8');
}
