// P9: 1,000 policy ConfigMaps created at once (concurrent API calls) in the namespace a running, ready
// opa-sync watches; timed until a watch of the namespace has seen every one annotated {"status":"ok"},
// then checked against OPA's list of modules. OPA's CPU over the same time shows its share: OPA compiles
// every loaded module again on each PUT /v1/policies. Beside it, run by run in turn, the opt-in
// alternative the README gives for very large policy sets: opa-sync as a bundle server and the OPA
// pulling its bundle (long polling), timed until every ConfigMap is annotated ok and OPA holds every module.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import getPort from 'get-port';
import { requireTool } from '../../tools.js';
import { pool, type KubeHttp } from '../kube.js';
import { machineLine } from '../machine.js';
import {
  OK,
  POLICY_LABEL,
  STATUS_ANNOTATION,
  policyConfigMap,
  createConfigMap,
} from '../policy-configmaps.js';
import { cpuSeconds } from '../proc.js';
import { goalsTable, verdictOf, type Goal, type ScenarioFile } from '../report.js';
import { fmt, fmtStat, stat, type Stat } from '../stats.js';
import { ISSUE_12_OPA_SYNC, type Context, type Scenario } from '../scenario.js';
import { sleep } from '../env.js';

const TIMEOUT_MS = Number(process.env.BENCH_P9_TIMEOUT_MS ?? 300_000);
const CONCURRENCY = 100;
const LABEL_SELECTOR = encodeURIComponent(
  Object.entries(POLICY_LABEL)
    .map(([k, v]) => `${k}=${v}`)
    .join(','),
);

function policy(i: number): string {
  return [
    `package bench.p9.cm${i}`,
    '',
    'deny contains msg if {',
    '\tinput.request.kind.kind == "Pod"',
    `\tinput.request.object.metadata.labels.app == "app-${i}"`,
    `\tmsg := "cm${i}: not allowed"`,
    '}',
    '',
  ].join('\n');
}

/** How the ConfigMaps reach OPA: pushed through its REST API, or pulled by OPA as opa-sync's bundle. */
type Mode = 'push' | 'bundle';

interface P9Run {
  run: number;
  mode?: Mode;
  count: number;
  /** From the first create call until every ConfigMap was created (ms). */
  createMs: number;
  /** From the first create call until every ConfigMap showed {"status":"ok"} (ms); NaN on time-out. */
  allOkMs: number;
  okSeen: number;
  errorsSeen: number;
  modulesInOpa: number;
  toolCpuS: number;
  opaCpuS: number;
  /** How many ConfigMaps were ok after each 10 % of the time (the curve of the load). */
  okAtTenths: number[];
  /** How often the watch of the namespace had to be listed and started again. */
  watchRestarts: number;
}

