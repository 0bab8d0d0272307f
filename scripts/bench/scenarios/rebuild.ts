// rebuild: edit one policy of a large folder (1,000 policies + a 10 MB data.json) → the new bundle
// served, against a cold `opa build` of the same folder; and how plain 304s and opa-sync's own event
// loop fare while that rebuild runs. For each edit a long poll (If-None-Match, `Prefer: wait=60`) is held
// first; the time is from the file write to that poll's answer with the new ETag. Meanwhile a paced loop
// of plain GETs with the current ETag (one keep-alive connection, a request every 5 ms at most) records
// each 304's latency; those that overlap a rebuild show how long the event loop was held from outside.
// From inside: opa-sync's /metrics `nodejs_eventloop_lag_max_seconds` (prom-client's
// perf_hooks.monitorEventLoopDelay, reset at every scrape) scraped just before and just after each edit.
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { requireTool } from '../../tools.js';
import { sleep } from '../env.js';
import { machineLine } from '../machine.js';
import { memory } from '../proc.js';
import { goalsTable, verdictOf, type Goal, type ScenarioFile } from '../report.js';
import type { Context, Scenario } from '../scenario.js';
import { metricValue, scrape, startOpaSync, type OpaSyncTarget } from '../serving.js';
import { fmt, fmtRatio, fmtStat, median, pairedRatios, percentile, stat, type Stat } from '../stats.js';

const run = promisify(execFile);
const DATA_MB = 10;
const PACE_MS = 5;

function policyText(i: number, version: number): string {
  return (
    `package team${i % 20}.svc${i}\n\n` +
    'default allow := false\n\n' +
    'allow if {\n  input.user in data.bench.users\n  input.action == "read"\n' +
    `  count(input.roles) > ${i % 5}\n}\n\n` +
    'deny contains msg if {\n  not allow\n  msg := sprintf("denied %v", [input.user])\n}\n\n' +
    `version := ${version}\n`
  );
}

function policyFile(folder: string, i: number): string {
  return path.join(folder, `team${i % 20}`, `svc${i}`, 'policy.rego');
}

/** The folder: N policies in 20 team folders, and one data.json of about DATA_MB MB. */
function makeFolder(folder: string, policies: number): void {
  for (let i = 0; i < policies; i += 1) {
    const file = policyFile(folder, i);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, policyText(i, 0));
  }
  const records: Record<string, unknown> = {};
  const users: string[] = [];
  for (let i = 0, size = 0; size < DATA_MB * 1e6; i += 1) {
    const record = { id: i, name: `user-${i}`, email: `u${i}@example.com`, roles: ['a', 'b', `r${i % 7}`] };
    records[`k${i}`] = { ...record, active: i % 2 === 0, score: i * 1.5 };
    size += 110;
    if (i < 100) users.push(`user-${i}`);
  }
  mkdirSync(path.join(folder, 'bench'), { recursive: true });
  writeFileSync(path.join(folder, 'bench', 'data.json'), JSON.stringify({ users, records }));
}

interface Answer {
  status: number;
  etag: string | undefined;
}

function request(agent: http.Agent, url: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      res.resume();
      res.on('end', () => {
        const etag = res.headers.etag;
        resolve({ status: res.statusCode ?? 0, etag: typeof etag === 'string' ? etag : undefined });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** One edit's way from the file write to the answered poll, from opa-sync's debug log lines (ms). */
export interface EditStages {
  /** File write → 'file changed' (the watcher, the folder source's 30 ms quiet time, the read). */
  watchMs: number;
  /** → the rebuild started ('bundles rebuilt' time − its tookMs). */
  queueMs: number;
  /** The modules' check (checkMs). */
  checkMs: number;
  /** Building, compressing and publishing the bundle (publishMs). */
  buildMs: number;
  /** 'bundle published' → the held poll's answer arrived. */
  answerMs: number;
}

interface LogLine {
  msg?: string;
  time?: number;
  file?: string;
  tookMs?: number;
  checkMs?: number;
  publishMs?: number;
}

/** The stages of an edit written at `writtenAt` (epoch ms) to `file`, answered at `answeredAt`. Pure. */
export function stagesOf(
  lines: readonly LogLine[],
  file: string,
  writtenAt: number,
  answeredAt: number,
): EditStages | undefined {
  const after = (msg: string, from: number, also: (l: LogLine) => boolean = () => true) =>
    lines.find((l) => l.msg === msg && (l.time ?? -1) >= from && also(l));
  const changed = after('file changed', writtenAt, (l) => l.file === file);
  if (changed?.time === undefined) return undefined;
  const rebuilt = after('bundles rebuilt', changed.time);
  const published = after('bundle published', changed.time);
  if (rebuilt?.time === undefined || published?.time === undefined) return undefined;
  const { tookMs = NaN, checkMs = NaN, publishMs = NaN } = rebuilt;
  return {
    watchMs: changed.time - writtenAt,
    queueMs: rebuilt.time - tookMs - changed.time,
    checkMs,
    buildMs: publishMs,
    answerMs: answeredAt - published.time,
  };
}

function logLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut by the output's size bound
    }
  }
  return out;
}

