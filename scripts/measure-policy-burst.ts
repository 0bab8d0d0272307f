// Measures issue 12's P9 against the real components of the test harness (kube-apiserver, OPA,
// opa-sync from src/): N labelled policy ConfigMaps created at once (100 API calls in flight), timed from
// the first create until a watch has seen every one annotated {"status":"ok"}; and OPA's floor for the
// same modules: a fresh OPA alone, loading them with one PUT /v1/policies each, in turn; and, with
// --bundle, the opt-in alternative: opa-sync as a bundle server and the OPA pulling the bundle, timed
// until every ConfigMap is annotated ok and OPA has activated all N modules. Prints each, with the CPU
// seconds of OPA and opa-sync (from /proc) and OPA's share (CPU s per wall s). Not a test, not the
// benchmark (scripts/bench/): a quick measurement for the pusher's work. Leaves nothing running.
//
// With --dependent, every module calls a function of a library ConfigMap that is created last (the
// dependency retries: each module fails once, then loads once the library is there).
//
//   npx tsx scripts/measure-policy-burst.ts [--count 1000] [--runs 1] [--skip-floor] [--skip-sync] [--bundle]
//     [--dependent] [--timeout 600] [--keep]
import { readFileSync } from 'node:fs';
import http from 'node:http';
import getPort from 'get-port';
import { requireTool } from './tools.js';
import { opaWithConfig } from '../test/harness/bundles.js';
import { Watch, type V1ConfigMap } from '@kubernetes/client-node';
import {
  controlPlane,
  createNamespace,
  extraOpa,
  stopHarness,
  type OpaServer,
} from '../test/harness/index.js';
import { adminCore, POLICY_LABEL, STATUS, OK } from '../test/harness/e2e.js';
import { startOpaSync } from '../test/harness/opa-sync.js';
import { removeRunDir, runDir } from '../test/harness/run-dir.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(args[i + 1]);
};
const COUNT = option('count', 1000);
const RUNS = option('runs', 1);
const CONCURRENCY = 100;
const DEADLINE_MS = option('timeout', 600) * 1000;

/** Rejects after the deadline, so that a run that never ends still stops everything it started. */
function deadline(what: string): Promise<never> {
  return new Promise((_, reject) => {
    setTimeout(
      () => reject(new Error(`${what}: not done within ${DEADLINE_MS / 1000} s`)),
      DEADLINE_MS,
    ).unref();
  });
}

const DEPENDENT = args.includes('--dependent');
const LIB = 'package bench.p9.lib\n\napp(i) := sprintf("app-%d", [i])\n';

/** The module of ConfigMap i: the benchmark's (a package of its own, a default, an allow and a deny rule). */
function policy(i: number): string {
  return [
    `package bench.p9.cm${i}`,
    '',
    ...(DEPENDENT ? ['import data.bench.p9.lib', ''] : []),
    'default allow := false',
    '',
    'allow if {',
    '\tinput.request.kind.kind == "Pod"',
    DEPENDENT
      ? `\tinput.request.object.metadata.labels.app == lib.app(${i})`
      : `\tinput.request.object.metadata.labels.app == "app-${i}"`,
    '}',
    '',
    'deny contains msg if {',
    '\tnot allow',
    `\tmsg := sprintf("cm${i}: %v is not allowed", [input.request.object.metadata.name])`,
    '}',
    '',
  ].join('\n');
}

/** CPU seconds (user + system) of a process so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function pool(count: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let i = next++; i < count; i = next++) await task(i);
    }),
  );
}

function put(opa: OpaServer, path: string, body: string, agent: http.Agent): Promise<number> {
  const url = new URL(`${opa.url}${path}`);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'PUT', agent },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** OPA alone: a fresh OPA loads the N modules, one PUT each, in turn (the REST API's floor). */
async function floor(run: number): Promise<{ wallS: number; opaCpuS: number }> {
  const opa = await extraOpa();
  const agent = new http.Agent({ keepAlive: true });
  try {
    const cpu0 = cpuSeconds(opa.process.pid);
    const t0 = performance.now();
    // The library first: the floor needs no retries.
    if (DEPENDENT) await put(opa, `/v1/policies/floor${run}/lib/lib.rego`, LIB, agent);
    for (let i = 0; i < COUNT; i += 1) {
      const status = await put(opa, `/v1/policies/floor${run}/policy-${i}/policy.rego`, policy(i), agent);
      if (status !== 200) throw new Error(`PUT ${i}: ${status}`);
    }
    return { wallS: (performance.now() - t0) / 1000, opaCpuS: cpuSeconds(opa.process.pid) - cpu0 };
  } finally {
    agent.destroy();
    await opa.stop();
  }
}

interface Burst {
  wallS: number;
  createS: number;
  opaCpuS: number;
  syncCpuS: number;
  /** PUT /v1/policies requests OPA received (push mode). */
  puts: number;
}

/** The modules of the namespace that OPA has (pushed ids are `<ns>/…`, bundle ids `policies/<ns>/…`). */
async function modulesIn(opa: OpaServer, ns: string): Promise<number> {
  const res = await opa.request('/v1/policies', { timeoutMs: 120_000 });
  const ids = (JSON.parse(res.body) as { result: { id: string }[] }).result.map((p) => p.id);
  const inNs = ids.filter((id) => id.startsWith(`${ns}/`) || id.startsWith(`policies/${ns}/`));
  return inNs.filter((id) => !id.includes('/lib/')).length;
}

