// Helpers the end-to-end tests share: policy and data ConfigMaps on the shared control plane and their
// status annotations, what a real OPA holds, opa-sync started with the usual flags, its metrics and log,
// and stopping what a suite or a test started. Kept out of index.ts, which this module imports.
import { CoreV1Api, type V1ConfigMap } from '@kubernetes/client-node';
import getPort from 'get-port';
import { requireTool } from '../../scripts/tools.js';
import { controlPlane, httpRequest, waitFor, type ControlPlane, type OpaServer } from './index.js';
import { sortKeys } from './json.js';
import { startOpaSync, type OpaSyncProcess } from './opa-sync.js';

/** The labels opa-sync looks for by default. */
export const POLICY_LABEL: Readonly<Record<string, string>> = { 'openpolicyagent.org/policy': 'rego' };
export const DATA_LABEL: Readonly<Record<string, string>> = { 'openpolicyagent.org/data': 'opa' };
/** The default status annotation, and its value for a ConfigMap that loaded. */
export const STATUS = 'openpolicyagent.org/policy-status';
export const OK = '{"status":"ok"}';

// ---------------------------------------------------------------------------------------------------
// ConfigMaps and their status

const clients = new WeakMap<ControlPlane, CoreV1Api>();

/** A CoreV1Api client of the shared control plane's admin (it survives API server restarts). */
export async function adminCore(): Promise<CoreV1Api> {
  const cp = await controlPlane();
  let core = clients.get(cp);
  if (core === undefined) {
    core = cp.kubeConfig().makeApiClient(CoreV1Api);
    clients.set(cp, core);
  }
  return core;
}

/**
 * Makes the ConfigMap hold exactly this data and these labels (a policy's unless given): created, or
 * replaced if anything differs, which also drops its annotations, so a status seen afterwards is
 * opa-sync's answer to this version. One that already holds it is left alone, status and all.
 */
export async function putConfigMap(
  namespace: string,
  name: string,
  data: Record<string, string>,
  {
    labels = POLICY_LABEL,
    binaryData,
  }: { labels?: Record<string, string>; binaryData?: Record<string, string> } = {},
): Promise<void> {
  const core = await adminCore();
  const body: V1ConfigMap = {
    metadata: { name, labels: { ...labels } },
    data,
    ...(binaryData === undefined ? {} : { binaryData }),
  };
  let existing: V1ConfigMap;
  try {
    existing = await core.readNamespacedConfigMap({ name, namespace });
  } catch (err) {
    if ((err as { code?: number }).code !== 404) throw err;
    await core.createNamespacedConfigMap({ namespace, body });
    return;
  }
  const same = (a: unknown, b: unknown): boolean =>
    JSON.stringify(sortKeys(a ?? {})) === JSON.stringify(sortKeys(b ?? {}));
  if (
    same(existing.data, body.data) &&
    same(existing.binaryData, body.binaryData) &&
    same(existing.metadata?.labels, body.metadata?.labels)
  ) {
    return;
  }
  await core.replaceNamespacedConfigMap({ name, namespace, body });
}

export async function deleteConfigMap(namespace: string, name: string): Promise<void> {
  try {
    await (await adminCore()).deleteNamespacedConfigMap({ name, namespace });
  } catch (err) {
    if ((err as { code?: number }).code !== 404) throw err;
  }
}

/** Every annotation of the ConfigMap ({} when it has none). */
export async function annotationsOf(namespace: string, name: string): Promise<Record<string, string>> {
  const cm = await (await adminCore()).readNamespacedConfigMap({ name, namespace });
  return cm.metadata?.annotations ?? {};
}

/** The status annotation (or another annotation `key`) of the ConfigMap, undefined while it has none. */
export async function statusOf(namespace: string, name: string, key = STATUS): Promise<string | undefined> {
  return (await annotationsOf(namespace, name))[key];
}

/** Waits until the status annotation `key` of the ConfigMap exists and `accept`s; resolves with it. */
export function waitStatus(
  namespace: string,
  name: string,
  accept: (value: string) => boolean,
  { key = STATUS, timeoutMs = 30_000 }: { key?: string; timeoutMs?: number } = {},
): Promise<string> {
  return waitFor(
    `${key} of ${namespace}/${name}`,
    async () => {
      const value = await statusOf(namespace, name, key);
      return value !== undefined && accept(value) ? value : undefined;
    },
    { timeoutMs },
  );
}

/** Waits until the ConfigMap's status is ok. */
export const waitOk = (namespace: string, name: string, key = STATUS): Promise<string> =>
  waitStatus(namespace, name, (v) => v === OK, { key });

/** Waits until the ConfigMap has a status that is not ok; resolves with it. */
export const waitError = (namespace: string, name: string, key = STATUS): Promise<string> =>
  waitStatus(namespace, name, (v) => v !== OK, { key });

/** Puts a policy ConfigMap and waits until its status is ok. */
export async function putPolicyOk(
  namespace: string,
  name: string,
  data: Record<string, string>,
): Promise<void> {
  await putConfigMap(namespace, name, data);
  await waitOk(namespace, name);
}

// ---------------------------------------------------------------------------------------------------
// What a real OPA holds

/** The ids of the policies in OPA, sorted. */
export async function policyIds(opa: OpaServer): Promise<string[]> {
  const res = await opa.request('/v1/policies');
  return (JSON.parse(res.body) as { result: { id: string }[] }).result.map((p) => p.id).sort();
}

