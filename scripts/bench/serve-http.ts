// Serving throughput, opa-sync against its peers: wrk (1 thread, keep-alive) asking for the bundle
// with If-None-Match (304s) and without (200s of a ~1 MB bundle), against opa-sync's bundle server
// (the built CLI in folder mode), nginx (1 worker, the same bytes as a static file with its ETag) and
// a bare node:http server, taking turns within each run; the server's CPU per request from /proc.
// Ratios are paired per run (opa-sync's figure over the peer's of the same run).
//
//   npx tsx scripts/bench/serve-http.ts [--runs=3] [--seconds=10] [--connections=50]
//     [--data-bytes=1040000] [--opa-sync=dist/main.js] [--node-args='--max-semi-space-size=4']
//     [--with-token] [--profile | --profile-only]
//
// --profile: afterwards, one more 304 run against opa-sync and the bare server under `node --cpu-prof`,
// summarised (where the time goes); --profile-only: only that. Needs `npm run build`, `npm run tools`, wrk and nginx.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  REPO,
  arg,
  flag,
  get,
  measure,
  show,
  startBare,
  startNginx,
  startOpaSync,
  stats,
  writePoliciesFolder,
  type Target,
} from './serve-common.js';
import { printSummary, summarize } from './serve-profile.js';

const runs = Number(arg('runs', '3'));
const seconds = Number(arg('seconds', '10'));
const connections = Number(arg('connections', '50'));
const dataBytes = Number(arg('data-bytes', '1040000'));
const mainJs = path.resolve(arg('opa-sync', path.join(REPO, 'dist', 'main.js')));
// Flags for opa-sync's node, e.g. --node-args=--max-semi-space-size=4 (space-separated).
const nodeArgs = arg('node-args', '')
  .split(' ')
  .filter((a) => a !== '');
// --with-token: opa-sync checks a bearer token on every request (a token file of 3 tokens); every
// server gets the same Authorization header, so that the requests are the same size.
const TOKEN = 'bench-token-0123456789abcdef';
const auth: Record<string, string> = flag('with-token') ? { Authorization: `Bearer ${TOKEN}` } : {};

interface Sample {
  rps: number;
  p99Ms: number;
  cpuUs: number;
}

async function etagOf(target: Target): Promise<string> {
  const res = await get(target.url, auth);
  const etag = res.headers.etag;
  if (res.status !== 200 || etag === undefined) throw new Error(`${target.name}: no 200 with an ETag`);
  const check = await get(target.url, { ...auth, 'If-None-Match': etag });
  if (check.status !== 304) throw new Error(`${target.name}: If-None-Match gave ${check.status}, not 304`);
  return etag;
}

async function run304(target: Target, etag: string, secs: number): Promise<Sample> {
  const r = await measure(target, {
    connections,
    seconds: secs,
    headers: { ...auth, 'If-None-Match': etag },
  });
  if (r.non2xx3xx > 0 || r.errors !== '')
    throw new Error(`${target.name}: ${r.non2xx3xx} bad answers ${r.errors}`);
  return { rps: r.rps, p99Ms: r.p99Ms, cpuUs: r.cpuUsPerRequest };
}

async function run200(target: Target, secs: number): Promise<Sample> {
  const r = await measure(target, { connections, seconds: secs, headers: auth });
  if (r.non2xx3xx > 0 || r.errors !== '')
    throw new Error(`${target.name}: ${r.non2xx3xx} bad answers ${r.errors}`);
  return { rps: r.rps, p99Ms: r.p99Ms, cpuUs: r.cpuUsPerRequest };
}

function ratios(a: readonly Sample[], b: readonly Sample[], key: keyof Sample): number[] {
  return a.map((s, i) => s[key] / (b[i] as Sample)[key]);
}

function opaSyncOptions(work: string): Parameters<typeof startOpaSync>[0] {
  const options = { mainJs, dir: path.join(work, 'policies'), headers: auth };
  if (!flag('with-token')) return options;
  const file = path.join(work, 'tokens');
  writeFileSync(file, `# bench\nother-token-1\n${TOKEN}\nother-token-2\n`);
  return { ...options, args: [`--bundle-token-file=${file}`] };
}