export interface RebuildRun {
  run: number;
  coldBuildMs: number;
  /** From the spawn until the first bundle was served. */
  firstBundleMs: number;
  /** From each file write to the new ETag's answer. */
  editMs: number[];
  /** opa-sync's event-loop delay, max over each edit's window (ms). */
  loopDelayMaxMs: number[];
  /** The same over the quiet 0.8 s between two edits (the 304 loop still running): the machine's noise. */
  idleLoopDelayMaxMs: number[];
  /** The 304s that overlapped a rebuild window: how many, p99 and max (ms); and all 304s' median. */
  during: { n: number; p99: number; max: number };
  /** Where each edit's time went, from opa-sync's debug log (ms); undefined where a line was missing. */
  stages: (EditStages | undefined)[];
  /** The 304s that overlapped no rebuild, for comparison. */
  outside: { n: number; p99: number; max: number };
  allMedianMs: number;
  loopErrors: number;
  rssMiB: number;
  childRssMiB: number;
}

/** The processes whose parent is `pid` (the opa helper of opa-sync). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

async function coldBuild(ctx: Context, folder: string): Promise<number> {
  const out = path.join(ctx.env.dir, 'cold-build.tar.gz');
  const started = performance.now();
  await run(requireTool('opa'), ['build', '-o', out, folder], { maxBuffer: 64 * 1024 * 1024 });
  const took = performance.now() - started;
  rmSync(out, { force: true });
  return took;
}

async function loopDelayMaxMs(target: OpaSyncTarget): Promise<number> {
  return metricValue(await scrape(target), 'nodejs_eventloop_lag_max_seconds') * 1000;
}

async function session(
  ctx: Context,
  folder: string,
  policies: number,
  edits: number,
  r: number,
  version: { next: number },
): Promise<Omit<RebuildRun, 'coldBuildMs'>> {
  const t0 = performance.now();
  const target = await startOpaSync(ctx.env, {
    dir: folder,
    nodeArgs: ctx.options.nodeArgs ?? [],
    // debug: the 'file changed', 'bundles rebuilt' and 'bundle published' lines time each edit's stages.
    args: ['--log-level=debug'],
  });
  const firstBundleMs = performance.now() - t0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let etag = (await request(agent, target.url, {})).etag ?? '';
  const windows: [number, number][] = [];
  const answers: [number, number][] = [];
  const editMs: number[] = [];
  const loopDelays: number[] = [];
  const idleLoopDelays: number[] = [];
  const stages: (EditStages | undefined)[] = [];
  let looping = true;
  let loopErrors = 0;
  const loop = (async () => {
    while (looping) {
      const at = performance.now();
      const answer = await request(agent, target.url, { 'if-none-match': etag }).catch(() => undefined);
      const took = performance.now() - at;
      // A keep-alive connection the server closed just then: counted; the next request opens another.
      if (answer === undefined) loopErrors += 1;
      else if (answer.status === 304) answers.push([at, took]);
      else if (answer.etag !== undefined) etag = answer.etag;
      if (took < PACE_MS) await sleep(PACE_MS - took);
    }
  })();
  try {
    await sleep(500);
    for (let e = 0; e < edits; e += 1) {
      const i = (37 * (e + r * edits) + 11) % policies;
      const before = etag;
      // Resets the histogram, so that the next scrape covers this edit only; what it reports covers the
      // quiet time since the previous edit (from the first edit on; before, the start-up).
      const idle = await loopDelayMaxMs(target);
      if (e > 0) idleLoopDelays.push(idle);
      // On a connection of its own: one left idle since the last edit may be closed by the server.
      const poll = request(new http.Agent({ keepAlive: false }), target.url, {
        'if-none-match': before,
        prefer: 'modes=snapshot,delta;wait=60',
      }).catch((err: unknown) => ({ status: 0, etag: String(err) }));
      await sleep(100); // the poll is held by now
      version.next += 1;
      const w0 = performance.now();
      const writtenAt = Date.now();
      writeFileSync(policyFile(folder, i), policyText(i, version.next));
      const answer = await poll;
      const w1 = performance.now();
      if (answer.status !== 200 || answer.etag === before)
        throw new Error(`edit ${e}: the long poll answered ${answer.status} ${String(answer.etag)}`);
      etag = answer.etag ?? etag;
      editMs.push(w1 - w0);
      windows.push([w0, w1]);
      const answeredAt = Date.now();
      loopDelays.push(await loopDelayMaxMs(target));
      const rel = path.relative(folder, policyFile(folder, i));
      let stage: EditStages | undefined;
      for (let tries = 0; tries < 20 && stage === undefined; tries++) {
        stage = stagesOf(logLines(target.output()), rel, writtenAt, answeredAt);
        if (stage === undefined) await sleep(50); // the log line may not have arrived yet
      }
      stages.push(stage);
      await sleep(700);
    }
  } finally {
    looping = false;
    await loop;
    agent.destroy();
  }
  const rssMiB = memory(target.pid)?.rssMiB ?? NaN;
  const childRssMiB = childrenOf(target.pid).reduce((sum, c) => sum + (memory(c)?.rssMiB ?? 0), 0);
  await target.stop();
  // A 304 that was waiting at any time during a rebuild window, and the others.
  const overlaps = ([at, took]: [number, number]): boolean =>
    windows.some(([a, b]) => at <= b && at + took >= a);
  const during = answers.filter(overlaps).map(([, took]) => took);
  const outside = answers.filter((x) => !overlaps(x)).map(([, took]) => took);
  return {
    run: r,
    firstBundleMs,
    editMs,
    loopDelayMaxMs: loopDelays,
    idleLoopDelayMaxMs: idleLoopDelays,
    stages,
    during: { n: during.length, p99: percentile(during, 99), max: stat(during).max },
    outside: { n: outside.length, p99: percentile(outside, 99), max: stat(outside).max },
    allMedianMs: median(answers.map(([, took]) => took)),
    loopErrors,
    rssMiB,
    childRssMiB,
  };
}

/** min/median/max over the runs; per run: the median edit, the slowest 304 and the largest loop delay. */
export function summarizeRebuild(runs: readonly RebuildRun[]): Record<string, Stat> {
  const editMedian = runs.map((r) => median(r.editMs));
  const cold = runs.map((r) => r.coldBuildMs);
  return {
    editMs: stat(editMedian),
    editAllMs: stat(runs.flatMap((r) => r.editMs)),
    coldBuildMs: stat(cold),
    ratio: stat(pairedRatios(editMedian, cold)),
    during304MaxMs: stat(runs.map((r) => r.during.max)),
    during304P99Ms: stat(runs.map((r) => r.during.p99)),
    during304N: stat(runs.map((r) => r.during.n)),
    all304MedianMs: stat(runs.map((r) => r.allMedianMs)),
    loopDelayMaxMs: stat(runs.map((r) => Math.max(...r.loopDelayMaxMs))),
    idleLoopDelayMaxMs: stat(runs.map((r) => Math.max(...r.idleLoopDelayMaxMs))),
    ...Object.fromEntries(
      STAGES.map(([key]) => [
        `stage.${key}`,
        stat(runs.flatMap((r) => r.stages.map((x) => x?.[key] ?? NaN))),
      ]),
    ),
    outside304MaxMs: stat(runs.map((r) => r.outside.max)),
    outside304P99Ms: stat(runs.map((r) => r.outside.p99)),
    firstBundleMs: stat(runs.map((r) => r.firstBundleMs)),
    rssMiB: stat(runs.map((r) => r.rssMiB)),
    childRssMiB: stat(runs.map((r) => r.childRssMiB)),
  };
}

