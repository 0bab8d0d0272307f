// Many held long polls, opa-sync against a bare node:http server, taking turns within each run: open
// N keep-alive connections to 127.0.0.1 (all at once, as a fleet does after a restart of its server),
// each a GET with If-None-Match of the current ETag and `Prefer: modes=snapshot,delta;wait=60`; time
// until the server holds all of them; the server's RSS idle and holding them; then publish a new bundle
// (opa-sync: edit the policy file, publish time from its 'bundle published' log line; bare: a line on
// its stdin) and time every 200 from the publish. Meanwhile a probe process asks for plain 304s in a
// loop, so the table shows how long the fan-out kept them waiting.
//
//   npx tsx scripts/bench/serve-long-polls.ts [--runs=3] [--polls=10000] [--data-bytes=0]
//     [--opa-sync=dist/main.js] [--node-args='--max-semi-space-size=4']
//
// The client is raw sockets with a prebuilt request, so that it costs little of the 2 cores it shares
// with the server. Each side needs a file descriptor per connection (ulimit -n ≥ polls + a few hundred).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PollClient } from './serve-poll-client.js';
import {
  BUNDLE_NAME,
  CLOCK_TICKS_PER_SECOND,
  REPO,
  arg,
  cpuTicks,
  get,
  policyText,
  rssMb,
  show,
  sleep,
  startBare,
  startOpaSync,
  stats,
  writePoliciesFolder,
  type Target,
} from './serve-common.js';

const runs = Number(arg('runs', '3'));
const polls = Number(arg('polls', '10000'));
const dataBytes = Number(arg('data-bytes', '0'));
const mainJs = path.resolve(arg('opa-sync', path.join(REPO, 'dist', 'main.js')));
// Flags for opa-sync's node, e.g. --node-args=--max-semi-space-size=4 (space-separated).
const nodeArgs = arg('node-args', '')
  .split(' ')
  .filter((a) => a !== '');

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
process.stdin.on('data', () => { process.stdout.write(JSON.stringify(samples)); process.exit(0); });
`;

async function startProbe(dir: string, port: number): Promise<{ stop(): Promise<[number, number][]> }> {
  const file = path.join(dir, 'probe.mjs');
  writeFileSync(file, PROBE);
  const child = spawn(process.execPath, [file, String(port), `/bundles/${BUNDLE_NAME}`], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await sleep(300);
  return {
    stop: async () => {
      child.stdin.write('stop\n');
      await exited;
      return JSON.parse(out) as [number, number][];
    },
  };
}

async function heldOf(target: Target & { opsPort?: number }): Promise<number> {
  if (target.opsPort !== undefined) {
    const text = (await get(`http://127.0.0.1:${target.opsPort}/metrics`)).body.toString();
    return Number(/^opa_sync_bundle_long_polls_held (\d+)/m.exec(text)?.[1] ?? Number.NaN);
  }
  return Number((await get(`http://127.0.0.1:${target.port}/held`)).body.toString());
}

interface RunResult {
  openMs: number;
  idleMb: number;
  heldMb: number;
  heldLaterMb: number;
  openCpuMs: number;
  firstMs: number;
  medianMs: number;
  p99Ms: number;
  lastMs: number;
  answered: number;
  fanoutCpuMs: number;
  probeMaxMs: number;
}

/** Finds the publish time: opa-sync's log line, or the bare server's printed line, after `since`. */
async function publishedAt(target: Target, since: number): Promise<number> {
  for (let i = 0; i < 600; i += 1) {
    for (const line of target.stderr().split('\n').reverse()) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as { msg?: string; time?: number; published?: number };
      const at = entry.published ?? (entry.msg === 'bundle published' ? entry.time : undefined);
      if (at !== undefined && at >= since) return at;
    }
    await sleep(50);
  }
  throw new Error(`${target.name}: no publish seen`);
}

