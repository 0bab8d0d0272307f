// P1 + P7: initial replication. For each size, N NetworkPolicies exist in the cluster; a fresh OPA and
// a freshly spawned opa-sync (replication only), timed from the spawn until OPA holds all N, with the
// tool's and OPA's memory. The floor runs alternately in the same invocation: one cold LIST of the same
// objects from the API server plus one PUT of the same JSON into another fresh OPA.
import { performance } from 'node:perf_hooks';
import type { KubeHttp } from '../kube.js';
import { memory, cpuSeconds } from '../proc.js';
import { sleep } from '../env.js';
import { countInOpa, waitOpaHolds } from '../opa-holds.js';
import { NP_PATH, OPA_DATA_PATH, REPLICATE_FLAG, seedNetworkPolicies } from '../network-policies.js';
import { fmt, fmtStat, pairedRatios, stat, type Stat } from '../stats.js';
import { goalsTable, verdictOf, type Goal, type Point, type ScenarioFile } from '../report.js';
import { machineLine } from '../machine.js';
import { ISSUE_12_OPA_SYNC, KUBE_MGMT, type Context, type Scenario } from '../scenario.js';

const SETTLE_MS = 2000;

interface ToolRun {
  ms: number;
  readyMs: number;
  cpuS: number;
  rssAtHoldsMiB: number;
  rssSettledMiB: number;
  hwmMiB: number;
  opaRssMiB: number;
  opaHwmMiB: number;
  sentinelPolls: number;
  fullCountMs: number;
}

interface FloorRun {
  listMs: number;
  putMs: number;
  floorMs: number;
  listMiB: number;
  putBodyMiB: number;
  opaRssMiB: number;
}

interface P1Run {
  run: number;
  first: 'opa-sync' | 'floor';
  opaSync: ToolRun;
  floor: FloorRun;
  ratio: number;
}

async function toolRun(ctx: Context, kubeconfig: string, size: number): Promise<ToolRun> {
  const opa = await ctx.env.opa();
  const sync = await ctx.env.opaSync([
    `--kubeconfig=${kubeconfig}`,
    `--opa-url=${opa.server.url}/v1`,
    REPLICATE_FLAG,
    '--enable-policies=false',
    '--enable-data=false',
  ]);
  const pid = sync.process.pid;
  try {
    const holds = await waitOpaHolds(opa.http, size, { alive: () => !sync.process.hasExited() });
    const atHolds = memory(pid);
    const cpuS = cpuSeconds(pid) ?? NaN;
    const readyAt = await sync.waitReady();
    await sleep(SETTLE_MS);
    const settled = memory(pid);
    const opaMem = memory(opa.server.process.pid);
    await sync.heapSnapshot();
    return {
      ms: holds.at - sync.spawnedAt,
      readyMs: readyAt - sync.spawnedAt,
      cpuS,
      rssAtHoldsMiB: atHolds?.rssMiB ?? NaN,
      rssSettledMiB: settled?.rssMiB ?? NaN,
      hwmMiB: settled?.hwmMiB ?? NaN,
      opaRssMiB: opaMem?.rssMiB ?? NaN,
      opaHwmMiB: opaMem?.hwmMiB ?? NaN,
      sentinelPolls: holds.sentinelPolls,
      fullCountMs: holds.fullCountMs,
    };
  } finally {
    await sync.stop();
    await opa.stop();
  }
}

/** The objects as opa-sync writes them: [namespace][name], apiVersion/kind set, no managedFields. */
function opaTree(listBody: string): Record<string, Record<string, unknown>> {
  const list = JSON.parse(listBody) as { items: { metadata: Record<string, unknown> }[] };
  const tree: Record<string, Record<string, unknown>> = {};
  for (const item of list.items) {
    delete item.metadata.managedFields;
    const ns = item.metadata.namespace as string;
    (tree[ns] ??= {})[item.metadata.name as string] = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      ...item,
    };
  }
  return tree;
}

async function floorRun(ctx: Context, kube: KubeHttp, size: number): Promise<FloorRun> {
  const opa = await ctx.env.opa();
  try {
    const t0 = performance.now();
    const list = await kube.coldGet(NP_PATH);
    if (list.status !== 200) throw new Error(`LIST: HTTP ${list.status}`);
    const listMs = list.at - t0;
    const body = JSON.stringify(opaTree(list.body));
    const put = await opa.http.request('PUT', `/v1/data/${OPA_DATA_PATH}`, body, 600_000);
    if (put.status !== 204) throw new Error(`PUT: HTTP ${put.status}: ${put.body.slice(0, 300)}`);
    const putMs = put.at - put.sentAt;
    const n = await countInOpa(opa.http);
    if (n !== size) throw new Error(`floor: OPA holds ${n} of ${size}`);
    const opaMem = memory(opa.server.process.pid);
    return {
      listMs,
      putMs,
      floorMs: listMs + putMs,
      listMiB: list.bytes / 2 ** 20,
      putBodyMiB: Buffer.byteLength(body) / 2 ** 20,
      opaRssMiB: opaMem?.rssMiB ?? NaN,
    };
  } finally {
    await opa.stop();
  }
}

