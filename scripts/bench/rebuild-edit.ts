// Benchmark: edit one policy of a large folder → the new bundle served, against a cold `opa build` of
// the same folder, and how a plain 304 fares while that rebuild runs.
//
// A folder of --policies policies (default 1,000) and a --data-mb data.json (default 10 MB) is served by
// `node <build>/dist/main.js --policies-dir=<folder> --bundle-addr=127.0.0.1:0 --opa-bin=<opa>`. For
// each edit, a long poll (If-None-Match, `Prefer: wait=`) is held first; the time is from the file write
// to that poll's answer with the new ETag. Meanwhile a loop of plain GETs with the current ETag (304s,
// one keep-alive connection, one after another) records each answer's latency: those that overlap a
// rebuild show how long the event loop is held (paced, a request every 5 ms at most, so that the loop
// does not take a core from the server on a small machine). Beside it, a cold `opa build` of the folder.
//
// Several builds can be compared (`--build before=/path/to/checkout`, each with dist/ built by
// `npm run -s build`); they run alternately, the order reversed every repetition. Results go to stdout
// (a table, then one JSON line with every edit and cold build when --json is given).
//
//   npx tsx scripts/bench/rebuild-edit.ts --build before=/tmp/rebuild-before --build after=. --reps 3
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { requireTool } from '../tools.js';

const run = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Options {
  builds: { name: string; root: string }[];
  policies: number;
  dataMb: number;
  edits: number;
  reps: number;
  opaBin: string;
  json: boolean;
  /** Extra arguments for node before main.js (e.g. --cpu-prof), and a file for the servers' output. */
  nodeArgs: string[];
  /** The 304 loop sends a request at most every this many milliseconds. */
  paceMs: number;
  /** Extra arguments for opa-sync (e.g. --log-level=debug with --server-log). */
  serverArgs: string[];
  serverLog: string | undefined;
}

function parseArgs(argv: readonly string[]): Options {
  const options: Options = {
    builds: [],
    policies: 1000,
    dataMb: 10,
    edits: 5,
    reps: 2,
    opaBin: '',
    json: false,
    nodeArgs: [],
    paceMs: 5,
    serverArgs: [],
    serverLog: undefined,
  };
  // `--flag value` and `--flag=value` alike (a value may itself be `--x=y`, for --node-arg).
  for (let i = 0; i < argv.length; i += 1) {
    const given = argv[i] ?? '';
    const at = given.indexOf('=');
    const arg = at > 0 ? given.slice(0, at) : given;
    const value = (): string => {
      const v = at > 0 ? given.slice(at + 1) : argv[(i += 1)];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--build') {
      const [name, root] = value().split('=');
      if (name === undefined || root === undefined) throw new Error('--build takes name=/path/to/checkout');
      options.builds.push({ name, root: path.resolve(root) });
    } else if (arg === '--policies') options.policies = Number(value());
    else if (arg === '--data-mb') options.dataMb = Number(value());
    else if (arg === '--edits') options.edits = Number(value());
    else if (arg === '--reps') options.reps = Number(value());
    else if (arg === '--opa-bin') options.opaBin = value();
    else if (arg === '--json') options.json = true;
    else if (arg === '--node-arg') options.nodeArgs.push(value());
    else if (arg === '--pace-ms') options.paceMs = Number(value());
    else if (arg === '--server-arg') options.serverArgs.push(value());
    else if (arg === '--server-log') options.serverLog = path.resolve(value());
    else throw new Error(`unknown argument ${arg}`);
  }
  if (options.builds.length === 0) options.builds.push({ name: 'this', root: repoRoot });
  if (options.opaBin === '') options.opaBin = requireTool('opa');
  return options;
}

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

/** The folder: N policies in 20 team folders, and one data.json of about the given size. */
function makeFolder(policies: number, dataMb: number): string {
  const folder = mkdtempSync(path.join(tmpdir(), 'opa-sync-bench-rebuild-'));
  for (let i = 0; i < policies; i += 1) {
    const file = policyFile(folder, i);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, policyText(i, 0));
  }
  const records: Record<string, unknown> = {};
  const users: string[] = [];
  for (let i = 0, size = 0; size < dataMb * 1e6; i += 1) {
    const record = { id: i, name: `user-${i}`, email: `u${i}@example.com`, roles: ['a', 'b', `r${i % 7}`] };
    records[`k${i}`] = { ...record, active: i % 2 === 0, score: i * 1.5 };
    size += 110;
    if (i < 100) users.push(`user-${i}`);
  }
  mkdirSync(path.join(folder, 'bench'), { recursive: true });
  writeFileSync(path.join(folder, 'bench', 'data.json'), JSON.stringify({ users, records }));
  return folder;
}

