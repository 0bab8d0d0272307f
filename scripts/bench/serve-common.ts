// Shared pieces of the serving benchmarks (serve-http.ts, serve-long-polls.ts): the three servers
// compared — opa-sync itself (the built CLI in folder mode), nginx (one worker, the same bytes as a
// static file with its own ETag) and a bare node:http server (the least any Node server can do) —
// plus CPU and RSS read from /proc, wrk's output parsed, and min/median/max.
//
// Needs: `npm run build` (or --opa-sync=<main.js>), the opa binary from `npm run tools`, and
// `apt-get install -y wrk nginx`. Connections: each process needs ~1 file descriptor per connection;
// children are started through `sh -c 'ulimit -n <n>; exec …'` to raise their soft limit as far as the
// hard limit allows (20,000 on the machine this was written on: enough for 10,000 connections).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireTool } from '../tools.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const BUNDLE_NAME = 'policies';
export const CLOCK_TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

/** `--name=value` from the command line, or the default. */
export function arg(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  const found = process.argv.find((a) => a.startsWith(prefix));
  return found === undefined ? fallback : found.slice(prefix.length);
}

export function flag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export function get(url: string, headers: Record<string, string> = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** utime + stime of a process, in clock ticks (10 ms each). */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces: count fields from after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** Resident set size of a process, in MB. */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return Number(kb) / 1024;
}

export interface Stats {
  min: number;
  median: number;
  max: number;
}

export function stats(values: readonly number[]): Stats {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { min: sorted[0] as number, median, max: sorted[sorted.length - 1] as number };
}

/** `min / median / max` with a unit, each number rounded to `digits`. */
export function show(s: Stats, unit = '', digits = 0): string {
  const f = (n: number): string => n.toFixed(digits);
  return `${f(s.min)} / ${f(s.median)} / ${f(s.max)}${unit}`;
}

/** Deterministic pseudo-random bytes (xorshift32), so the 1 MB bundle is the same on every run. */
export function pseudoRandomBytes(length: number, seed = 0x9e3779b9): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0;
  for (let i = 0; i < length; i += 1) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A policies folder for opa-sync: one small policy (`revision` is what an edit changes) and, when
 * `dataBytes` > 0, a data.json of that many pseudo-random bytes (base64, so gzip keeps ~¾ of it).
 */
export function writePoliciesFolder(dir: string, dataBytes: number, revision = 'r1'): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'bench.rego'), policyText(revision));
  if (dataBytes > 0) {
    mkdirSync(path.join(dir, 'blob'), { recursive: true });
    const text = pseudoRandomBytes(dataBytes).toString('base64');
    const chunks: string[] = [];
    for (let i = 0; i < text.length; i += 1000) chunks.push(text.slice(i, i + 1000));
    writeFileSync(path.join(dir, 'blob', 'data.json'), JSON.stringify({ chunks }));
  }
}

export function policyText(revision: string): string {
  return `package bench\n\nallow := true\n\nrevision := ${JSON.stringify(revision)}\n`;
}

/** A server under test: its pid (for /proc) and how to stop it. */
export interface Target {
  name: string;
  pid: number;
  port: number;
  /** The URL of the bundle. */
  url: string;
  stop(): Promise<void>;
  /** Everything the process wrote to stdout and stderr so far. */
  stderr(): string;
  /** Writes a line to the process's stdin. */
  input(line: string): void;
}

function spawnWithUlimit(command: string, args: readonly string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const quoted = [command, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return spawn('sh', ['-c', `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec ${quoted}`], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: env ?? process.env,
  });
}

function targetOf(name: string, child: ChildProcess, port: number, urlPath: string): Target {
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
    if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
  });
  child.stdout?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    name,
    pid: child.pid as number,
    port,
    url: `http://127.0.0.1:${port}${urlPath}`,
    stderr: () => stderr,
    input: (line) => child.stdin?.write(`${line}\n`),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function waitUntil(
  what: string,
  target: Target,
  ok: () => Promise<boolean>,
  ms = 60_000,
): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await ok().catch(() => false)) return;
    if (Date.now() > until) {
      await target.stop();
      throw new Error(`${what}: not ready after ${ms} ms\n${target.stderr().slice(-3000)}`);
    }
    await sleep(100);
  }
}