const STAGES: readonly [keyof EditStages, string][] = [
  ['watchMs', 'file write → the folder source read it (watcher + its 30 ms quiet time)'],
  ['queueMs', '… → the rebuild started (log times are whole ms: ±1)'],
  ['checkMs', 'the check of the changed module (the warm opa helper)'],
  ['buildMs', 'building, compressing and publishing the bundle'],
  ['answerMs', 'published → the held poll’s answer arrived'],
];

export function rebuildGoals(policies: number, s: Record<string, Stat>): Goal[] {
  const m = (k: string): number => s[k]?.median ?? NaN;
  const what = `edit 1 of ${fmt(policies, 0)} policies (+ ${DATA_MB} MB data.json)`;
  return [
    {
      measure: `${what} → new bundle served (ms)`,
      peer: `cold \`opa build\` ${fmt(m('coldBuildMs'), 0)}`,
      ours: fmt(m('editMs'), 0),
      goal: '≤ 200 ms from the file event',
      ...verdictOf(m('editMs'), 200),
    },
    {
      measure: `${what}: edit → served ÷ cold \`opa build\` (paired)`,
      peer: `cold \`opa build\` ${fmt(m('coldBuildMs'), 0)} ms`,
      ours: `${fmt(m('ratio'), 2)}×`,
      goal: '≤ 0.2×',
      ...verdictOf(m('ratio'), 0.2),
    },
    {
      measure: 'a plain 304 while that rebuild runs (ms, slowest of the run)',
      peer: '–',
      ours: `${fmt(m('during304MaxMs'))} (p99 ${fmt(m('during304P99Ms'))})`,
      goal: '≤ 50 ms',
      ...verdictOf(m('during304MaxMs'), 50),
    },
    {
      measure: 'opa-sync’s event-loop delay during the rebuilds (ms, max of the run)',
      peer: '–',
      ours: fmt(m('loopDelayMaxMs')),
      goal: '≤ 50 ms (the 304 goal, seen from inside)',
      ...verdictOf(m('loopDelayMaxMs'), 50),
    },
  ];
}

