// polls: many held long polls, opa-sync against a bare node:http server, taking turns within each run.
// N keep-alive connections are opened at once (as a fleet does after a restart of its server), each a GET
// with If-None-Match of the current ETag and `Prefer: modes=snapshot,delta;wait=60`; timed until the
// server holds them all; the server's RSS idle and while holding; then a new bundle is published
// (opa-sync: its policy file edited, the time from its 'bundle published' log line; bare: a line on its
// stdin) and every 200 is timed from the publish. Meanwhile a probe process asks for plain 304s in a
// loop: how long the fan-out kept them waiting. `--node-args` runs opa-sync's node with other flags.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { sleep } from '../env.js';
import { machineLine } from '../machine.js';
import { PollClient } from '../poll-client.js';
import { cpuSeconds, memory } from '../proc.js';
import { goalsTable, verdictOf, type Goal, type ScenarioFile } from '../report.js';
import type { Context, Scenario } from '../scenario.js';
import {
  BUNDLE_NAME,
  get,
  inTurn,
  metricValue,
  policyText,
  scrape,
  startBare,
  startOpaSync,
  writePoliciesFolder,
  type OpaSyncTarget,
  type Target,
} from '../serving.js';
import { fmt, fmtRatio, fmtStat, pairedRatios, percentile, stat, type Stat } from '../stats.js';

/** A child process that asks for plain 304s (If-None-Match: *) in a loop and reports their latencies. */
const PROBE = String.raw`
import net from 'node:net';
const [port, path] = process.argv.slice(2);
const req = Buffer.from('GET ' + path + ' HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: *\r\n\r\n');
const socket = net.connect({ port: Number(port), host: '127.0.0.1' });
socket.setNoDelay(true);
const samples = [];
let sent = 0;
let buf = '';
const ask = () => { sent = Date.now(); socket.write(req); };
socket.on('connect', ask);
socket.on('data', (c) => {
  buf += c.toString('latin1');
  while (buf.includes('\r\n\r\n')) {
    buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
    const now = Date.now();
    samples.push([now, now - sent]);
    setTimeout(ask, 2);
  }
});
process.stdout.write('ready\n');
process.stdin.on('data', () => { process.stdout.write(JSON.stringify(samples)); process.exit(0); });
`;

async function startProbe(dir: string, port: number): Promise<{ stop(): Promise<[number, number][]> }> {
  const file = path.join(dir, 'probe.mjs');
  writeFileSync(file, PROBE);
  const child = spawn(process.execPath, [file, String(port), `/bundles/${BUNDLE_NAME}`], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  while (!out.startsWith('ready\n')) {
    if (child.exitCode !== null) throw new Error(`the 304 probe exited (${child.exitCode})`);
    await sleep(20);
  }
  return {
    stop: async () => {
      child.stdin.write('stop\n');
      await exited;
      process.removeListener('exit', kill);
      return JSON.parse(out.slice('ready\n'.length)) as [number, number][];
    },
  };
}

async function heldOf(target: Target): Promise<number> {
  if ('opsPort' in target)
    return metricValue(await scrape(target as OpaSyncTarget), 'opa_sync_bundle_long_polls_held');
  return Number((await get(`http://127.0.0.1:${target.port}/held`)).body.toString());
}

export interface PollRun {
  run: number;
  server: string;
  openMs: number;
  openCpuMs: number;
  idleMiB: number;
  /** RSS 1 s after the last poll was held, and 6 s after (once the burst's garbage could be collected). */
  heldMiB: number;
  heldLaterMiB: number;
  firstMs: number;
  medianMs: number;
  p99Ms: number;
  lastMs: number;
  answered: number;
  errors: number;
  fanoutCpuMs: number;
  /** The slowest plain 304 sent during the fan-out (ms). */
  probeMaxMs: number;
}

/** The publish time: opa-sync's 'bundle published' log line, or the bare server's printed line. */
async function publishedAt(target: Target, since: number): Promise<number> {
  for (let i = 0; i < 600; i += 1) {
    for (const line of target.output().split('\n').reverse()) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as { msg?: string; time?: number; published?: number };
      const at = entry.published ?? (entry.msg === 'bundle published' ? entry.time : undefined);
      if (at !== undefined && at >= since) return at;
    }
    await sleep(50);
  }
  throw new Error(`${target.name}: no publish seen`);
}