/** opa-sync from its built CLI, serving a folder as the bundle `policies`, with /metrics on opsPort. */
export async function startOpaSync(options: {
  mainJs: string;
  dir: string;
  nodeArgs?: readonly string[];
  /** More opa-sync flags, e.g. `--bundle-token-file=…`. */
  args?: readonly string[];
  /** Headers of the readiness check (e.g. Authorization, with a token file). */
  headers?: Record<string, string>;
}): Promise<Target & { opsPort: number }> {
  if (!existsSync(options.mainJs)) {
    throw new Error(
      `${options.mainJs} is missing: run \`npm run build\` first (or pass --opa-sync=<main.js>)`,
    );
  }
  const port = await freePort();
  const opsPort = await freePort();
  const child = spawnWithUlimit(process.execPath, [
    ...(options.nodeArgs ?? []),
    options.mainJs,
    `--policies-dir=${options.dir}`,
    `--bundle-addr=127.0.0.1:${port}`,
    `--health-endpoint=127.0.0.1:${opsPort}`,
    `--opa-bin=${requireTool('opa')}`,
    ...(options.args ?? []),
  ]);
  const target = { ...targetOf('opa-sync', child, port, `/bundles/${BUNDLE_NAME}`), opsPort };
  const headers = options.headers ?? {};
  await waitUntil('opa-sync', target, async () => (await get(target.url, headers)).status === 200);
  return target;
}