export const rebuild: Scenario = {
  id: 'rebuild',
  title: 'Rebuild: edit 1 of 1,000 policies (+ 10 MB data) → served, vs a cold opa build; 304s meanwhile',
  defaults: '--count 1000 --edits 5 --runs 3',
  async run(ctx) {
    const policies = ctx.options.count ?? 1000;
    const edits = ctx.options.edits ?? 5;
    const runs = ctx.options.runs ?? 3;
    const machine = ctx.machine();
    const folder = path.join(ctx.env.dir, 'rebuild-policies');
    makeFolder(folder, policies);
    const version = { next: 0 };
    const results: RebuildRun[] = [];
    for (let r = 1; r <= runs; r++) {
      // Odd runs the cold build first, even runs opa-sync first.
      let coldBuildMs = r % 2 === 1 ? await coldBuild(ctx, folder) : NaN;
      const s = await session(ctx, folder, policies, edits, r, version);
      if (r % 2 === 0) coldBuildMs = await coldBuild(ctx, folder);
      results.push({ ...s, coldBuildMs });
      ctx.log(
        `rebuild run ${r}/${runs}: edits ${s.editMs.map((x) => fmt(x, 0)).join(', ')} ms (cold opa build ${fmt(coldBuildMs, 0)} ms); ` +
          `304 during rebuild max ${fmt(s.during.max)} ms; event-loop delay max ${fmt(Math.max(...s.loopDelayMaxMs))} ms`,
      );
    }
    const summary = summarizeRebuild(results);
    return [
      {
        key: String(policies),
        command: ctx.command,
        machine,
        runs: results,
        summary,
        goals: rebuildGoals(policies, summary),
        notes: [],
      },
    ];
  },
  render(file: ScenarioFile) {
    const out = [
      '## Rebuild: one edit in a large folder',
      '',
      'A folder of N policies (20 team folders, one package each) and a 10 MB `data.json`, served by',
      '`node dist/main.js --policies-dir=<folder> --bundle-addr=… --log-level=debug`. Each run starts a fresh',
      'opa-sync (its first bundle timed from the spawn) and makes a few edits, 0.8 s apart, each to another',
      'policy. Per edit: a long poll is held, the file is written, and the time runs until that poll is',
      'answered with the new ETag (so it includes the file watcher’s latency). Beside it a cold',
      '`opa build -o … <folder>` of the same folder (odd runs before opa-sync’s session, even runs after);',
      'the ratio is paired per run (the run’s median edit ÷ its cold build). Meanwhile a loop of plain',
      'GETs with the current ETag on one keep-alive connection (paced: a request every 5 ms at most)',
      'records each 304’s latency; "during" are those that overlapped a rebuild. Event-loop delay is',
      'opa-sync’s own (`nodejs_eventloop_lag_max_seconds` on its /metrics: prom-client’s',
      '`monitorEventLoopDelay`, 10 ms resolution, reset at each scrape), scraped before and after each edit;',
      'the 304s outside the rebuilds and the delay over the quiet time between edits show what the shared',
      'machine alone costs.',
      '',
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat>;
      const runs = p.runs as RebuildRun[];
      out.push(
        `### ${fmt(Number(p.key), 0)} policies + ${DATA_MB} MB data.json`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${runs.length} runs × ${runs[0]?.editMs.length ?? 0} edits.`,
        '',
        '| measure (min / **median** / max over the runs) | |',
        '| --- | --- |',
        `| edit → served (ms; the run’s median edit) | ${fmtStat(s.editMs, 0)} |`,
        `| edit → served (ms; every edit) | ${fmtStat(s.editAllMs, 0)} |`,
        `| cold \`opa build\` of the folder (ms) | ${fmtStat(s.coldBuildMs, 0)} |`,
        `| edit ÷ cold build (paired per run) | ${fmtRatio(s.ratio)} |`,
        `| plain 304s overlapping a rebuild (count) | ${fmtStat(s.during304N, 0)} |`,
        `| … their p99 (ms) | ${fmtStat(s.during304P99Ms)} |`,
        `| … the slowest (ms) | ${fmtStat(s.during304MaxMs)} |`,
        `| all 304s of the run: median (ms) | ${fmtStat(s.all304MedianMs, 2)} |`,
        `| plain 304s outside the rebuilds: p99 / the slowest (ms) | ${fmtStat(s.outside304P99Ms)} / ${fmtStat(s.outside304MaxMs)} |`,
        `| opa-sync event-loop delay, max over the edits (ms) | ${fmtStat(s.loopDelayMaxMs)} |`,
        `| … max over the quiet time between edits (ms) | ${fmtStat(s.idleLoopDelayMaxMs)} |`,
        `| first bundle from the spawn (ms) | ${fmtStat(s.firstBundleMs, 0)} |`,
        `| opa-sync RSS after the edits (MiB) | ${fmtStat(s.rssMiB, 0)} |`,
        `| its child processes' RSS (the opa helper; MiB) | ${fmtStat(s.childRssMiB, 0)} |`,
        '',
        'Where an edit’s time goes (opa-sync’s debug log: `file changed`, `bundles rebuilt` with its',
        '`checkMs`/`publishMs`, `bundle published`; every edit of every run):',
        '',
        '| stage (ms) | min / **median** / max |',
        '| --- | --- |',
        ...STAGES.map(([key, label]) => `| ${label} | ${fmtStat(s[`stage.${key}`])} |`),
        '',
        'Edits run by run (ms): ' +
          runs.map((r) => `run ${r.run}: ${r.editMs.map((x) => fmt(x, 0)).join(', ')}`).join('; ') +
          '.',
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
