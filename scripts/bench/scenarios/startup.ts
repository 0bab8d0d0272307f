// Start-up: `node dist/main.js --version` (wall time and peak RSS, paired with a bare `node -e ''`,
// the floor of any Node program), and folder mode (spawn → /ready, and idle RSS 3 s after ready).
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import getPort from 'get-port';
import { requireTool } from '../../tools.js';
import { MAIN_JS, REPO, sleep } from '../env.js';
import { machineLine } from '../machine.js';
import { ensureDebianBinary } from '../packages.js';
import { memory } from '../proc.js';
import { goalsTable, type Goal, type Point, type ScenarioFile } from '../report.js';
import { fmt, fmtStat, pairedRatios, stat, type Stat } from '../stats.js';
import { ISSUE_12_OPA_SYNC, KUBE_MGMT, type Context, type Scenario } from '../scenario.js';

const TIME = '/usr/bin/time';

/** Runs a command under GNU time: wall ms (measured here) and peak RSS in MiB (time's %M). */
async function timed(dir: string, n: number, args: string[]): Promise<{ ms: number; maxRssMiB: number }> {
  const out = path.join(dir, `time-${n}.txt`);
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(TIME, ['-f', '%M', '-o', out, ...args], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', resolve);
  });
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`${args.join(' ')} exited with ${String(code)}`);
  const kib = Number(readFileSync(out, 'utf8').trim().split('\n').pop());
  return { ms, maxRssMiB: kib / 1024 };
}

interface VersionRun {
  run: number;
  opaSyncMs: number;
  opaSyncMaxRssMiB: number;
  nodeMs: number;
  nodeMaxRssMiB: number;
}

interface FolderRun {
  run: number;
  readyMs: number;
  rssMiB: number;
  hwmMiB: number;
}

async function versionPoint(ctx: Context, runs: number): Promise<Point> {
  const machine = ctx.machine();
  const results: VersionRun[] = [];
  let n = 0;
  for (let i = 0; i < runs; i++) {
    const measure = async (which: 'opa-sync' | 'node'): Promise<{ ms: number; maxRssMiB: number }> =>
      timed(
        ctx.env.dir,
        ++n,
        which === 'opa-sync' ? [process.execPath, MAIN_JS, '--version'] : [process.execPath, '-e', ''],
      );
    const order = i % 2 === 0 ? (['opa-sync', 'node'] as const) : (['node', 'opa-sync'] as const);
    const got: Record<string, { ms: number; maxRssMiB: number }> = {};
    for (const w of order) got[w] = await measure(w);
    const tool = got['opa-sync'] as { ms: number; maxRssMiB: number };
    const node = got.node as { ms: number; maxRssMiB: number };
    results.push({
      run: i + 1,
      opaSyncMs: tool.ms,
      opaSyncMaxRssMiB: tool.maxRssMiB,
      nodeMs: node.ms,
      nodeMaxRssMiB: node.maxRssMiB,
    });
  }
  const s: Record<string, Stat> = {
    opaSyncMs: stat(results.map((r) => r.opaSyncMs)),
    opaSyncMaxRssMiB: stat(results.map((r) => r.opaSyncMaxRssMiB)),
    nodeMs: stat(results.map((r) => r.nodeMs)),
    nodeMaxRssMiB: stat(results.map((r) => r.nodeMaxRssMiB)),
    ratio: stat(
      pairedRatios(
        results.map((r) => r.opaSyncMs),
        results.map((r) => r.nodeMs),
      ),
    ),
  };
  ctx.log(
    `startup --version: ${fmt(s.opaSyncMs?.median)} ms, ${fmt(s.opaSyncMaxRssMiB?.median)} MiB (node -e '': ${fmt(s.nodeMs?.median)} ms)`,
  );
  const goals: Goal[] = [
    {
      measure: '`--version`: wall time (ms, median) / peak RSS (MiB) — no goal of its own, it bounds P1',
      peer: `${fmt(KUBE_MGMT.versionS * 1000)} / ${fmt(KUBE_MGMT.versionMiB)}`,
      ours: `${fmt(s.opaSyncMs?.median)} / ${fmt(s.opaSyncMaxRssMiB?.median)}`,
      goal: '–',
      verdict: 'n/a',
      detail: 'information',
    },
  ];
  return { key: 'version', command: ctx.command, machine, runs: results, summary: s, goals, notes: [] };
}