/** opa-sync: N ConfigMaps created at once, until every one is annotated ok (and, for bundles, in OPA). */
async function burst(mode: 'push' | 'bundle'): Promise<Burst> {
  const cp = await controlPlane();
  const core = await adminCore();
  const ns = await createNamespace('p9');
  const bundlePort = await getPort({ host: '127.0.0.1' });
  const opa =
    mode === 'push'
      ? await extraOpa()
      : await opaWithConfig({
          services: { 'opa-sync': { url: `http://127.0.0.1:${bundlePort}` } },
          bundles: {
            policies: {
              service: 'opa-sync',
              resource: 'bundles/policies',
              polling: { long_polling_timeout_seconds: 60 },
            },
          },
        });
  const sync = await startOpaSync([
    `--kubeconfig=${cp.kubeconfigFile}`,
    ...(mode === 'push'
      ? [`--opa-url=${opa.url}/v1`]
      : [`--bundle-addr=127.0.0.1:${bundlePort}`, `--opa-bin=${requireTool('opa')}`]),
    `--namespaces=${ns}`,
  ]);
  const ok = new Set<string>();
  let done = (): void => undefined;
  const allOk = new Promise<void>((resolve) => (done = resolve));
  const listed = await core.listNamespacedConfigMap({ namespace: ns });
  const watching = await new Watch(cp.kubeConfig()).watch(
    `/api/v1/namespaces/${ns}/configmaps`,
    { labelSelector: 'openpolicyagent.org/policy=rego', resourceVersion: listed.metadata?.resourceVersion },
    (_type: string, cm: V1ConfigMap) => {
      const name = cm.metadata?.name;
      if (name !== undefined && name !== 'lib' && cm.metadata?.annotations?.[STATUS] === OK) ok.add(name);
      if (ok.size === COUNT) done();
    },
    () => undefined,
  );
  try {
    const cpu0 = [cpuSeconds(opa.process.pid), cpuSeconds(sync.process.pid)] as const;
    const t0 = performance.now();
    await pool(COUNT, CONCURRENCY, async (i) => {
      await core.createNamespacedConfigMap({
        namespace: ns,
        body: {
          metadata: { name: `policy-${i}`, labels: { ...POLICY_LABEL } },
          data: { 'policy.rego': policy(i) },
        },
      });
    });
    if (DEPENDENT) {
      await core.createNamespacedConfigMap({
        namespace: ns,
        body: { metadata: { name: 'lib', labels: { ...POLICY_LABEL } }, data: { 'lib.rego': LIB } },
      });
    }
    const createS = (performance.now() - t0) / 1000;
    const late = deadline(`${COUNT} ConfigMaps annotated ok`);
    late.catch(() => undefined); // raced below; once the race is won, its rejection is of no interest
    await Promise.race([allOk, late]);
    if (mode === 'bundle') {
      const inOpa = async (): Promise<void> => {
        while ((await modulesIn(opa, ns)) < COUNT) await new Promise((r) => setTimeout(r, 50));
      };
      await Promise.race([inOpa(), late]);
    }
    const wallS = (performance.now() - t0) / 1000;
    const opaCpuS = cpuSeconds(opa.process.pid) - cpu0[0];
    const syncCpuS = cpuSeconds(sync.process.pid) - cpu0[1];
    if (mode === 'push' && (await modulesIn(opa, ns)) !== COUNT)
      throw new Error('not every module is in OPA');
    const puts = readFileSync(opa.process.logFile, 'utf8')
      .split('\n')
      .filter(
        (l) =>
          l.includes('"Received request."') &&
          l.includes('"req_method":"PUT"') &&
          l.includes('/v1/policies/'),
      ).length;
    return { wallS, createS, opaCpuS, syncCpuS, puts };
  } finally {
    (watching as { abort(): void }).abort();
    await sync.stop();
    await opa.stop();
  }
}

const fmt = (n: number): string => n.toFixed(2);
try {
  for (let run = 1; run <= RUNS; run += 1) {
    if (!args.includes('--skip-floor')) {
      const f = await floor(run);
      console.log(
        `run ${run} floor (OPA alone, ${COUNT} sequential PUTs): ${fmt(f.wallS)} s, OPA CPU ${fmt(f.opaCpuS)} s (share ${fmt(f.opaCpuS / f.wallS)})`,
      );
    }
    if (!args.includes('--skip-sync')) {
      const b = await burst('push');
      console.log(
        `run ${run} opa-sync pushing (${COUNT} ConfigMaps at once): all ok in ${fmt(b.wallS)} s (created in ${fmt(b.createS)} s), ${b.puts} PUT /v1/policies, OPA CPU ${fmt(b.opaCpuS)} s (share ${fmt(b.opaCpuS / b.wallS)}), opa-sync CPU ${fmt(b.syncCpuS)} s`,
      );
    }
    if (args.includes('--bundle')) {
      const b = await burst('bundle');
      console.log(
        `run ${run} opa-sync serving a bundle (${COUNT} ConfigMaps at once): all ok and active in OPA in ${fmt(b.wallS)} s (created in ${fmt(b.createS)} s), OPA CPU ${fmt(b.opaCpuS)} s, opa-sync CPU ${fmt(b.syncCpuS)} s`,
      );
    }
  }
} finally {
  await stopHarness();
  // --keep leaves the components' logs (OPA's lists every request) for a closer look.
  if (!args.includes('--keep')) removeRunDir();
  else console.log(`logs kept in ${runDir()}`);
}