function summarize(runs: P1Run[]): Record<string, Stat> {
  const of = (f: (r: P1Run) => number): Stat => stat(runs.map(f));
  return {
    opaSyncMs: of((r) => r.opaSync.ms),
    readyMs: of((r) => r.opaSync.readyMs),
    cpuS: of((r) => r.opaSync.cpuS),
    rssAtHoldsMiB: of((r) => r.opaSync.rssAtHoldsMiB),
    rssSettledMiB: of((r) => r.opaSync.rssSettledMiB),
    hwmMiB: of((r) => r.opaSync.hwmMiB),
    opaRssMiB: of((r) => r.opaSync.opaRssMiB),
    opaHwmMiB: of((r) => r.opaSync.opaHwmMiB),
    listMs: of((r) => r.floor.listMs),
    putMs: of((r) => r.floor.putMs),
    floorMs: of((r) => r.floor.floorMs),
    ratio: stat(
      pairedRatios(
        runs.map((r) => r.opaSync.ms),
        runs.map((r) => r.floor.floorMs),
      ),
    ),
    putBodyMiB: of((r) => r.floor.putBodyMiB),
    fullCountMs: of((r) => r.opaSync.fullCountMs),
  };
}

function goals(size: number, s: Record<string, Stat>, runs: number): Goal[] {
  const g: Goal[] = [];
  const km = KUBE_MGMT.p1Ms[size];
  const ms = s.opaSyncMs?.median ?? NaN;
  const n = fmt(size, 0);
  if (size === 1000 && km !== undefined) {
    g.push({
      measure: `P1 spawn → OPA holds all ${n} NetworkPolicies (ms, median)`,
      peer: fmt(km),
      ours: `${fmt(ms)} (${fmt(ms / km, 2)}×)`,
      goal: '≤ 0.8× kube-mgmt',
      ...verdictOf(ms, 0.8 * km),
    });
  }
  if (size === 10000 && km !== undefined) {
    g.push({
      measure: `P1 same, ${n} (ms, median)`,
      peer: fmt(km),
      ours: `${fmt(ms)} (${fmt(ms / km, 2)}×)`,
      goal: '≤ 0.7× kube-mgmt',
      ...verdictOf(ms, 0.7 * km),
    });
    const r = s.ratio?.median ?? NaN;
    g.push({
      measure: `P1 same, ${n}: paired ratio to the floor (LIST + PUT, median)`,
      peer: '–',
      ours: `${fmt(r, 2)}× (floor ${fmt(s.floorMs?.median)} ms)`,
      goal: '≤ 1.3× the floor',
      ...verdictOf(r, 1.3),
    });
  }
  const kmRss = KUBE_MGMT.p7MiB[size];
  const rss = s.rssSettledMiB?.median ?? NaN;
  if (kmRss !== undefined) {
    const factor = size === 1000 ? 1.0 : 0.6;
    g.push({
      measure: `P7 tool RSS with ${n} replicated (MiB, 2 s after OPA holds all)`,
      peer: fmt(kmRss),
      ours: `${fmt(rss)} (${fmt(rss / kmRss, 2)}×)`,
      goal: `≤ ${factor.toFixed(1)}×`,
      ...verdictOf(rss, factor * kmRss),
    });
  }
  if (size >= 100000) {
    const worked = (s.opaSyncMs?.n ?? 0) === runs;
    g.push({
      measure: `P1 ${n}: it works within OPA's 256 MB request limit`,
      peer: '–',
      ours: `${fmt(ms)} ms, opa-sync ${fmt(rss)} MiB, OPA ${fmt(s.opaRssMiB?.median)} MiB, PUT body ${fmt(s.putBodyMiB?.median)} MiB`,
      goal: 'works',
      verdict: worked ? 'met' : 'missed',
      detail: worked ? '' : 'not every run finished',
    });
  }
  return g;
}