/** nginx with one worker (no master, no daemon), serving `file` as /bundles/policies with its ETag. */
export async function startNginx(options: { prefix: string; file: Buffer }): Promise<Target> {
  const port = await freePort();
  const root = path.join(options.prefix, 'html');
  mkdirSync(path.join(root, 'bundles'), { recursive: true });
  writeFileSync(path.join(root, 'bundles', BUNDLE_NAME), options.file);
  const conf = path.join(options.prefix, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;
daemon off;
master_process off;
pid ${options.prefix}/nginx.pid;
error_log ${options.prefix}/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
  access_log off;
  types { }
  default_type application/vnd.openpolicyagent.bundles;
  etag on;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  client_body_temp_path ${options.prefix}/tmp;
  proxy_temp_path ${options.prefix}/tmp;
  fastcgi_temp_path ${options.prefix}/tmp;
  uwsgi_temp_path ${options.prefix}/tmp;
  scgi_temp_path ${options.prefix}/tmp;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    root ${root};
    location / { add_header Cache-Control no-cache; }
  }
}
`,
  );
  mkdirSync(path.join(options.prefix, 'tmp'), { recursive: true });
  const child = spawnWithUlimit('nginx', [
    '-p',
    options.prefix,
    '-c',
    conf,
    '-e',
    `${options.prefix}/error.log`,
  ]);
  const target = targetOf('nginx', child, port, `/bundles/${BUNDLE_NAME}`);
  await waitUntil('nginx', target, async () => (await get(target.url)).status === 200);
  return target;
}

/**
 * The bare node:http peer: the least a Node server does to answer these requests — one exact
 * If-None-Match comparison, a 304 or the bytes, and long polls held with a timer and a 'close'
 * listener each, in one Set, all answered when a line arrives on stdin (printing the time first).
 * Plain JavaScript run by node itself, so that nothing else (tsx, express, logging) is in its RSS.
 */
const BARE_SERVER = String.raw`
import http from 'node:http';
import { readFileSync } from 'node:fs';
const [port, file] = process.argv.slice(2);
let bytes = readFileSync(file);
let etag = '"bare-1"';
const held = new Set();
const send = (res, close) => {
  res.writeHead(200, ['Content-Type', 'application/vnd.openpolicyagent.bundles', 'Content-Length', String(bytes.length), 'ETag', etag, 'Cache-Control', 'no-cache']);
  res.end(bytes);
};
const server = http.createServer((req, res) => {
  if (req.url === '/held') { res.end(String(held.size)); return; }
  const inm = req.headers['if-none-match'];
  if (inm !== etag && inm !== '*') { send(res); return; }
  const prefer = req.headers.prefer;
  const wait = prefer === undefined ? undefined : /wait=(\d+)/.exec(prefer)?.[1];
  if (wait === undefined) {
    res.writeHead(304, ['ETag', etag, 'Cache-Control', 'no-cache']);
    res.end();
    return;
  }
  const poll = { res, timer: setTimeout(() => {
    held.delete(poll);
    res.writeHead(304, ['ETag', etag, 'Cache-Control', 'no-cache']);
    res.end();
  }, Number(wait) * 1000 - 1000) };
  held.add(poll);
  res.on('close', () => { clearTimeout(poll.timer); held.delete(poll); });
});
server.listen({ port: Number(port), host: '127.0.0.1', backlog: 4096 });
// An orderly exit, so that --cpu-prof writes its profile.
process.on('SIGTERM', () => process.exit(0));
let lines = '';
process.stdin.on('data', (c) => {
  lines += c;
  while (lines.includes('\n')) {
    lines = lines.slice(lines.indexOf('\n') + 1);
    etag = '"bare-' + Date.now() + '"';
    bytes = Buffer.concat([bytes.subarray(0, bytes.length - 1), Buffer.from('x')]);
    process.stdout.write(JSON.stringify({ published: Date.now() }) + '\n');
    for (const poll of held) { clearTimeout(poll.timer); send(poll.res); }
    held.clear();
  }
});
`;

export async function startBare(options: {
  prefix: string;
  file: Buffer;
  nodeArgs?: readonly string[];
}): Promise<Target> {
  const port = await freePort();
  mkdirSync(options.prefix, { recursive: true });
  const script = path.join(options.prefix, 'bare-server.mjs');
  const file = path.join(options.prefix, 'bundle.tar.gz');
  writeFileSync(script, BARE_SERVER);
  writeFileSync(file, options.file);
  const child = spawnWithUlimit(process.execPath, [...(options.nodeArgs ?? []), script, String(port), file]);
  const target = targetOf('node:http', child, port, `/bundles/${BUNDLE_NAME}`);
  await waitUntil('bare node:http', target, async () => (await get(target.url)).status === 200);
  return target;
}

export interface WrkResult {
  rps: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  non2xx3xx: number;
  errors: string;
}

function latencyMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (m === null) return Number.NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

/** Runs wrk (1 thread) and parses its --latency output. */
export async function wrk(options: {
  url: string;
  connections: number;
  seconds: number;
  headers?: Record<string, string>;
}): Promise<WrkResult> {
  const args = ['-t1', `-c${options.connections}`, `-d${options.seconds}s`, '--latency'];
  for (const [k, v] of Object.entries(options.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(options.url);
  const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`wrk failed (${code}):\n${out}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? '';
  const p99 = /^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '';
  const non = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const errors = /Socket errors:.*$/m.exec(out)?.[0] ?? '';
  return { rps, requests, p50Ms: latencyMs(p50), p99Ms: latencyMs(p99), non2xx3xx: non, errors };
}

/** wrk against a target, with the target's CPU per request from /proc. */
export async function measure(
  target: Target,
  options: { connections: number; seconds: number; headers?: Record<string, string> },
): Promise<WrkResult & { cpuUsPerRequest: number }> {
  const before = cpuTicks(target.pid);
  const result = await wrk({ url: target.url, ...options });
  const ticks = cpuTicks(target.pid) - before;
  const cpuUsPerRequest = ((ticks / CLOCK_TICKS_PER_SECOND) * 1e6) / result.requests;
  return { ...result, cpuUsPerRequest };
}