async function folderPoint(ctx: Context, runs: number): Promise<Point> {
  const machine = ctx.machine();
  const opaBin = requireTool('opa');
  const results: FolderRun[] = [];
  for (let i = 0; i < runs; i++) {
    const dir = path.join(ctx.env.dir, `folder-${i}`);
    mkdirSync(dir, { recursive: true });
    cpSync(path.join(REPO, 'policies'), path.join(dir, 'policies'), { recursive: true });
    const port = await getPort({ host: '127.0.0.1' });
    const sync = await ctx.env.opaSync(
      [
        `--policies-dir=${path.join(dir, 'policies')}`,
        `--bundle-addr=127.0.0.1:${port}`,
        `--bundles-dir=${path.join(dir, 'bundles')}`,
        `--opa-bin=${opaBin}`,
      ],
      dir,
    );
    try {
      const readyAt = await sync.waitReady();
      await sleep(3000);
      const mem = memory(sync.process.pid);
      results.push({
        run: i + 1,
        readyMs: readyAt - sync.spawnedAt,
        rssMiB: mem?.rssMiB ?? NaN,
        hwmMiB: mem?.hwmMiB ?? NaN,
      });
    } finally {
      await sync.stop();
    }
  }
  const s: Record<string, Stat> = {
    readyMs: stat(results.map((r) => r.readyMs)),
    rssMiB: stat(results.map((r) => r.rssMiB)),
    hwmMiB: stat(results.map((r) => r.hwmMiB)),
  };
  ctx.log(
    `startup folder mode: ready in ${fmt(s.readyMs?.median)} ms, idle RSS ${fmt(s.rssMiB?.median)} MiB`,
  );
  return { key: 'folder', command: ctx.command, machine, runs: results, summary: s, goals: [], notes: [] };
}

export const startup: Scenario = {
  id: 'startup',
  title: 'Start-up: --version, and folder mode',
  defaults: '--runs 10 for --version (5 for folder mode)',
  async run(ctx) {
    ensureDebianBinary(TIME, 'time', ctx.log);
    const runs = ctx.options.runs ?? 10;
    return [await versionPoint(ctx, runs), await folderPoint(ctx, Math.max(3, Math.ceil(runs / 2)))];
  },
  render(file: ScenarioFile) {
    const out = ['## Start-up', ''];
    const v = file.points.version;
    if (v) {
      const s = v.summary as Record<string, Stat>;
      out.push(
        '### `node dist/main.js --version`',
        '',
        `\`${v.command}\` — ${machineLine(v.machine)}. ${v.runs.length} runs, alternating with the floor \`node -e ''\`. Wall time measured by the bench from spawn to exit; peak RSS by GNU time (\`%M\`).`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| opa-sync --version (ms) | ${fmtStat(s.opaSyncMs)} |`,
        `| opa-sync --version peak RSS (MiB) | ${fmtStat(s.opaSyncMaxRssMiB)} |`,
        `| floor: node -e '' (ms) | ${fmtStat(s.nodeMs)} |`,
        `| floor: node -e '' peak RSS (MiB) | ${fmtStat(s.nodeMaxRssMiB)} |`,
        `| **ratio opa-sync / node, paired per run** | ${fmtStat(s.ratio, 2)} |`,
        '',
        `kube-mgmt 11.0.7: ${fmt(KUBE_MGMT.versionS * 1000)} ms, ${fmt(KUBE_MGMT.versionMiB)} MiB. Issue 12 measured opa-sync at ${fmt(ISSUE_12_OPA_SYNC.versionS * 1000)} ms, ${fmt(ISSUE_12_OPA_SYNC.versionMiB)} MiB.`,
        '',
      );
      const t = goalsTable(v.goals);
      if (t) out.push(t, '');
    }
    const f = file.points.folder;
    if (f) {
      const s = f.summary as Record<string, Stat>;
      out.push(
        '### Folder mode',
        '',
        `\`${f.command}\` — ${machineLine(f.machine)}. ${f.runs.length} runs of \`node dist/main.js --policies-dir=<copy of policies/> --bundle-addr=127.0.0.1:… --bundles-dir=… --opa-bin=… --health-endpoint=127.0.0.1:…\` (no cluster, no OPA to push to; the bundle is validated with the real \`opa\`).`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| spawn → /ready (ms) | ${fmtStat(f.summary.readyMs as Stat)} |`,
        `| idle RSS 3 s after ready (MiB) | ${fmtStat(s.rssMiB)} |`,
        `| peak RSS, VmHWM (MiB) | ${fmtStat(s.hwmMiB)} |`,
        '',
      );
    }
    return out.join('\n');
  },
};