const ms = (cpuS: number): number => Math.round(cpuS * 1000);

async function runOnce(
  ctx: Context,
  target: Target,
  publish: () => void,
  polls: number,
  run: number,
): Promise<PollRun> {
  const etag = (await get(target.url)).headers.etag as string;
  const idleMiB = memory(target.pid)?.rssMiB ?? NaN;
  const client = new PollClient(target.port, etag);
  const started = Date.now();
  const cpu0 = cpuSeconds(target.pid) ?? NaN;
  await client.open(polls);
  while ((await heldOf(target)) < polls - client.errors) {
    if (Date.now() - started > 120_000) throw new Error(`${target.name}: polls not all held after 120 s`);
    // Not more often: a scrape of opa-sync's /metrics costs ~1 ms, and this would count it.
    await sleep(100);
  }
  const openMs = Date.now() - started;
  const openCpuMs = ms((cpuSeconds(target.pid) ?? NaN) - cpu0);
  await sleep(1000);
  const heldMiB = memory(target.pid)?.rssMiB ?? NaN;
  await sleep(5000);
  const heldLaterMiB = memory(target.pid)?.rssMiB ?? NaN;
  const probe = await startProbe(ctx.env.dir, target.port);
  await sleep(500);
  const cpu1 = cpuSeconds(target.pid) ?? NaN;
  const before = Date.now();
  publish();
  await client.answers(polls - client.errors, 60_000);
  const fanoutCpuMs = ms((cpuSeconds(target.pid) ?? NaN) - cpu1);
  await sleep(300);
  const samples = await probe.stop();
  const at = await publishedAt(target, before - 5);
  const times = client.polls.filter((p) => p.status === 200).map((p) => p.answeredAt - at);
  const last = times.length ? Math.max(...times) : NaN;
  // Probes waiting at any time during the fan-out: answered after the publish, sent before the last 200
  // (a probe sent before the publish and held up by a fan-out that blocks the loop counts too).
  const inWindow = samples.filter(([t, d]) => t >= at && t - d <= at + last).map(([, d]) => d);
  client.close();
  await sleep(1000);
  const r: PollRun = {
    run,
    server: target.name,
    openMs,
    openCpuMs,
    idleMiB,
    heldMiB,
    heldLaterMiB,
    firstMs: times.length ? Math.min(...times) : NaN,
    medianMs: percentile(times, 50),
    p99Ms: percentile(times, 99),
    lastMs: last,
    answered: times.length,
    errors: client.errors,
    fanoutCpuMs,
    probeMaxMs: inWindow.length ? Math.max(...inWindow) : NaN,
  };
  ctx.log(
    `polls ${polls} run ${run} ${target.name}: open ${r.openMs} ms, RSS idle ${fmt(r.idleMiB, 0)} held ${fmt(r.heldMiB, 0)} (6 s later ${fmt(r.heldLaterMiB, 0)}) MiB; ` +
      `200s after publish median ${r.medianMs} last ${r.lastMs} ms (${r.answered}), probe 304 max ${r.probeMaxMs} ms`,
  );
  return r;
}

const FIELDS = [
  'openMs',
  'openCpuMs',
  'idleMiB',
  'heldMiB',
  'heldLaterMiB',
  'firstMs',
  'medianMs',
  'p99Ms',
  'lastMs',
  'answered',
  'fanoutCpuMs',
  'probeMaxMs',
] as const;