async function oneRun(
  ctx: Context,
  kube: KubeHttp,
  kubeconfig: string,
  count: number,
  run: number,
  mode: Mode,
): Promise<P9Run> {
  const ns = `bench-p9-${mode}-${run}`;
  await kube.ensureNamespace(ns);
  const bundlePort = await getPort({ host: '127.0.0.1' });
  const opa = await ctx.env.opa(
    mode === 'push' ? {} : { extraArgs: [`--config-file=${opaConfig(ctx, bundlePort)}`] },
  );
  const sync = await ctx.env.opaSync([
    `--kubeconfig=${kubeconfig}`,
    ...(mode === 'push'
      ? [`--opa-url=${opa.server.url}/v1`]
      : [`--bundle-addr=127.0.0.1:${bundlePort}`, `--opa-bin=${requireTool('opa')}`]),
    `--namespaces=${ns}`,
  ]);
  let stopWatch = (): void => undefined;
  try {
    await sync.waitReady();
    const okAt = new Map<string, number>();
    const errors = new Set<string>();
    let done: () => void = () => undefined;
    const allOk = new Promise<void>((resolve) => (done = resolve));
    const watch = await kube.watchObjects(
      `/api/v1/namespaces/${ns}/configmaps?labelSelector=${LABEL_SELECTOR}`,
      (object, at) => {
        const name = object.metadata?.name;
        if (!name) return;
        const status = object.metadata?.annotations?.[STATUS_ANNOTATION];
        if (status === OK) {
          errors.delete(name);
          if (!okAt.has(name)) okAt.set(name, at);
          if (okAt.size === count) done();
        } else if (status !== undefined) errors.add(name);
      },
    );
    stopWatch = watch.stop;
    const cpu0 = [cpuSeconds(sync.process.pid) ?? NaN, cpuSeconds(opa.server.process.pid) ?? NaN];
    const t0 = performance.now();
    await pool(count, CONCURRENCY, async (i) => {
      await createConfigMap(
        kube,
        ns,
        policyConfigMap(ns, `policy-${String(i).padStart(4, '0')}`, { 'policy.rego': policy(i) }),
      );
    });
    const createMs = performance.now() - t0;
    const deadline = performance.now() + TIMEOUT_MS;
    let finished = await Promise.race([allOk.then(() => true), sleep(TIMEOUT_MS).then(() => false)]);
    // Pulled: annotated ok means the bundle was built; done once OPA has activated a bundle with every module.
    while (finished && mode === 'bundle' && (await modulesIn(opa, ns)) < count) {
      if (performance.now() > deadline) finished = false;
      else await sleep(20);
    }
    const activeAt = performance.now();
    const cpu1 = [cpuSeconds(sync.process.pid) ?? NaN, cpuSeconds(opa.server.process.pid) ?? NaN];
    const last = mode === 'bundle' ? activeAt : Math.max(...okAt.values());
    const allOkMs = finished ? last - t0 : NaN;
    const span = (finished ? last : performance.now()) - t0;
    const okAtTenths = Array.from(
      { length: 10 },
      (_, k) => [...okAt.values()].filter((at) => at - t0 <= ((k + 1) * span) / 10).length,
    );
    return {
      run,
      mode,
      count,
      createMs,
      allOkMs,
      okSeen: okAt.size,
      errorsSeen: errors.size,
      modulesInOpa: await modulesIn(opa, ns),
      toolCpuS: (cpu1[0] as number) - (cpu0[0] as number),
      opaCpuS: (cpu1[1] as number) - (cpu0[1] as number),
      okAtTenths,
      watchRestarts: watch.restarts(),
    };
  } finally {
    stopWatch();
    await sync.stop();
    await opa.stop();
    // Keep etcd small for the next run (no controller manager is running to delete namespaces).
    await kube
      .request('DELETE', `/api/v1/namespaces/${ns}/configmaps?labelSelector=${LABEL_SELECTOR}`)
      .catch(() => undefined);
  }
}

