// serve: bundle-serving throughput, opa-sync against nginx and a bare node:http server. wrk (1 thread,
// 50 keep-alive connections) asks for the bundle with If-None-Match (304s) and without (200s of a ~1 MB
// bundle); the three servers take turns within each run (odd runs opa-sync first, even runs last), and
// ratios are paired per run. The server's CPU per request comes from /proc. `--profile DIR`: afterwards, one
// more 304 run against opa-sync and the bare server under `node --cpu-prof`, summarised.
import { mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { summarize, summaryTables, type ProfileSummary } from '../cpu-profile.js';
import { machineLine } from '../machine.js';
import { ensureDebianBinary } from '../packages.js';
import { goalsTable, verdictAtLeast, verdictOf, type Goal, type ScenarioFile } from '../report.js';
import type { Context, Scenario } from '../scenario.js';
import {
  get,
  inTurn,
  startBare,
  startNginx,
  startOpaSync,
  writePoliciesFolder,
  type OpaSyncTarget,
  type Target,
} from '../serving.js';
import { fmt, fmtRatio, fmtStat, pairedRatios, stat, type Stat } from '../stats.js';
import { ensureWrk, load } from '../wrk.js';

const CONNECTIONS = 50;
const DATA_BYTES = 1_040_000;
const PEERS = ['nginx', 'node:http'] as const;

interface Sample {
  rps: number;
  p99Ms: number;
  cpuUs: number;
}

export interface ServeRun {
  run: number;
  /** By server name: opa-sync, nginx, node:http. */
  r304: Record<string, Sample>;
  r200: Record<string, Sample>;
}

interface ProfiledServer {
  rps: number;
  cpuUs: number;
  file: string;
  summary: ProfileSummary;
}

async function etagOf(target: Target): Promise<string> {
  const res = await get(target.url);
  const etag = res.headers.etag;
  if (res.status !== 200 || etag === undefined) throw new Error(`${target.name}: no 200 with an ETag`);
  const check = await get(target.url, { 'If-None-Match': etag });
  if (check.status !== 304) throw new Error(`${target.name}: If-None-Match gave ${check.status}, not 304`);
  return etag;
}

async function sample(wrkBin: string, t: Target, seconds: number, etag?: string): Promise<Sample> {
  const headers: Record<string, string> = etag === undefined ? {} : { 'If-None-Match': etag };
  const r = await load(wrkBin, t, { connections: CONNECTIONS, seconds, headers });
  return { rps: r.rps, p99Ms: r.p99Ms, cpuUs: r.cpuUs };
}

async function profile(
  ctx: Context,
  wrkBin: string,
  dir: string,
  bundle: Buffer,
  seconds: number,
): Promise<Record<string, ProfiledServer>> {
  const out: Record<string, ProfiledServer> = {};
  for (const which of ['opa-sync', 'node:http'] as const) {
    const profDir = path.join(ctx.env.dir, 'profiles', which.replace(':', '-'));
    mkdirSync(profDir, { recursive: true });
    const nodeArgs = [...(ctx.options.nodeArgs ?? []), '--cpu-prof', `--cpu-prof-dir=${profDir}`];
    const target =
      which === 'opa-sync'
        ? await startOpaSync(ctx.env, { dir, nodeArgs })
        : await startBare(ctx.env, { prefix: path.join(ctx.env.dir, 'bare-prof'), file: bundle, nodeArgs });
    const etag = await etagOf(target);
    await sample(wrkBin, target, 3, etag); // warm-up, in the profile too (as in the measured runs)
    const r = await sample(wrkBin, target, seconds, etag);
    await target.stop();
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error(`${which}: no .cpuprofile written in ${profDir}`);
    out[which] = { rps: r.rps, cpuUs: r.cpuUs, file, summary: summarize(path.join(profDir, file), 15) };
    ctx.log(
      `serve --profile: ${which} ${fmt(r.rps, 0)} 304s/s, ${fmt(r.cpuUs)} µs CPU each under --cpu-prof`,
    );
  }
  return out;
}

/** The issue's goals for serving, from the medians of the paired ratios. */
export function serveGoals(s: Record<string, Stat>, nodeArgs: readonly string[] = []): Goal[] {
  const m = (k: string): number => s[k]?.median ?? NaN;
  const flags = nodeArgs.length ? ` (node ${nodeArgs.join(' ')})` : '';
  return [
    {
      measure: `304s/s, keep-alive, 50 connections (wrk, 1 thread)${flags}`,
      peer: `nginx ${fmt(m('nginx.r304.rps'), 0)}; node:http ${fmt(m('node:http.r304.rps'), 0)}`,
      ours: `${fmt(m('opa-sync.r304.rps'), 0)} (${fmt(m('ratio.nginx.r304.rps'), 2)}× nginx)`,
      goal: '≥ 0.6× nginx',
      ...verdictAtLeast(m('ratio.nginx.r304.rps'), 0.6),
    },
    {
      measure: `304 p99 latency (ms), same runs${flags}`,
      peer: `nginx ${fmt(m('nginx.r304.p99Ms'), 2)}`,
      ours: `${fmt(m('opa-sync.r304.p99Ms'), 2)} (${fmt(m('ratio.nginx.r304.p99Ms'), 2)}× nginx)`,
      goal: '≤ 2× nginx',
      ...verdictOf(m('ratio.nginx.r304.p99Ms'), 2),
    },
    {
      measure: `server CPU per 304 (µs)${flags}`,
      peer: `nginx ${fmt(m('nginx.r304.cpuUs'))}; node:http ${fmt(m('node:http.r304.cpuUs'))}`,
      ours: fmt(m('opa-sync.r304.cpuUs')),
      goal: '≤ 40 µs',
      ...verdictOf(m('opa-sync.r304.cpuUs'), 40),
    },
    {
      measure: `200s/s of a 1 MB bundle${flags}`,
      peer: `nginx ${fmt(m('nginx.r200.rps'), 0)}`,
      ours: `${fmt(m('opa-sync.r200.rps'), 0)} (${fmt(m('ratio.nginx.r200.rps'), 2)}× nginx)`,
      goal: 'keep ≥ 0.8× nginx',
      ...verdictAtLeast(m('ratio.nginx.r200.rps'), 0.8),
    },
  ];
}

/** min/median/max of every figure of every server, and of the paired ratios opa-sync ÷ peer. */
export function summarizeServe(runs: readonly ServeRun[]): Record<string, Stat> {
  const s: Record<string, Stat> = {};
  const series = (kind: 'r304' | 'r200', name: string, key: keyof Sample): number[] =>
    runs.map((r) => r[kind][name]?.[key] ?? NaN);
  for (const kind of ['r304', 'r200'] as const) {
    for (const key of ['rps', 'p99Ms', 'cpuUs'] as const) {
      for (const name of ['opa-sync', ...PEERS]) s[`${name}.${kind}.${key}`] = stat(series(kind, name, key));
      for (const peer of PEERS)
        s[`ratio.${peer}.${kind}.${key}`] = stat(
          pairedRatios(series(kind, 'opa-sync', key), series(kind, peer, key)),
        );
    }
  }
  return s;
}

export const serve: Scenario = {
  id: 'serve',
  title: 'Serving: 304s/s and 200s/s of a 1 MB bundle, opa-sync vs nginx and a bare node:http (wrk)',
  defaults: '--runs 3 --duration 10 [--node-args FLAGS] [--profile DIR]',
  async run(ctx) {
    const runs = ctx.options.runs ?? 3;
    const seconds = ctx.options.durationS ?? 10;
    const nodeArgs = ctx.options.nodeArgs ?? [];
    const wrkBin = ensureWrk(ctx.log);
    ensureDebianBinary('/usr/sbin/nginx', 'nginx', ctx.log);
    const machine = ctx.machine();
    const dir = path.join(ctx.env.dir, 'serve-policies');
    writePoliciesFolder(dir, DATA_BYTES);
    const opaSync: OpaSyncTarget = await startOpaSync(ctx.env, { dir, nodeArgs });
    const bundle = (await get(opaSync.url)).body;
    const targets: Target[] = [
      opaSync,
      await startNginx(ctx.env, { prefix: path.join(ctx.env.dir, 'nginx'), file: bundle }),
      await startBare(ctx.env, { prefix: path.join(ctx.env.dir, 'bare'), file: bundle }),
    ];
    const etags = new Map<Target, string>();
    for (const t of targets) etags.set(t, await etagOf(t));
    // Warm-up (JIT, caches), not counted.
    for (const t of targets) {
      await sample(wrkBin, t, 3, etags.get(t));
      await sample(wrkBin, t, 2);
    }
    const results: ServeRun[] = [];
    for (let run = 1; run <= runs; run++) {
      const r: ServeRun = { run, r304: {}, r200: {} };
      for (const t of inTurn(targets, run)) r.r304[t.name] = await sample(wrkBin, t, seconds, etags.get(t));
      for (const t of inTurn(targets, run)) r.r200[t.name] = await sample(wrkBin, t, seconds);
      results.push(r);
      ctx.log(
        `serve run ${run}/${runs}: ` +
          targets
            .map(
              (t) =>
                `${t.name} 304 ${fmt(r.r304[t.name]?.rps, 0)}/s p99 ${fmt(r.r304[t.name]?.p99Ms, 2)} ms ${fmt(r.r304[t.name]?.cpuUs)} µs; 200 ${fmt(r.r200[t.name]?.rps, 0)}/s`,
            )
            .join(' | '),
      );
    }
    for (const t of targets) await t.stop();
    const summary: Record<string, unknown> = {
      ...summarizeServe(results),
      bundleBytes: bundle.length,
      seconds,
      nodeArgs,
    };
    if (ctx.options.profile) summary.profile = await profile(ctx, wrkBin, dir, bundle, seconds);
    return [
      {
        key: nodeArgs.length ? `node ${nodeArgs.join(' ')}` : 'default',
        command: ctx.command,
        machine,
        runs: results,
        summary,
        goals: serveGoals(summary as Record<string, Stat>, nodeArgs),
        notes: [],
      },
    ];
  },
  render(file: ScenarioFile) {
    const out = [
      '## Serving: 304s and 200s against nginx and a bare node:http',
      '',
      'opa-sync (`node dist/main.js --policies-dir=… --bundle-addr=…`, folder mode: one policy and a data.json',
      'giving a ~1 MB bundle) against nginx 1 worker (Debian’s package: the same bytes as a static file,',
      'its own ETag, `sendfile`) and a bare node:http server (an exact If-None-Match check, a 304 or the',
      'cached bytes: the least a Node server does). wrk `-t1 -c50` with keep-alive, 10 s per measure after',
      'a warm-up; the three take turns within each run (odd runs opa-sync first, even runs last). CPU per',
      'request = the server’s utime + stime over the wrk run ÷ the requests answered. Ratios are opa-sync ÷',
      'the peer of the same run.',
      '',
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat> & {
        bundleBytes: number;
        profile?: Record<string, ProfiledServer>;
      };
      const cells = (kind: string, key: string, digits: number): string =>
        ['opa-sync', ...PEERS].map((n) => fmtStat(s[`${n}.${kind}.${key}`], digits)).join(' | ');
      const ratios = (kind: string, key: string): string =>
        PEERS.map((n) => fmtRatio(s[`ratio.${n}.${kind}.${key}`])).join(' | ');
      out.push(
        `### ${p.key === 'default' ? 'opa-sync as shipped' : `opa-sync under \`${p.key}\``}`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length} runs; bundle ${fmt(s.bundleBytes / 1e6, 2)} MB.`,
        '',
        '| measure (min / **median** / max) | opa-sync | nginx | node:http |',
        '| --- | --- | --- | --- |',
        `| 304s/s | ${cells('r304', 'rps', 0)} |`,
        `| 304 p99 (ms) | ${cells('r304', 'p99Ms', 2)} |`,
        `| CPU per 304 (µs) | ${cells('r304', 'cpuUs', 1)} |`,
        `| 200s/s (1 MB) | ${cells('r200', 'rps', 0)} |`,
        `| 200 p99 (ms) | ${cells('r200', 'p99Ms', 1)} |`,
        `| CPU per 200 (µs) | ${cells('r200', 'cpuUs', 0)} |`,
        '',
        '| paired ratio opa-sync ÷ peer (min / **median** / max) | ÷ nginx | ÷ node:http |',
        '| --- | --- | --- |',
        `| 304s/s | ${ratios('r304', 'rps')} |`,
        `| 304 p99 | ${ratios('r304', 'p99Ms')} |`,
        `| CPU per 304 | ${ratios('r304', 'cpuUs')} |`,
        `| 200s/s | ${ratios('r200', 'rps')} |`,
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
      for (const [name, prof] of Object.entries(s.profile ?? {})) {
        out.push(
          `#### ${name} under \`node --cpu-prof\`: ${fmt(prof.rps, 0)} 304s/s, ${fmt(prof.cpuUs)} µs CPU each (/proc)`,
          '',
          ...summaryTables(prof.summary),
          '',
        );
      }
    }
    return out.join('\n');
  },
};