/** min/median/max per server and field, and opa-sync ÷ node:http paired per run. */
export function summarizePolls(runs: readonly PollRun[]): Record<string, Stat> {
  const s: Record<string, Stat> = {};
  const series = (server: string, f: (typeof FIELDS)[number]): number[] =>
    runs.filter((r) => r.server === server).map((r) => r[f]);
  for (const f of FIELDS) {
    s[`opa-sync.${f}`] = stat(series('opa-sync', f));
    s[`node:http.${f}`] = stat(series('node:http', f));
    s[`ratio.${f}`] = stat(pairedRatios(series('opa-sync', f), series('node:http', f)));
  }
  // RSS while holding: the larger of the two samples of each run (the goal's figure).
  const holding = (server: string): number[] =>
    runs.filter((r) => r.server === server).map((r) => Math.max(r.heldMiB, r.heldLaterMiB));
  s['opa-sync.holdingMiB'] = stat(holding('opa-sync'));
  s['node:http.holdingMiB'] = stat(holding('node:http'));
  return s;
}

/** The issue's goals for long polls: RSS and open time at 10,000, every answer ≤ 1 s after the publish. */
export function pollGoals(polls: number, s: Record<string, Stat>, nodeArgs: readonly string[]): Goal[] {
  const m = (k: string): number => s[k]?.median ?? NaN;
  const n = fmt(polls, 0);
  const flags = nodeArgs.length ? ` (node ${nodeArgs.join(' ')})` : '';
  const goals: Goal[] = [
    {
      measure: `${n} long polls: last 200 after a publish (ms)${flags}`,
      peer: `node:http ${fmt(m('node:http.lastMs'), 0)}`,
      ours: fmt(m('opa-sync.lastMs'), 0),
      goal: '≤ 1,000 ms',
      ...verdictOf(m('opa-sync.lastMs'), 1000),
    },
  ];
  if (polls < 10_000) return goals;
  return [
    {
      measure: `${n} held long polls: RSS (MiB, the larger of 1 s / 6 s after all held)${flags}`,
      peer: `node:http ${fmt(m('node:http.holdingMiB'), 0)}`,
      ours: fmt(m('opa-sync.holdingMiB'), 0),
      goal: '≤ 150 MiB',
      ...verdictOf(m('opa-sync.holdingMiB'), 150),
    },
    {
      measure: `${n} long polls: open them all until held (ms)${flags}`,
      peer: `node:http ${fmt(m('node:http.openMs'), 0)}`,
      ours: fmt(m('opa-sync.openMs'), 0),
      goal: '≤ 5,000 ms',
      ...verdictOf(m('opa-sync.openMs'), 5000),
    },
    ...goals,
  ];
}