/** GET /v1/data/<path>: the document, undefined when OPA has none there. */
export async function opaData(opa: OpaServer, path: string): Promise<unknown> {
  const res = await opa.request(`/v1/data/${path}`);
  return (JSON.parse(res.body) as { result?: unknown }).result;
}

/** POST /v1/data/<path> with an input: the decision, undefined when it is not defined. */
export async function evaluate(opa: OpaServer, path: string, input: unknown = {}): Promise<unknown> {
  const res = await opa.request(`/v1/data/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ input }),
  });
  return (JSON.parse(res.body) as { result?: unknown }).result;
}

/** Waits until the decision at `path` is `want` (compared as JSON). */
export async function waitDecision(
  opa: OpaServer,
  path: string,
  want: unknown,
  {
    input = {},
    timeoutMs = 30_000,
    intervalMs = 100,
  }: { input?: unknown; timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  await waitFor(
    `${path} in ${opa.name} to be ${JSON.stringify(want)}`,
    async () =>
      JSON.stringify(await evaluate(opa, path, input)) === JSON.stringify(want) ? true : undefined,
    { timeoutMs, intervalMs },
  );
}

/** Waits until the policy with this id is in OPA (or, with `present` false, is gone from it). */
export async function waitPolicy(opa: OpaServer, id: string, present = true): Promise<void> {
  await waitFor(`policy ${id} ${present ? 'in' : 'gone from'} ${opa.name}`, async () =>
    (await policyIds(opa)).includes(id) === present ? true : undefined,
  );
}

// ---------------------------------------------------------------------------------------------------
// opa-sync with the usual flags

export interface SyncOptions {
  /** --kubeconfig: the control plane's admin kubeconfig unless given. */
  kubeconfig?: string;
  /** --opa-url of this OPA. */
  opa?: OpaServer;
  /** --namespaces. */
  namespaces?: string;
  /** Any other flags. */
  args?: readonly string[];
  waitReady?: boolean;
}

async function commonArgs(options: SyncOptions): Promise<string[]> {
  return [
    `--kubeconfig=${options.kubeconfig ?? (await controlPlane()).kubeconfigFile}`,
    ...(options.opa === undefined ? [] : [`--opa-url=${options.opa.url}/v1`]),
    ...(options.namespaces === undefined ? [] : [`--namespaces=${options.namespaces}`]),
  ];
}

/** opa-sync on the shared control plane (sidecar, replication), ready unless told otherwise. */
export async function startSync(options: SyncOptions = {}): Promise<OpaSyncProcess> {
  return startOpaSync([...(await commonArgs(options)), ...(options.args ?? [])], {
    waitReady: options.waitReady ?? true,
  });
}

export interface BundleSync extends OpaSyncProcess {
  /** http://127.0.0.1:<port> of --bundle-addr. */
  readonly bundleUrl: string;
}

/** opa-sync as a bundle server on a free port, validating with the real opa (--opa-bin). */
export async function startBundleSync(options: SyncOptions = {}): Promise<BundleSync> {
  const port = await getPort({ host: '127.0.0.1' });
  const sync = await startOpaSync(
    [
      ...(await commonArgs(options)),
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
      ...(options.args ?? []),
    ],
    { waitReady: options.waitReady ?? true },
  );
  return Object.assign(sync, { bundleUrl: `http://127.0.0.1:${port}` });
}

/** The sum of the series of a metric on opa-sync's /metrics whose labels include `labels`. */
export async function scrapeMetric(
  sync: Pick<OpaSyncProcess, 'opsUrl'>,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = (await httpRequest(`${sync.opsUrl}/metrics`)).body;
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const got = new Map(
      [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]] as const),
    );
    if (Object.entries(labels).every(([k, v]) => got.get(k) === v)) sum += Number(match[3]);
  }
  return sum;
}

type LogLine = Record<string, unknown>;

/** How many of opa-sync's log lines so far match. */
export function countLog(sync: OpaSyncProcess, match: (line: LogLine) => boolean): number {
  return sync.logLines().filter(match).length;
}

/** Waits until opa-sync's log has at least `count` lines that match. */
export async function waitLog(
  sync: OpaSyncProcess,
  what: string,
  match: (line: LogLine) => boolean,
  { count = 1, timeoutMs = 30_000 }: { count?: number; timeoutMs?: number } = {},
): Promise<void> {
  await waitFor(
    `${what} in the log of ${sync.process.name}`,
    () => (countLog(sync, match) >= count ? true : undefined),
    { timeoutMs },
  );
}

// ---------------------------------------------------------------------------------------------------
// Stopping what was started

/** Things to stop, stopped last first; every stop runs even if one fails. */
export class Cleanup {
  private readonly stops: (() => Promise<void> | void)[] = [];

  /** Stops `thing` at cleanup; returns it. */
  add<T extends { stop(): Promise<void> }>(thing: T): T {
    this.stops.push(() => thing.stop());
    return thing;
  }

  defer(stop: () => Promise<void> | void): void {
    this.stops.push(stop);
  }

  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (let stop = this.stops.pop(); stop !== undefined; stop = this.stops.pop()) {
      try {
        await stop();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'several stops failed');
  }
}

/** A Cleanup run after each test of the enclosing describe: what a test starts, it does not leave running. */
export function cleanupAfterEach(): Cleanup {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());
  return cleanup;
}

/** A Cleanup run once after the enclosing describe. */
export function cleanupAfterAll(): Cleanup {
  const cleanup = new Cleanup();
  after(() => cleanup.run());
  return cleanup;
}