async function runOnce(
  target: Target & { opsPort?: number },
  publish: () => void,
  work: string,
): Promise<RunResult> {
  const etag = (await get(target.url)).headers.etag as string;
  const idleMb = rssMb(target.pid);
  const client = new PollClient(target.port, etag);
  const started = Date.now();
  const cpu0 = cpuTicks(target.pid);
  await client.open(polls);
  while ((await heldOf(target)) < polls - client.errors) {
    if (Date.now() - started > 120_000) throw new Error(`${target.name}: polls not all held after 120 s`);
    // Not more often: a scrape of opa-sync's /metrics costs ~1 ms, and this would count it.
    await sleep(100);
  }
  const openMs = Date.now() - started;
  const openCpuMs = ((cpuTicks(target.pid) - cpu0) * 1000) / CLOCK_TICKS_PER_SECOND;
  await sleep(1000);
  const heldMb = rssMb(target.pid);
  // Once the burst's garbage had time to be collected (V8 gives memory back when the process is idle).
  await sleep(5000);
  const heldLaterMb = rssMb(target.pid);
  const probe = await startProbe(work, target.port);
  await sleep(500);
  const cpu1 = cpuTicks(target.pid);
  const before = Date.now();
  publish();
  await client.answers(polls - client.errors, 60_000);
  const fanoutCpuMs = ((cpuTicks(target.pid) - cpu1) * 1000) / CLOCK_TICKS_PER_SECOND;
  await sleep(300);
  const samples = await probe.stop();
  const at = await publishedAt(target, before - 5);
  const times = client.polls.filter((p) => p.status === 200).map((p) => p.answeredAt - at);
  const last = Math.max(...times);
  // Probes sent during the fan-out (not during the rebuild before it, which is not the server's).
  const inWindow = samples.filter(([t, ms]) => t - ms >= at && t - ms <= at + last).map(([, ms]) => ms);
  const sorted = [...times].sort((a, b) => a - b);
  client.close();
  await sleep(1000);
  return {
    openMs,
    idleMb,
    heldMb,
    heldLaterMb,
    openCpuMs,
    firstMs: sorted[0] ?? Number.NaN,
    medianMs: sorted[Math.floor(sorted.length / 2)] ?? Number.NaN,
    p99Ms: sorted[Math.floor(sorted.length * 0.99)] ?? Number.NaN,
    lastMs: last,
    answered: times.length,
    fanoutCpuMs,
    probeMaxMs: inWindow.length === 0 ? Number.NaN : Math.max(...inWindow),
  };
}

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(tmpdir(), 'opa-sync-bench-polls-'));
  const targets: Target[] = [];
  try {
    const dir = path.join(work, 'policies');
    writePoliciesFolder(dir, dataBytes);
    const opaSync = await startOpaSync({ mainJs, dir, nodeArgs });
    targets.push(opaSync);
    const bundle = (await get(opaSync.url)).body;
    const bare = await startBare({ prefix: path.join(work, 'bare'), file: bundle });
    targets.push(bare);
    console.log(
      `# long polls: ${runs} runs × ${polls} polls, bundle ${bundle.length} bytes; opa-sync ${mainJs} ${nodeArgs.join(' ')}`,
    );
    let revision = 1;
    const publishers: Record<string, () => void> = {
      'opa-sync': () => {
        revision += 1;
        writeFileSync(path.join(dir, 'bench.rego'), policyText(`r${revision}`));
      },
      'node:http': () => bare.input('publish'),
    };
    // Before any poll: once a run has held some, RSS does not fall back all the way.
    const freshMb = targets.map((t) => rssMb(t.pid));
    console.log(
      `RSS before the first poll: ${targets.map((t, i) => `${t.name} ${(freshMb[i] as number).toFixed(0)} MB`).join(', ')}`,
    );
    const results: RunResult[][] = targets.map(() => []);
    for (let run = 1; run <= runs; run += 1) {
      for (const [i, t] of targets.entries()) {
        const r = await runOnce(t, publishers[t.name] as () => void, work);
        (results[i] as RunResult[]).push(r);
        console.log(
          `run ${run} ${t.name}: open ${r.openMs} ms (${r.openCpuMs} ms CPU), RSS idle ${r.idleMb.toFixed(0)} MB held ${r.heldMb.toFixed(0)} MB (6 s later ${r.heldLaterMb.toFixed(0)} MB); ` +
            `200s after publish: first ${r.firstMs} median ${r.medianMs} p99 ${r.p99Ms} last ${r.lastMs} ms (${r.answered}), ` +
            `fan-out CPU ${r.fanoutCpuMs} ms, probe 304 max ${r.probeMaxMs} ms`,
        );
      }
    }
    console.log('\n| measure (min / median / max) | ' + targets.map((t) => t.name).join(' | ') + ' |');
    console.log('| --- |' + targets.map(() => ' ---: |').join(''));
    const row = (label: string, key: keyof RunResult, unit: string, digits = 0): void => {
      const cells = targets.map((_t, i) =>
        show(stats((results[i] as RunResult[]).map((r) => r[key])), unit, digits),
      );
      console.log(`| ${label} | ${cells.join(' | ')} |`);
    };
    row(`open ${polls} (until all held)`, 'openMs', ' ms');
    row('server CPU while opening', 'openCpuMs', ' ms');
    console.log(`| RSS before the first poll | ${freshMb.map((mb) => `${mb.toFixed(0)} MB`).join(' | ')} |`);
    row('RSS before opening (after the run before)', 'idleMb', ' MB');
    row(`RSS holding ${polls}, 1 s after the last was held`, 'heldMb', ' MB');
    row(`RSS holding ${polls}, 6 s after`, 'heldLaterMb', ' MB');
    row('first 200 after publish', 'firstMs', ' ms');
    row('median 200 after publish', 'medianMs', ' ms');
    row('p99 200 after publish', 'p99Ms', ' ms');
    row('last 200 after publish', 'lastMs', ' ms');
    row('server CPU for the fan-out', 'fanoutCpuMs', ' ms');
    row('a plain 304 during the fan-out (max)', 'probeMaxMs', ' ms');
    const [o, b] = results as [RunResult[], RunResult[]];
    const pair = (key: keyof RunResult): string =>
      show(stats(o.map((r, i) => r[key] / (b[i] as RunResult)[key])), '×', 2);
    console.log('\n| paired ratio, opa-sync ÷ node:http (min / median / max) | |\n| --- | ---: |');
    console.log(`| open time | ${pair('openMs')} |`);
    console.log(`| RSS holding (1 s) | ${pair('heldMb')} |`);
    console.log(`| RSS holding (6 s) | ${pair('heldLaterMb')} |`);
    console.log(`| last 200 after publish | ${pair('lastMs')} |`);
  } finally {
    for (const t of targets) await t.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
