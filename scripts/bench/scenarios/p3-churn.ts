// P3: churn. 10,000 NetworkPolicies are replicated; a generator then patches them at a fixed rate for a
// fixed time (open loop: each update is sent on its schedule, whatever the answers do), each update
// writing a global sequence number into the object's annotation `bench.opa-sync/seq`. Each run has two
// passes over the same opa-sync and OPA:
//   cost pass — nothing polls OPA during the churn: tool and OPA CPU (from /proc) and OPA's request counts
//               from the first update until the last one is visible;
//   lag pass  — a watcher asks OPA (one small query for every pending update at once, ~every ms) when each
//               update became visible: the lag distribution, from the API server's answer to visibility.
// After each pass OPA's copy is compared with a LIST of the cluster (resourceVersion and sequence number
// of every object): every update is accounted for.
import { performance } from 'node:perf_hooks';
import { sleep } from '../env.js';
import type { KubeHttp } from '../kube.js';
import { machineLine } from '../machine.js';
import {
  NP_PATH,
  OPA_DATA_PATH,
  REPLICATE_FLAG,
  npName,
  npNamespace,
  seedNetworkPolicies,
} from '../network-policies.js';
import { waitOpaHolds } from '../opa-holds.js';
import type { OpaHttp } from '../opa-http.js';
import { cpuSeconds } from '../proc.js';
import { goalsTable, verdictOf, type Goal, type Point, type ScenarioFile } from '../report.js';
import { fmt, fmtStat, percentile, stat, type Stat } from '../stats.js';
import { ISSUE_12_OPA_SYNC, KUBE_MGMT, type Context, type Scenario } from '../scenario.js';

const SEQ = 'bench.opa-sync/seq';
const MAX_IN_FLIGHT = 512;
const WATCH_BATCH = 500;

interface Update {
  seq: number;
  obj: number;
  due: number;
  sentAt: number;
  answeredAt: number;
  visibleAt: number;
}

function stride(size: number): number {
  for (const s of [7919, 7907, 7901, 101, 7]) if (size % s !== 0) return s;
  return 1;
}