export const p1: Scenario = {
  id: 'p1',
  title: 'P1 + P7: initial replication of NetworkPolicies, and RSS at each size',
  defaults: '--size 1000,10000,100000 --runs 5 (3 at 100,000)',
  async run(ctx) {
    const sizes = [...(ctx.options.sizes ?? [1000, 10000, 100000])].sort((a, b) => a - b);
    const { cp, kube } = await ctx.env.cluster();
    let have = 0;
    const points: Point[] = [];
    for (const size of sizes) {
      const machine = ctx.machine();
      ctx.log(`p1: creating NetworkPolicies ${have} … ${size - 1}`);
      const seedMs = await seedNetworkPolicies(kube, have, size, ctx.log);
      ctx.log(`p1: ${size - have} created in ${fmt(seedMs / 1000)} s`);
      have = size;
      const results: P1Run[] = [];
      // 100,000 takes ~15 s a run (and its objects ~1 min to create): 3 runs unless told otherwise.
      const runs = ctx.options.runs ?? (size >= 100000 ? 3 : 5);
      for (let i = 0; i < runs; i++) {
        const first = i % 2 === 0 ? 'opa-sync' : 'floor';
        let tool: ToolRun | undefined;
        let floor: FloorRun | undefined;
        for (const which of first === 'opa-sync' ? ['opa-sync', 'floor'] : ['floor', 'opa-sync']) {
          if (which === 'opa-sync') tool = await toolRun(ctx, cp.kubeconfigFile, size);
          else floor = await floorRun(ctx, kube, size);
        }
        if (!tool || !floor) throw new Error('unreachable');
        results.push({ run: i + 1, first, opaSync: tool, floor, ratio: tool.ms / floor.floorMs });
        ctx.log(
          `p1 ${size} run ${i + 1}/${runs}: opa-sync ${fmt(tool.ms)} ms (RSS ${fmt(tool.rssSettledMiB)} MiB), floor ${fmt(floor.floorMs)} ms (LIST ${fmt(floor.listMs)} + PUT ${fmt(floor.putMs)})`,
        );
      }
      const summary = summarize(results);
      points.push({
        key: String(size),
        command: ctx.command,
        machine,
        runs: results,
        summary: { ...summary, seedMs, seeded: size },
        goals: goals(size, summary, runs),
        notes: [],
      });
    }
    return points;
  },
  render(file: ScenarioFile) {
    const points = Object.values(file.points).sort((a, b) => Number(a.key) - Number(b.key));
    const out: string[] = [
      '## P1 + P7: initial replication, and RSS at each size',
      '',
      'N NetworkPolicies exist (100 per namespace, one ingress rule each); a fresh OPA, then `node dist/main.js',
      `--kubeconfig=… --opa-url=… ${REPLICATE_FLAG} --enable-policies=false --enable-data=false`,
      '--health-endpoint=127.0.0.1:…` (replication only, as kube-mgmt with no `--namespaces`). Time from the',
      'spawn until OPA holds all N: three sentinel objects are read every 5 ms (a query that touches only them),',
      'then one full `count` confirms N; the time is when that confirming count was sent. RSS is VmRSS of',
      '/proc/<pid>/status 2 s after OPA holds all (VmHWM: the peak). **Floor**, alternating with opa-sync in the',
      'same invocation (odd runs opa-sync first, even runs the floor first): one cold LIST',
      '(`GET /apis/networking.k8s.io/v1/networkpolicies` on a new TLS connection, to the last byte) plus one',
      '`PUT /v1/data/kubernetes/networkpolicies` of the same JSON (managedFields dropped, as opa-sync sends it)',
      'into another fresh OPA. The ratio is opa-sync / floor of the same run.',
      '',
    ];
    for (const p of points) {
      const s = p.summary as Record<string, Stat> & { seedMs: number };
      const size = Number(p.key);
      out.push(
        `### ${fmt(size, 0)} NetworkPolicies`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length} runs; created in ${fmt(s.seedMs / 1000)} s (${fmt(size / (s.seedMs / 1000), 0)}/s, HTTP/2, 64 streams).`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| opa-sync: spawn → OPA holds all (ms) | ${fmtStat(s.opaSyncMs)} |`,
        `| opa-sync: spawn → /ready (ms) | ${fmtStat(s.readyMs)} |`,
        `| floor: LIST (ms) | ${fmtStat(s.listMs)} |`,
        `| floor: PUT (ms) | ${fmtStat(s.putMs)} |`,
        `| floor: LIST + PUT (ms) | ${fmtStat(s.floorMs)} |`,
        `| **ratio opa-sync / floor, paired per run** | ${fmtStat(s.ratio, 2)} |`,
        `| opa-sync CPU until OPA holds all (s) | ${fmtStat(s.cpuS, 2)} |`,
        `| P7 opa-sync RSS when OPA holds all (MiB) | ${fmtStat(s.rssAtHoldsMiB)} |`,
        `| P7 opa-sync RSS 2 s later (MiB) | ${fmtStat(s.rssSettledMiB)} |`,
        `| P7 opa-sync peak RSS, VmHWM (MiB) | ${fmtStat(s.hwmMiB)} |`,
        `| OPA RSS after opa-sync's load (MiB) | ${fmtStat(s.opaRssMiB)} |`,
        `| OPA peak RSS, VmHWM (MiB) | ${fmtStat(s.opaHwmMiB)} |`,
        `| PUT body (MiB; OPA's request limit is 256 MB) | ${fmtStat(s.putBodyMiB)} |`,
        `| the confirming full count took (ms) | ${fmtStat(s.fullCountMs)} |`,
        '',
      );
      const before = ISSUE_12_OPA_SYNC.p1Ms[size];
      if (before !== undefined)
        out.push(
          `Issue 12 measured opa-sync at ${fmt(before)} ms and ${fmt(ISSUE_12_OPA_SYNC.p7MiB[size])} MiB for this size.`,
          '',
        );
      const table = goalsTable(p.goals);
      if (table) out.push(table, '');
    }
    return out.join('\n');
  },
};