export const polls: Scenario = {
  id: 'polls',
  title: 'Long polls: 1,000 and 10,000 held, RSS, open time, answers after a publish (vs bare node:http)',
  defaults: '--size 1000,10000 --runs 3 [--node-args FLAGS]',
  async run(ctx) {
    const sizes = ctx.options.sizes ?? [1000, 10_000];
    const runs = ctx.options.runs ?? 3;
    const nodeArgs = ctx.options.nodeArgs ?? [];
    const points = [];
    for (const size of sizes) {
      const machine = ctx.machine();
      const dir = path.join(ctx.env.dir, `polls-${size}`);
      writePoliciesFolder(dir, 0);
      // The bare server serves the bytes of opa-sync's first bundle.
      const first = await startOpaSync(ctx.env, { dir, nodeArgs });
      const bundle = (await get(first.url)).body;
      await first.stop();
      let revision = 1;
      const results: PollRun[] = [];
      for (let run = 1; run <= runs; run++) {
        // A fresh server for every run: once a process has held 10,000 polls, its RSS does not fall
        // back (glibc and V8 keep the pages), so a second round would measure the first one's leftovers.
        for (const name of inTurn(['opa-sync', 'node:http'], run)) {
          const t =
            name === 'opa-sync'
              ? await startOpaSync(ctx.env, { dir, nodeArgs })
              : await startBare(ctx.env, {
                  prefix: path.join(ctx.env.dir, `bare-${size}-${run}`),
                  file: bundle,
                });
          const publish = (): void => {
            if (name === 'opa-sync')
              writeFileSync(path.join(dir, 'bench.rego'), policyText(`r${++revision}`));
            else t.input('publish');
          };
          results.push(await runOnce(ctx, t, publish, size, run));
          await t.stop();
        }
      }
      const summary = summarizePolls(results);
      points.push({
        key: `${size}${nodeArgs.length ? ` node ${nodeArgs.join(' ')}` : ''}`,
        command: ctx.command,
        machine,
        runs: results,
        summary: { ...summary, polls: size, nodeArgs },
        goals: pollGoals(size, summary, nodeArgs),
        notes: [],
      });
    }
    return points;
  },
  render(file: ScenarioFile) {
    const out = [
      '## Long polls: many held, then one publish',
      '',
      'opa-sync (folder mode, one small policy) against a bare node:http server (each poll held with a',
      'timer and a `close` listener in one Set, all answered when told to publish). The client is raw',
      'sockets with a prebuilt request, so that it costs little of the 2 cores it shares with the server:',
      'N keep-alive connections at once, each `GET` with `If-None-Match` of the current ETag and',
      '`Prefer: modes=snapshot,delta;wait=60`. "Open" is until the server holds all N (opa-sync’s',
      '`opa_sync_bundle_long_polls_held`, the bare server’s count). Then a publish: opa-sync’s policy file',
      'is edited (time 0 = its `bundle published` log line), the bare server gets a line on stdin; each 200',
      'is timed from then until its last byte arrived. A probe process asks for plain 304s on one',
      'keep-alive connection meanwhile (every 2 ms); the slowest one waiting at any time during the fan-out',
      '(from the publish to the last 200) is shown.',
      'Each run starts both servers afresh (once a process has held 10,000 polls its RSS does not fall back,',
      'so a second round would measure the first one’s leftovers); they take turns within each run (odd',
      'runs opa-sync first), and ratios opa-sync ÷ node:http are paired per run.',
      '',
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat> & { polls: number };
      const row = (label: string, f: string, digits = 0): string =>
        `| ${label} | ${fmtStat(s[`opa-sync.${f}`], digits)} | ${fmtStat(s[`node:http.${f}`], digits)} | ${fmtRatio(s[`ratio.${f}`])} |`;
      const flags = p.key.includes(' node ')
        ? ` — opa-sync under \`${p.key.slice(p.key.indexOf('node '))}\``
        : '';
      out.push(
        `### ${fmt(s.polls, 0)} long polls${flags}`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length / 2} runs each.`,
        '',
        '| measure (min / **median** / max) | opa-sync | node:http | opa-sync ÷ node:http |',
        '| --- | --- | --- | --- |',
        row(`open ${fmt(s.polls, 0)} until all held (ms)`, 'openMs'),
        row('server CPU while opening (ms)', 'openCpuMs'),
        row('RSS before opening (a fresh server, MiB)', 'idleMiB'),
        row('RSS holding, 1 s after the last was held (MiB)', 'heldMiB'),
        row('RSS holding, 6 s after (MiB)', 'heldLaterMiB'),
        row('first 200 after the publish (ms)', 'firstMs'),
        row('median 200 after the publish (ms)', 'medianMs'),
        row('p99 200 after the publish (ms)', 'p99Ms'),
        row('last 200 after the publish (ms)', 'lastMs'),
        row('200s received', 'answered'),
        row('server CPU for the fan-out (ms)', 'fanoutCpuMs'),
        row('slowest plain 304 waiting during the fan-out (ms)', 'probeMaxMs'),
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