interface Answer {
  status: number;
  etag: string | undefined;
}

function get(agent: http.Agent, url: URL, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => {
        const etag = res.headers.etag;
        resolve({ status: res.statusCode ?? 0, etag: typeof etag === 'string' ? etag : undefined });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

interface Server {
  child: ChildProcess;
  url: URL;
}

async function startServer(root: string, folder: string, options: Options): Promise<Server> {
  const { opaBin } = options;
  const child = spawn(
    process.execPath,
    [
      ...options.nodeArgs,
      path.join(root, 'dist', 'main.js'),
      `--policies-dir=${folder}`,
      '--bundle-addr=127.0.0.1:0',
      `--opa-bin=${opaBin}`,
      '--log-level=warn',
      ...options.serverArgs,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Never left running: killed when this script ends, however it ends.
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  child.once('exit', () => process.removeListener('exit', kill));
  let output = '';
  const url = await new Promise<URL>((resolve, reject) => {
    let found = false;
    const onData = (chunk: Buffer): void => {
      if (options.serverLog !== undefined) appendFileSync(options.serverLog, chunk);
      if (found) return;
      output += chunk.toString('utf8');
      const match = /serves the bundle "([^"]+)" at (http:\/\/\S+)/.exec(output);
      if (match?.[2] !== undefined) {
        found = true;
        resolve(new URL(match[2]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`opa-sync exited (${String(code)}):\n${output}`)));
  });
  return { child, url };
}

async function stopServer(server: Server): Promise<void> {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGTERM');
  await exited;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Sample {
  build: string;
  rep: number;
  /** Milliseconds from the first start to the first bundle. */
  firstBundleMs: number;
  /** Milliseconds from each file write to the new ETag's answer. */
  editMs: number[];
  /** Latencies (ms) of the 304s that overlapped a rebuild, and of all of them. */
  during: number[];
  all: number[];
  coldBuildMs: number;
  /** Resident memory (MB) of opa-sync after the edits, and of its child processes (the opa helper). */
  rssMb: number;
  childRssMb: number;
}

/** A process's resident memory in MB (Linux /proc); 0 when it cannot be read. */
function rssMb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] === undefined ? 0 : Number(match[1]) / 1024;
  } catch {
    return 0;
  }
}

/** The processes whose parent is `pid` (Linux /proc). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // After the command name (which may hold spaces and parentheses): the state, then the parent's pid.
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

async function coldBuild(opaBin: string, folder: string): Promise<number> {
  const out = path.join(tmpdir(), `opa-sync-bench-cold-${process.pid}.tar.gz`);
  const started = performance.now();
  await run(opaBin, ['build', '-o', out, folder], { maxBuffer: 64 * 1024 * 1024 });
  const took = performance.now() - started;
  rmSync(out, { force: true });
  return took;
}

async function measure(
  build: { name: string; root: string },
  rep: number,
  folder: string,
  options: Options,
  version: { next: number },
): Promise<Sample> {
  const coldBuildMs = await coldBuild(options.opaBin, folder);
  const started = performance.now();
  const server = await startServer(build.root, folder, options);
  const sample: Sample = {
    build: build.name,
    rep,
    firstBundleMs: 0,
    editMs: [],
    during: [],
    all: [],
    coldBuildMs,
    rssMb: 0,
    childRssMb: 0,
  };
  try {
    const bundleUrl = server.url;
    const loopAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let etag = '';
    for (;;) {
      const answer = await get(loopAgent, bundleUrl, {});
      if (answer.status === 200 && answer.etag !== undefined) {
        etag = answer.etag;
        break;
      }
      await sleep(50);
    }
    sample.firstBundleMs = performance.now() - started;

    // The 304 loop, for the whole session; each answer's start and latency are kept. Paced (one request
    // every --pace-ms at most), so that it measures the server instead of taking a core from it.
    const windows: [number, number][] = [];
    const answers: [number, number][] = [];
    let looping = true;
    let loopErrors = 0;
    const loop = (async () => {
      while (looping) {
        const at = performance.now();
        const answer = await get(loopAgent, bundleUrl, { 'if-none-match': etag }).catch(() => undefined);
        const took = performance.now() - at;
        // A keep-alive connection the server closed just then: counted, and the next request opens another.
        if (answer === undefined) loopErrors += 1;
        else if (answer.status === 304) answers.push([at, took]);
        else if (answer.etag !== undefined) etag = answer.etag;
        if (took < options.paceMs) await sleep(options.paceMs - took);
      }
    })();

    await sleep(500);
    for (let e = 0; e < options.edits; e += 1) {
      const i = (37 * (e + rep * options.edits) + 11) % options.policies;
      const before = etag;
      // On a connection of its own: one left idle since the last edit may be closed by the server.
      const poll = get(new http.Agent({ keepAlive: false }), bundleUrl, {
        'if-none-match': before,
        prefer: 'modes=snapshot,delta;wait=60',
      }).catch((err: unknown) => ({ status: 0, etag: String(err) }));
      await sleep(100); // the poll is held by now
      version.next += 1;
      const t0 = performance.now();
      writeFileSync(policyFile(folder, i), policyText(i, version.next));
      const answer = await poll;
      const t1 = performance.now();
      if (answer.status !== 200 || answer.etag === before) {
        throw new Error(`edit ${e}: the long poll answered ${answer.status} ${String(answer.etag)}`);
      }
      etag = answer.etag ?? etag;
      sample.editMs.push(t1 - t0);
      windows.push([t0, t1]);
      await sleep(700);
    }
    looping = false;
    await loop;
    if (loopErrors > 0) process.stderr.write(`${build.name}: ${loopErrors} 304-loop requests failed\n`);
    const pid = server.child.pid ?? 0;
    sample.rssMb = rssMb(pid);
    sample.childRssMb = childrenOf(pid).reduce((sum, child) => sum + rssMb(child), 0);
    loopAgent.destroy();
    for (const [at, latency] of answers) {
      sample.all.push(latency);
      // A 304 that was waiting at any time during a rebuild window.
      if (windows.some(([a, b]) => at <= b && at + latency >= a)) sample.during.push(latency);
    }
  } finally {
    await stopServer(server);
  }
  return sample;
}

function stats(values: readonly number[]): {
  n: number;
  min: number;
  median: number;
  p99: number;
  max: number;
} {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return {
    n: sorted.length,
    min: sorted[0] ?? NaN,
    median: at(0.5),
    p99: at(0.99),
    max: sorted.at(-1) ?? NaN,
  };
}

const ms = (v: number): string => (Number.isNaN(v) ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(1));

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const folder = makeFolder(options.policies, options.dataMb);
  const samples: Sample[] = [];
  const version = { next: 0 };
  process.stderr.write(`folder ${folder}: ${options.policies} policies + ${options.dataMb} MB data.json\n`);
  try {
    for (let rep = 0; rep < options.reps; rep += 1) {
      const order = rep % 2 === 0 ? options.builds : [...options.builds].reverse();
      for (const build of order) {
        process.stderr.write(`rep ${rep + 1}/${options.reps}: ${build.name}\n`);
        samples.push(await measure(build, rep, folder, options, version));
      }
    }
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }

  const lines = [
    `edit 1 of ${options.policies} policies (+ ${options.dataMb} MB data.json) → new bundle served; ` +
      `${options.reps} reps × ${options.edits} edits per build, builds alternating`,
    '',
    '| build | edit → served ms (min / median / max) | cold opa build ms (min / median / max) | ' +
      'edit ÷ cold build (median) | 304 during rebuild ms (n, median / p99 / max) | all 304s ms (median / max) | ' +
      'first bundle ms | RSS MB (+ children) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const build of options.builds) {
    const mine = samples.filter((s) => s.build === build.name);
    const edit = stats(mine.flatMap((s) => s.editMs));
    const cold = stats(mine.map((s) => s.coldBuildMs));
    const during = stats(mine.flatMap((s) => s.during));
    const all = stats(mine.flatMap((s) => s.all));
    const first = stats(mine.map((s) => s.firstBundleMs));
    lines.push(
      `| ${build.name} | ${ms(edit.min)} / ${ms(edit.median)} / ${ms(edit.max)} | ` +
        `${ms(cold.min)} / ${ms(cold.median)} / ${ms(cold.max)} | ${(edit.median / cold.median).toFixed(2)} | ` +
        `${during.n}, ${ms(during.median)} / ${ms(during.p99)} / ${ms(during.max)} | ` +
        `${ms(all.median)} / ${ms(all.max)} | ${ms(first.median)} | ` +
        `${ms(stats(mine.map((s) => s.rssMb)).median)} (+ ${ms(stats(mine.map((s) => s.childRssMb)).median)}) |`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  if (options.json) {
    // Every edit and cold build; the 304 latencies as their distribution (there are thousands).
    const summarised = samples.map(({ during, all, ...rest }) => ({
      ...rest,
      during: stats(during),
      all: stats(all),
    }));
    process.stdout.write(`${JSON.stringify({ options, samples: summarised })}\n`);
  }
}

// Interrupted: exit, so that the 'exit' hooks stop the servers started.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
await main();