/** Sends rate × duration updates on schedule; resolves once every one was answered. */
async function churn(
  kube: KubeHttp,
  size: number,
  rate: number,
  durationS: number,
  seqBase: number,
  onAnswered: (u: Update) => void = () => undefined,
): Promise<{ updates: Update[]; startedAt: number; failed: number }> {
  const total = Math.round(rate * durationS);
  const step = stride(size);
  const updates: Update[] = [];
  const inFlight = new Set<Promise<void>>();
  let failed = 0;
  const startedAt = performance.now() + 20;
  for (let j = 0; j < total; j++) {
    const due = startedAt + (j * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    while (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
    const obj = (j * step) % size;
    const u: Update = {
      seq: seqBase + j,
      obj,
      due,
      sentAt: performance.now(),
      answeredAt: NaN,
      visibleAt: NaN,
    };
    updates.push(u);
    const p = kube
      .request(
        'PATCH',
        `/apis/networking.k8s.io/v1/namespaces/${npNamespace(obj)}/networkpolicies/${npName(obj)}`,
        { metadata: { annotations: { [SEQ]: String(u.seq) } } },
        'application/merge-patch+json',
      )
      .then(
        (res) => {
          if (res.status !== 200) failed++;
          else {
            u.answeredAt = res.at;
            onAnswered(u);
          }
        },
        () => {
          failed++;
        },
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  return { updates, startedAt, failed };
}

const VISIBLE_QUERY = `v := [i | some i; p := input.p[i]; to_number(data.kubernetes.networkpolicies[p[0]][p[1]].metadata.annotations[${JSON.stringify(SEQ)}]) >= p[2]]`;

/** Marks (visibleAt) those of `batch` that OPA shows; returns how many. */
async function markVisible(opa: OpaHttp, batch: Update[]): Promise<number> {
  if (batch.length === 0) return 0;
  const { bindings, answer } = await opa.query(VISIBLE_QUERY, {
    p: batch.map((u) => [npNamespace(u.obj), npName(u.obj), u.seq]),
  });
  const idx = (bindings?.v as number[] | undefined) ?? [];
  for (const i of idx) {
    const u = batch[i];
    if (u && Number.isNaN(u.visibleAt)) u.visibleAt = answer.at;
  }
  return idx.length;
}

/** Polls until every one of `updates` is visible in OPA (checking the oldest pending ones first). */
async function waitAllVisible(
  opa: OpaHttp,
  updates: Update[],
  timeoutMs: number,
  intervalMs: number,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let pending = updates.filter((u) => !Number.isNaN(u.answeredAt) && Number.isNaN(u.visibleAt));
  while (pending.length > 0 && performance.now() < deadline) {
    await markVisible(opa, pending.slice(0, WATCH_BATCH));
    pending = pending.filter((u) => Number.isNaN(u.visibleAt));
    if (pending.length > 0) await sleep(intervalMs);
  }
  return pending.length;
}

/** OPA's copy against a LIST of the cluster: objects missing, extra, or at another resourceVersion/seq. */
async function compareWithCluster(
  kube: KubeHttp,
  opa: OpaHttp,
): Promise<{ objects: number; mismatched: number }> {
  const list = await kube.json<{
    items: {
      metadata: {
        namespace: string;
        name: string;
        resourceVersion: string;
        annotations?: Record<string, string>;
      };
    }[];
  }>('GET', NP_PATH);
  const copy = ((await opa.getData(OPA_DATA_PATH)) ?? {}) as Record<
    string,
    Record<string, { metadata: { resourceVersion: string; annotations?: Record<string, string> } }>
  >;
  let mismatched = 0;
  let inOpa = 0;
  for (const ns of Object.values(copy)) inOpa += Object.keys(ns).length;
  for (const item of list.items) {
    const got = copy[item.metadata.namespace]?.[item.metadata.name];
    if (
      !got ||
      got.metadata.resourceVersion !== item.metadata.resourceVersion ||
      got.metadata.annotations?.[SEQ] !== item.metadata.annotations?.[SEQ]
    )
      mismatched++;
  }
  return { objects: list.items.length, mismatched: mismatched + Math.max(0, inOpa - list.items.length) };
}

async function accounted(
  kube: KubeHttp,
  opa: OpaHttp,
): Promise<{ objects: number; mismatched: number; afterMs: number }> {
  const t0 = performance.now();
  for (;;) {
    const c = await compareWithCluster(kube, opa);
    if (c.mismatched === 0 || performance.now() - t0 > 15_000)
      return { ...c, afterMs: performance.now() - t0 };
    await sleep(500);
  }
}

interface PassCost {
  updates: number;
  failed: number;
  achievedRate: number;
  maxLateMs: number;
  toolCpuS: number;
  opaCpuS: number;
  opaPatches: number;
  opaPuts: number;
  lagAfterMs: number;
  mismatched: number;
}

interface PassLag {
  updates: number;
  failed: number;
  achievedRate: number;
  p50: number;
  p99: number;
  max: number;
  notVisible: number;
  lagAfterMs: number;
  mismatched: number;
  watcherPolls: number;
}

interface P3Run {
  run: number;
  rate: number;
  durationS: number;
  cost: PassCost;
  lag: PassLag;
}

function rateOf(updates: Update[], startedAt: number): number {
  const answered = updates.filter((u) => !Number.isNaN(u.answeredAt));
  const last = Math.max(...answered.map((u) => u.answeredAt));
  return answered.length / ((last - startedAt) / 1000);
}

async function oneRun(
  ctx: Context,
  kube: KubeHttp,
  kubeconfig: string,
  size: number,
  rate: number,
  durationS: number,
  run: number,
): Promise<P3Run> {
  const opa = await ctx.env.opa();
  const sync = await ctx.env.opaSync([
    `--kubeconfig=${kubeconfig}`,
    `--opa-url=${opa.server.url}/v1`,
    REPLICATE_FLAG,
    '--enable-policies=false',
    '--enable-data=false',
  ]);
  const toolPid = sync.process.pid;
  const opaPid = opa.server.process.pid;
  try {
    await waitOpaHolds(opa.http, size, { alive: () => !sync.process.hasExited() });
    await sync.waitReady();
    await sleep(2000);
    const seqBase = Date.now() * 10; // unique and increasing across passes and runs

    // Cost pass: no polling of OPA while the churn runs.
    const cpu0 = [cpuSeconds(toolPid) ?? NaN, cpuSeconds(opaPid) ?? NaN];
    const patches0 = await opa.http.requestCount('v1/data', 'patch');
    const puts0 = await opa.http.requestCount('v1/data', 'put');
    const c = await churn(kube, size, rate, durationS, seqBase);
    const lastAnswered = Math.max(...c.updates.map((u) => u.answeredAt).filter((a) => !Number.isNaN(a)));
    // The updates answered last (up to 200) tell when the churn has drained, cheaply; then all are checked.
    const tail = [...c.updates]
      .filter((u) => !Number.isNaN(u.answeredAt))
      .sort((a, b) => b.answeredAt - a.answeredAt)
      .slice(0, 200);
    await waitAllVisible(opa.http, tail, 60_000, 2);
    const drainedAt = Math.max(...tail.map((u) => u.visibleAt));
    const cpu1 = [cpuSeconds(toolPid) ?? NaN, cpuSeconds(opaPid) ?? NaN];
    const patches1 = await opa.http.requestCount('v1/data', 'patch');
    const puts1 = await opa.http.requestCount('v1/data', 'put');
    await waitAllVisible(opa.http, c.updates, 30_000, 20);
    const costCheck = await accounted(kube, opa.http);
    const cost: PassCost = {
      updates: c.updates.length,
      failed: c.failed,
      achievedRate: rateOf(c.updates, c.startedAt),
      maxLateMs: Math.max(...c.updates.map((u) => u.sentAt - u.due)),
      toolCpuS: (cpu1[0] as number) - (cpu0[0] as number),
      opaCpuS: (cpu1[1] as number) - (cpu0[1] as number),
      opaPatches: patches1 - patches0,
      opaPuts: puts1 - puts0,
      lagAfterMs: drainedAt - lastAnswered,
      mismatched: costCheck.mismatched,
    };
    ctx.log(
      `p3 ${rate}/s run ${run} cost pass: tool ${fmt(cost.toolCpuS, 2)} s, OPA ${fmt(cost.opaCpuS, 2)} s CPU, ${cost.opaPatches} PATCH for ${cost.updates} updates, ${fmt(cost.achievedRate, 0)}/s achieved`,
    );
    await sleep(1000);

    // Lag pass: a watcher marks when each answered update becomes visible.
    const pending: Update[] = [];
    let churning = true;
    let polls = 0;
    let lagDeadline = Infinity;
    const watcher = (async () => {
      for (;;) {
        if (pending.length === 0) {
          if (!churning) return;
          await sleep(1);
          continue;
        }
        polls++;
        const batch = pending.slice(0, WATCH_BATCH);
        try {
          await markVisible(opa.http, batch);
        } catch {
          // an OPA hiccup: ask again
        }
        for (let i = pending.length - 1; i >= 0; i--)
          if (!Number.isNaN((pending[i] as Update).visibleAt)) pending.splice(i, 1);
        if (!churning && performance.now() > lagDeadline) return;
        await sleep(1);
      }
    })();
    const l = await churn(kube, size, rate, durationS, seqBase + 10_000_000, (u) => pending.push(u));
    lagDeadline = performance.now() + 60_000;
    churning = false;
    await watcher;
    const lagCheck = await accounted(kube, opa.http);
    const lags = l.updates.filter((u) => !Number.isNaN(u.visibleAt)).map((u) => u.visibleAt - u.answeredAt);
    const lastAnswered2 = Math.max(...l.updates.map((u) => u.answeredAt).filter((a) => !Number.isNaN(a)));
    const lag: PassLag = {
      updates: l.updates.length,
      failed: l.failed,
      achievedRate: rateOf(l.updates, l.startedAt),
      p50: percentile(lags, 50),
      p99: percentile(lags, 99),
      max: percentile(lags, 100),
      notVisible: l.updates.length - l.failed - lags.length,
      lagAfterMs:
        Math.max(...l.updates.map((u) => u.visibleAt).filter((v) => !Number.isNaN(v))) - lastAnswered2,
      mismatched: lagCheck.mismatched,
      watcherPolls: polls,
    };
    ctx.log(
      `p3 ${rate}/s run ${run} lag pass: p50 ${fmt(lag.p50)} ms, p99 ${fmt(lag.p99)} ms, ${lag.notVisible} not visible, ${lag.mismatched} objects differ from the cluster`,
    );
    return { run, rate, durationS, cost, lag };
  } finally {
    await sync.stop();
    await opa.stop();
  }
}

export const p3: Scenario = {
  id: 'p3',
  title: 'P3: churn at 200/s and 2,000/s over 10,000 replicated NetworkPolicies',
  defaults: '--size 10000 --rate 200,2000 --duration 30 (5 s at 2,000/s) --runs 3',
  async run(ctx) {
    const size = ctx.options.sizes?.[0] ?? 10000;
    const rates = ctx.options.rates ?? [200, 2000];
    const runs = ctx.options.runs ?? 3;
    const { cp, kube } = await ctx.env.cluster();
    ctx.log(`p3: creating ${size} NetworkPolicies`);
    const seedMs = await seedNetworkPolicies(kube, 0, size, ctx.log);
    ctx.log(`p3: created in ${fmt(seedMs / 1000)} s`);
    const points: Point[] = [];
    for (const rate of rates) {
      const durationS = ctx.options.durationS ?? (rate > 500 ? 5 : 30);
      const machine = ctx.machine();
      const results: P3Run[] = [];
      for (let r = 1; r <= runs; r++)
        results.push(await oneRun(ctx, kube, cp.kubeconfigFile, size, rate, durationS, r));
      const of = (f: (x: P3Run) => number): Stat => stat(results.map(f));
      const s: Record<string, Stat> = {
        toolCpuS: of((x) => x.cost.toolCpuS),
        opaCpuS: of((x) => x.cost.opaCpuS),
        opaPatches: of((x) => x.cost.opaPatches),
        opaPuts: of((x) => x.cost.opaPuts),
        updatesPerPatch: of((x) => x.cost.updates / Math.max(1, x.cost.opaPatches)),
        achievedRate: of((x) => x.cost.achievedRate),
        maxLateMs: of((x) => x.cost.maxLateMs),
        costLagAfterMs: of((x) => x.cost.lagAfterMs),
        p50: of((x) => x.lag.p50),
        p99: of((x) => x.lag.p99),
        max: of((x) => x.lag.max),
        lagAfterMs: of((x) => x.lag.lagAfterMs),
        notVisible: of((x) => x.lag.notVisible),
        mismatched: of((x) => x.cost.mismatched + x.lag.mismatched),
        failed: of((x) => x.cost.failed + x.lag.failed),
      };
      const goals: Goal[] = [];
      const accountedFor = results.every(
        (x) => x.cost.mismatched === 0 && x.lag.mismatched === 0 && x.lag.notVisible === 0,
      );
      const label = `P3 ${fmt(size, 0)} objects, ${fmt(rate, 0)} updates/s for ${durationS} s`;
      if (rate === 200 && durationS === 30 && size === 10000) {
        const tool = s.toolCpuS?.median ?? NaN;
        const o = s.opaCpuS?.median ?? NaN;
        goals.push(
          {
            measure: `${label}: tool CPU s`,
            peer: fmt(KUBE_MGMT.p3.toolCpuS, 2),
            ours: `${fmt(tool, 2)} (${fmt(tool / KUBE_MGMT.p3.toolCpuS, 2)}×)`,
            goal: '≤ 0.8×',
            ...verdictOf(tool, 0.8 * KUBE_MGMT.p3.toolCpuS),
          },
          {
            measure: 'P3 same: OPA CPU s',
            peer: fmt(KUBE_MGMT.p3.opaCpuS, 2),
            ours: `${fmt(o, 2)} (${fmt(o / KUBE_MGMT.p3.opaCpuS, 2)}×; ${fmt(s.opaPatches?.median, 0)} PATCH requests)`,
            goal: '≤ 0.5× (coalesce)',
            ...verdictOf(o, 0.5 * KUBE_MGMT.p3.opaCpuS),
          },
          {
            measure: 'P3 same: an update visible in OPA (p50 / p99 ms)',
            peer: `${fmt(KUBE_MGMT.p3.p50Ms)} / ${fmt(KUBE_MGMT.p3.p99Ms)}`,
            ours: `${fmt(s.p50?.median)} / ${fmt(s.p99?.median)}`,
            goal: 'p99 ≤ 25 ms',
            ...verdictOf(s.p99?.median ?? NaN, 25),
          },
        );
      }
      goals.push({
        measure: `${label}: every update accounted for (OPA = cluster after the churn)`,
        peer: '–',
        ours: accountedFor
          ? 'yes'
          : `no: ${fmt(s.mismatched?.max, 0)} objects differ, ${fmt(s.notVisible?.max, 0)} updates never visible`,
        goal: 'all',
        verdict: accountedFor ? 'met' : 'missed',
        detail: accountedFor ? '' : 'see the section',
      });
      points.push({
        key: String(rate),
        command: ctx.command,
        machine,
        runs: results,
        summary: { ...s, size, durationS, seedMs },
        goals,
        notes: [],
      });
    }
    return points;
  },
  render(file: ScenarioFile) {
    const out = [
      '## P3: churn',
      '',
      'N NetworkPolicies replicated by opa-sync (replication only, as in P1) into a fresh OPA; then an open-loop',
      'generator merge-PATCHes them at a fixed rate (HTTP/2, up to 512 in flight; update j goes to object',
      '`j × 7919 mod N`), each writing a global sequence number into the annotation `bench.opa-sync/seq`. Two',
      'passes per run on the same processes: **cost** — nothing polls OPA during the churn; CPU of opa-sync and',
      'OPA (utime + stime from /proc/<pid>/stat) and OPA’s own request counters (`/metrics`) from the first',
      'update until the 200 updates answered last are visible; **lag** — a watcher sends OPA one small query',
      'for all pending updates about every millisecond (`to_number(…annotations["bench.opa-sync/seq"]) >= seq`)',
      'and records when each update became visible, from the API server’s answer to the PATCH. After each pass',
      'OPA’s copy is compared with a LIST of the cluster (resourceVersion and sequence number of every object).',
      '',
    ];
    for (const p of Object.values(file.points).sort((a, b) => Number(a.key) - Number(b.key))) {
      const s = p.summary as Record<string, Stat> & { size: number; durationS: number };
      out.push(
        `### ${fmt(Number(p.key), 0)} updates/s for ${s.durationS} s over ${fmt(s.size, 0)} objects`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length} runs.`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| rate achieved by the generator (updates/s) | ${fmtStat(s.achievedRate, 0)} |`,
        `| generator: latest update behind schedule (ms) | ${fmtStat(s.maxLateMs)} |`,
        `| opa-sync CPU (s) | ${fmtStat(s.toolCpuS, 2)} |`,
        `| OPA CPU (s) | ${fmtStat(s.opaCpuS, 2)} |`,
        `| OPA PATCH requests | ${fmtStat(s.opaPatches, 0)} |`,
        `| OPA PUT requests (full reloads) | ${fmtStat(s.opaPuts, 0)} |`,
        `| updates per PATCH | ${fmtStat(s.updatesPerPatch, 2)} |`,
        `| an update visible in OPA, p50 (ms) | ${fmtStat(s.p50)} |`,
        `| an update visible in OPA, p99 (ms) | ${fmtStat(s.p99)} |`,
        `| an update visible in OPA, max (ms) | ${fmtStat(s.max)} |`,
        `| lag after the churn: last answer → all visible, lag pass (ms) | ${fmtStat(s.lagAfterMs)} |`,
        `| lag after the churn, cost pass (ms; 200 last updates checked) | ${fmtStat(s.costLagAfterMs)} |`,
        `| updates never visible | ${fmtStat(s.notVisible, 0)} |`,
        `| objects differing from the cluster after the passes | ${fmtStat(s.mismatched, 0)} |`,
        `| failed PATCHes (generator) | ${fmtStat(s.failed, 0)} |`,
        '',
      );
      if (Number(p.key) === 200) {
        out.push(
          `Issue 12 measured opa-sync at ${fmt(ISSUE_12_OPA_SYNC.p3.toolCpuS, 2)} s tool CPU, ${fmt(ISSUE_12_OPA_SYNC.p3.opaCpuS, 2)} s OPA CPU, ${fmt(ISSUE_12_OPA_SYNC.p3.p50Ms)} / ${fmt(ISSUE_12_OPA_SYNC.p3.p99Ms)} ms.`,
          '',
        );
      }
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