/** An OPA configuration that long-polls opa-sync's `policies` bundle (the README's, with this port). */
function opaConfig(ctx: Context, port: number): string {
  const file = path.join(ctx.env.dir, `p9-opa-config-${port}.json`);
  const config = {
    services: { 'opa-sync': { url: `http://127.0.0.1:${port}` } },
    bundles: {
      policies: {
        service: 'opa-sync',
        resource: 'bundles/policies',
        polling: { long_polling_timeout_seconds: 60 },
      },
    },
  };
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/** The namespace's modules OPA holds (pushed ids are `<ns>/…`, bundled ones `policies/<ns>/…`). */
async function modulesIn(opa: { http: { request: OpaRequest } }, ns: string): Promise<number> {
  const modules = await opa.http.request('GET', '/v1/policies', undefined, 120_000);
  const ids = (JSON.parse(modules.body) as { result: { id: string }[] }).result.map((m) => m.id);
  return ids.filter((id) => id.startsWith(`${ns}/`) || id.startsWith(`policies/${ns}/`)).length;
}

type OpaRequest = Awaited<ReturnType<Context['env']['opa']>>['http']['request'];

function summaryOf(results: readonly P9Run[]): Record<string, Stat> {
  const of = (f: (x: P9Run) => number): Stat => stat(results.map(f));
  return {
    allOkS: of((x) => x.allOkMs / 1000),
    createS: of((x) => x.createMs / 1000),
    opaCpuS: of((x) => x.opaCpuS),
    toolCpuS: of((x) => x.toolCpuS),
    opaShare: of((x) => x.opaCpuS / (x.allOkMs / 1000)),
    okSeen: of((x) => x.okSeen),
    modulesInOpa: of((x) => x.modulesInOpa),
  };
}

export const p9: Scenario = {
  id: 'p9',
  title: 'P9: 1,000 policy ConfigMaps created at once → all loaded and annotated',
  defaults: '--count 1000 --runs 3',
  async run(ctx) {
    const count = ctx.options.count ?? 1000;
    const runs = ctx.options.runs ?? 3;
    const { cp, kube } = await ctx.env.cluster();
    const machine = ctx.machine();
    const results: Record<Mode, P9Run[]> = { push: [], bundle: [] };
    for (let r = 1; r <= runs; r++) {
      // Alternate which goes first, so the noise of a shared machine falls on both alike.
      for (const mode of (r % 2 === 1 ? ['push', 'bundle'] : ['bundle', 'push']) as Mode[]) {
        const res = await oneRun(ctx, kube, cp.kubeconfigFile, count, r, mode);
        results[mode].push(res);
        ctx.log(
          `p9 run ${r}/${runs} ${mode}: ${res.okSeen}/${count} ok in ${fmt(res.allOkMs / 1000, 2)} s (created in ${fmt(res.createMs / 1000, 2)} s), OPA CPU ${fmt(res.opaCpuS, 1)} s, opa-sync CPU ${fmt(res.toolCpuS, 1)} s`,
        );
      }
    }
    const points = (['push', 'bundle'] as const).map((mode) => {
      const s = summaryOf(results[mode]);
      const secs = s.allOkS?.median ?? NaN;
      const all = results[mode].every((x) => x.okSeen === count && x.modulesInOpa === count);
      const what =
        mode === 'push'
          ? `P9 ${fmt(count, 0)} policy ConfigMaps at once → all loaded + annotated (s, median)`
          : `P9 the same, opt-in: OPA pulls opa-sync's bundle → all annotated + active in OPA (s, median)`;
      const goals: Goal[] = [
        {
          measure: what,
          peer: '–',
          ours: all
            ? `${fmt(secs, 2)} (OPA CPU ${fmt(s.opaCpuS?.median)} s)`
            : `not all: ${fmt(s.okSeen?.min, 0)} ok within ${TIMEOUT_MS / 1000} s`,
          goal: '≤ 10 s',
          ...(all
            ? verdictOf(secs, 10)
            : { verdict: 'missed' as const, detail: `timed out after ${TIMEOUT_MS / 1000} s` }),
        },
      ];
      const key = mode === 'push' ? String(count) : `${count}-bundle`;
      return { key, command: ctx.command, machine, runs: results[mode], summary: s, goals, notes: [] };
    });
    return points;
  },
  render(file: ScenarioFile) {
    const out = [
      '## P9: many policy ConfigMaps at once',
      '',
      'opa-sync (`--namespaces=<ns>`, a fresh OPA per run) is ready; then N labelled policy ConfigMaps (one',
      'module each: a package of its own with one `deny` rule of three expressions) are created with 100',
      'concurrent API calls. Timed from the first create call until a watch of the namespace has seen every',
      'ConfigMap annotated `{"status":"ok"}`; then OPA’s `GET /v1/policies` must list all N modules. CPU of',
      'OPA and opa-sync over the same time; OPA’s share = OPA CPU s / wall s.',
      '',
      'The opt-in alternative for very large policy sets (README, "Very large policy sets") runs in turn with',
      'it, run by run: opa-sync with `--bundle-addr` and no `--opa-url`, and an OPA that long-polls its',
      '`policies` bundle; timed until every ConfigMap is annotated ok *and* OPA holds every module.',
      '',
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat>;
      out.push(
        p.key.endsWith('-bundle')
          ? `### ${fmt(parseInt(p.key, 10), 0)} ConfigMaps, OPA pulling opa-sync's bundle (opt-in)`
          : `### ${fmt(Number(p.key), 0)} ConfigMaps, pushed through OPA's REST API`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length} runs.`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| all loaded and annotated ok${p.key.endsWith('-bundle') ? ', and active in OPA' : ''} (s) | ${fmtStat(s.allOkS, 2)} |`,
        `| all created (s) | ${fmtStat(s.createS, 2)} |`,
        `| OPA CPU (s) | ${fmtStat(s.opaCpuS)} |`,
        `| OPA’s share (CPU s per wall s; 2 cores) | ${fmtStat(s.opaShare, 2)} |`,
        `| opa-sync CPU (s) | ${fmtStat(s.toolCpuS)} |`,
        `| ConfigMaps seen ok | ${fmtStat(s.okSeen, 0)} |`,
        `| modules in OPA afterwards | ${fmtStat(s.modulesInOpa, 0)} |`,
        '',
        'ConfigMaps ok after each tenth of the time (run by run):',
        '',
        ...(p.runs as P9Run[]).map((r) => `- run ${r.run}: ${r.okAtTenths.join(', ')}`),
        '',
        p.key.endsWith('-bundle') ? '' : `Issue 12 measured ${fmt(ISSUE_12_OPA_SYNC.p9S)} s.`,
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