async function profile(work: string, bundle: Buffer): Promise<void> {
  // Kept after the run, so the profiles can be opened in a browser's devtools.
  const kept = mkdtempSync(path.join(tmpdir(), 'opa-sync-serve-profiles-'));
  for (const which of ['opa-sync', 'node:http'] as const) {
    const dir = path.join(kept, which.replace(':', '-'));
    const profArgs = ['--cpu-prof', `--cpu-prof-dir=${dir}`];
    const target =
      which === 'opa-sync'
        ? await startOpaSync({ ...opaSyncOptions(work), nodeArgs: [...nodeArgs, ...profArgs] })
        : await startBare({ prefix: path.join(work, 'bare-prof'), file: bundle, nodeArgs: profArgs });
    const etag = await etagOf(target);
    await run304(target, etag, 3); // warm-up, in the profile too (as in the measured runs)
    const r = await measure(target, { connections, seconds, headers: { ...auth, 'If-None-Match': etag } });
    await target.stop();
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error(`${which}: no .cpuprofile written in ${dir}`);
    console.log(
      `\n${which} under --cpu-prof: ${r.rps.toFixed(0)} 304s/s, ${r.cpuUsPerRequest.toFixed(1)} µs CPU each (/proc)`,
    );
    printSummary(`${which} (${path.join(dir, file)})`, summarize(path.join(dir, file), 20));
  }
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(tmpdir(), 'opa-sync-bench-serve-'));
  const targets: Target[] = [];
  try {
    writePoliciesFolder(path.join(work, 'policies'), dataBytes);
    const opaSync = await startOpaSync({ ...opaSyncOptions(work), nodeArgs });
    targets.push(opaSync);
    const bundle = (await get(opaSync.url, auth)).body;
    targets.push(await startNginx({ prefix: path.join(work, 'nginx'), file: bundle }));
    targets.push(await startBare({ prefix: path.join(work, 'bare'), file: bundle }));
    const etags = await Promise.all(targets.map(etagOf));
    console.log(
      `# serving: ${runs} runs × ${seconds} s, wrk -t1 -c${connections}, bundle ${(bundle.length / 1e6).toFixed(2)} MB; opa-sync ${mainJs} ${nodeArgs.join(' ')}${flag('with-token') ? ' with a token file' : ''}`,
    );
    if (flag('profile-only')) {
      for (const t of targets.splice(0)) await t.stop();
      await profile(work, bundle);
      return;
    }
    // Warm-up (JIT, caches), not counted.
    for (const [i, t] of targets.entries()) {
      await run304(t, etags[i] as string, 3);
      await run200(t, 2);
    }
    const r304: Sample[][] = targets.map(() => []);
    const r200: Sample[][] = targets.map(() => []);
    for (let run = 1; run <= runs; run += 1) {
      for (const [i, t] of targets.entries())
        (r304[i] as Sample[]).push(await run304(t, etags[i] as string, seconds));
      for (const [i, t] of targets.entries()) (r200[i] as Sample[]).push(await run200(t, seconds));
      const line = targets
        .map((t, i) => {
          const a = (r304[i] as Sample[])[run - 1] as Sample;
          const b = (r200[i] as Sample[])[run - 1] as Sample;
          return `${t.name} 304 ${a.rps.toFixed(0)}/s p99 ${a.p99Ms.toFixed(2)} ms ${a.cpuUs.toFixed(1)} µs; 200 ${b.rps.toFixed(0)}/s`;
        })
        .join(' | ');
      console.log(`run ${run}: ${line}`);
    }

    console.log('\n| measure (min / median / max) | ' + targets.map((t) => t.name).join(' | ') + ' |');
    console.log('| --- |' + targets.map(() => ' ---: |').join(''));
    const row = (label: string, pick: (i: number) => number[], unit: string, digits: number): void => {
      console.log(`| ${label} | ${targets.map((_t, i) => show(stats(pick(i)), unit, digits)).join(' | ')} |`);
    };
    row('304s/s', (i) => (r304[i] as Sample[]).map((s) => s.rps), '', 0);
    row('304 p99', (i) => (r304[i] as Sample[]).map((s) => s.p99Ms), ' ms', 2);
    row('CPU per 304', (i) => (r304[i] as Sample[]).map((s) => s.cpuUs), ' µs', 1);
    row('200s/s (bundle)', (i) => (r200[i] as Sample[]).map((s) => s.rps), '', 0);
    row('CPU per 200', (i) => (r200[i] as Sample[]).map((s) => s.cpuUs), ' µs', 1);

    const [o, n, b] = [0, 1, 2].map((i) => ({ r304: r304[i] as Sample[], r200: r200[i] as Sample[] })) as [
      { r304: Sample[]; r200: Sample[] },
      { r304: Sample[]; r200: Sample[] },
      { r304: Sample[]; r200: Sample[] },
    ];
    console.log('\n| paired ratio, opa-sync ÷ peer (min / median / max) | goal | nginx | node:http |');
    console.log('| --- | --- | ---: | ---: |');
    const ratio = (label: string, goal: string, key: keyof Sample, which: 'r304' | 'r200'): void => {
      console.log(
        `| ${label} | ${goal} | ${show(stats(ratios(o[which], n[which], key)), '×', 2)} | ${show(stats(ratios(o[which], b[which], key)), '×', 2)} |`,
      );
    };
    ratio('304s/s', '≥ 0.6× nginx', 'rps', 'r304');
    ratio('304 p99', '≤ 2× nginx', 'p99Ms', 'r304');
    ratio('CPU per 304', '≤ 40 µs', 'cpuUs', 'r304');
    ratio('200s/s', '≥ 0.8× nginx', 'rps', 'r200');

    for (const t of targets.splice(0)) await t.stop();
    if (flag('profile') || flag('profile-only')) await profile(work, bundle);
  } finally {
    for (const t of targets) await t.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
