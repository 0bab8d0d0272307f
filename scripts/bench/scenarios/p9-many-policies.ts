// P9: 1,000 policy ConfigMaps created at once (concurrent API calls) in the namespace a running, ready
// opa-sync watches; timed until a watch of the namespace has seen every one annotated {"status":"ok"},
// then checked against OPA's list of modules. OPA's CPU over the same time shows its share: OPA compiles
// every loaded module again on each PUT /v1/policies.
import { performance } from 'node:perf_hooks';
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

interface P9Run {
  run: number;
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
): Promise<P9Run> {
  const ns = `bench-p9-${run}`;
  await kube.ensureNamespace(ns);
  const opa = await ctx.env.opa();
  const sync = await ctx.env.opaSync([
    `--kubeconfig=${kubeconfig}`,
    `--opa-url=${opa.server.url}/v1`,
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
    const finished = await Promise.race([allOk.then(() => true), sleep(TIMEOUT_MS).then(() => false)]);
    const cpu1 = [cpuSeconds(sync.process.pid) ?? NaN, cpuSeconds(opa.server.process.pid) ?? NaN];
    const last = Math.max(...okAt.values());
    const allOkMs = finished ? last - t0 : NaN;
    const span = (finished ? last : performance.now()) - t0;
    const okAtTenths = Array.from(
      { length: 10 },
      (_, k) => [...okAt.values()].filter((at) => at - t0 <= ((k + 1) * span) / 10).length,
    );
    const modules = await opa.http.request('GET', '/v1/policies', undefined, 120_000);
    const ids = (JSON.parse(modules.body) as { result: { id: string }[] }).result.map((m) => m.id);
    return {
      run,
      count,
      createMs,
      allOkMs,
      okSeen: okAt.size,
      errorsSeen: errors.size,
      modulesInOpa: ids.filter((id) => id.startsWith(`${ns}/`)).length,
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

export const p9: Scenario = {
  id: 'p9',
  title: 'P9: 1,000 policy ConfigMaps created at once → all loaded and annotated',
  defaults: '--count 1000 --runs 3',
  async run(ctx) {
    const count = ctx.options.count ?? 1000;
    const runs = ctx.options.runs ?? 3;
    const { cp, kube } = await ctx.env.cluster();
    const machine = ctx.machine();
    const results: P9Run[] = [];
    for (let r = 1; r <= runs; r++) {
      const res = await oneRun(ctx, kube, cp.kubeconfigFile, count, r);
      results.push(res);
      ctx.log(
        `p9 run ${r}/${runs}: ${res.okSeen}/${count} ok in ${fmt(res.allOkMs / 1000, 2)} s (created in ${fmt(res.createMs / 1000, 2)} s), OPA CPU ${fmt(res.opaCpuS, 1)} s, opa-sync CPU ${fmt(res.toolCpuS, 1)} s`,
      );
    }
    const of = (f: (x: P9Run) => number): Stat => stat(results.map(f));
    const s: Record<string, Stat> = {
      allOkS: of((x) => x.allOkMs / 1000),
      createS: of((x) => x.createMs / 1000),
      opaCpuS: of((x) => x.opaCpuS),
      toolCpuS: of((x) => x.toolCpuS),
      opaShare: of((x) => x.opaCpuS / (x.allOkMs / 1000)),
      okSeen: of((x) => x.okSeen),
      modulesInOpa: of((x) => x.modulesInOpa),
    };
    const secs = s.allOkS?.median ?? NaN;
    const all = results.every((x) => x.okSeen === count && x.modulesInOpa === count);
    const goals: Goal[] = [
      {
        measure: `P9 ${fmt(count, 0)} policy ConfigMaps at once → all loaded + annotated (s, median)`,
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
    return [
      { key: String(count), command: ctx.command, machine, runs: results, summary: s, goals, notes: [] },
    ];
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
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat>;
      out.push(
        `### ${fmt(Number(p.key), 0)} ConfigMaps`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length} runs.`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| all loaded and annotated ok (s) | ${fmtStat(s.allOkS, 2)} |`,
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
        `Issue 12 measured ${fmt(ISSUE_12_OPA_SYNC.p9S)} s.`,
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
