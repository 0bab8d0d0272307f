// The servers of the bundle-serving scenarios (serve, polls, rebuild): opa-sync itself (the built CLI in
// folder mode, with its ops port for /metrics), nginx (one worker, the same bytes as a static file with
// its own ETag) and a bare node:http server (the least any Node server can do), plus the folders they
// serve and a plain HTTP GET. Every server is a child of the bench, stopped by its pid when the
// scenario's environment closes (and killed if the bench exits first).
//
// Connections: each process needs ~1 file descriptor per connection; children are started through
// `sh -c 'ulimit -n <hard limit>; exec …'` (exec: the pid is the server's), enough for 10,000 polls where
// the hard limit allows it.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import getPort from 'get-port';
import { requireTool } from '../tools.js';
import { MAIN_JS, sleep, type BenchEnv } from './env.js';

export const BUNDLE_NAME = 'policies';

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One GET on a connection of its own. */
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

/** Deterministic pseudo-random bytes (xorshift32), so that the 1 MB bundle is the same on every run. */
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

export function policyText(revision: string): string {
  return `package bench\n\nallow := true\n\nrevision := ${JSON.stringify(revision)}\n`;
}

/**
 * A policies folder for opa-sync: one small policy, `bench.rego` (`revision` is what an edit changes)
 * and, when `dataBytes` > 0, a data.json of that many pseudo-random bytes (base64, so that gzip keeps ~¾).
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

/** A server under test: its pid (for /proc), its bundle URL and how to stop it. */
export interface Target {
  name: string;
  pid: number;
  port: number;
  url: string;
  stop(): Promise<void>;
  /** The tail of what the process wrote to stdout and stderr. */
  output(): string;
  /** Writes a line to the process's stdin. */
  input(line: string): void;
}

export interface OpaSyncTarget extends Target {
  /** The ops port (--health-endpoint): /metrics, /ready. */
  opsPort: number;
}

function spawnWithUlimit(command: string, args: readonly string[]): ChildProcess {
  const quoted = [command, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return spawn('sh', ['-c', `ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec ${quoted}`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

function targetOf(env: BenchEnv, name: string, child: ChildProcess, port: number): Target {
  let output = '';
  const keep = (c: Buffer): void => {
    output += c.toString();
    if (output.length > 1_000_000) output = output.slice(-500_000);
  };
  child.stderr?.on('data', keep);
  child.stdout?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Never left running: killed when the bench ends, however it ends.
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  const stop = async (): Promise<void> => {
    process.removeListener('exit', kill);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  env.onClose(stop);
  return {
    name,
    pid: child.pid as number,
    port,
    url: `http://127.0.0.1:${port}/bundles/${BUNDLE_NAME}`,
    output: () => output,
    input: (line) => child.stdin?.write(`${line}\n`),
    stop,
  };
}

async function waitUntil(target: Target, ok: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await ok().catch(() => false)) return;
    if (Date.now() > until) {
      await target.stop();
      throw new Error(`${target.name}: not serving after ${ms} ms\n${target.output().slice(-3000)}`);
    }
    await sleep(50);
  }
}

/** opa-sync's built CLI serving `dir` as the bundle `policies`, with /metrics on its ops port. */
export async function startOpaSync(
  env: BenchEnv,
  options: {
    dir: string;
    /** Flags for node before main.js, e.g. --max-semi-space-size=2 or --cpu-prof. */
    nodeArgs?: readonly string[];
    /** More opa-sync flags, e.g. `--bundle-token-file=…`. */
    args?: readonly string[];
    /** Headers of the readiness check (Authorization, with a token file). */
    headers?: Record<string, string>;
  },
): Promise<OpaSyncTarget> {
  if (!existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} is missing: run \`npm run build\` first`);
  const port = await getPort({ host: '127.0.0.1' });
  const opsPort = await getPort({ host: '127.0.0.1' });
  const child = spawnWithUlimit(process.execPath, [
    ...(options.nodeArgs ?? []),
    MAIN_JS,
    `--policies-dir=${options.dir}`,
    `--bundle-addr=127.0.0.1:${port}`,
    `--health-endpoint=127.0.0.1:${opsPort}`,
    `--opa-bin=${requireTool('opa')}`,
    ...(options.args ?? []),
  ]);
  const target = { ...targetOf(env, 'opa-sync', child, port), opsPort };
  const headers = options.headers ?? {};
  await waitUntil(target, async () => (await get(target.url, headers)).status === 200);
  return target;
}

/** One sample of a Prometheus text exposition (the first line of that name, without labels). */
export function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m === null ? NaN : Number(m[1]);
}

/** opa-sync's /metrics, as text. */
export async function scrape(target: OpaSyncTarget): Promise<string> {
  return (await get(`http://127.0.0.1:${target.opsPort}/metrics`)).body.toString();
}

/** nginx with one worker (no master, no daemon), serving `file` as /bundles/policies with its ETag. */
export async function startNginx(env: BenchEnv, options: { prefix: string; file: Buffer }): Promise<Target> {
  const port = await getPort({ host: '127.0.0.1' });
  const { prefix } = options;
  const root = path.join(prefix, 'html');
  mkdirSync(path.join(root, 'bundles'), { recursive: true });
  mkdirSync(path.join(prefix, 'tmp'), { recursive: true });
  writeFileSync(path.join(root, 'bundles', BUNDLE_NAME), options.file);
  const conf = path.join(prefix, 'nginx.conf');
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(
    (t) => `  ${t}_temp_path ${prefix}/tmp;`,
  );
  writeFileSync(
    conf,
    [
      'worker_processes 1;',
      'daemon off;',
      'master_process off;',
      `pid ${prefix}/nginx.pid;`,
      `error_log ${prefix}/error.log warn;`,
      'worker_rlimit_nofile 20000;',
      'events { worker_connections 16384; }',
      'http {',
      '  access_log off;',
      '  types { }',
      '  default_type application/vnd.openpolicyagent.bundles;',
      '  etag on;',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  keepalive_timeout 65;',
      '  keepalive_requests 1000000;',
      ...temp,
      '  server {',
      `    listen 127.0.0.1:${port} backlog=4096;`,
      `    root ${root};`,
      '    location / { add_header Cache-Control no-cache; }',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const child = spawnWithUlimit('nginx', ['-p', prefix, '-c', conf, '-e', `${prefix}/error.log`]);
  const target = targetOf(env, 'nginx', child, port);
  await waitUntil(target, async () => (await get(target.url)).status === 200);
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
const send = (res) => {
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

export async function startBare(
  env: BenchEnv,
  options: { prefix: string; file: Buffer; nodeArgs?: readonly string[] },
): Promise<Target> {
  const port = await getPort({ host: '127.0.0.1' });
  mkdirSync(options.prefix, { recursive: true });
  const script = path.join(options.prefix, 'bare-server.mjs');
  const file = path.join(options.prefix, 'bundle.tar.gz');
  writeFileSync(script, BARE_SERVER);
  writeFileSync(file, options.file);
  const child = spawnWithUlimit(process.execPath, [...(options.nodeArgs ?? []), script, String(port), file]);
  const target = targetOf(env, 'node:http', child, port);
  await waitUntil(target, async () => (await get(target.url)).status === 200);
  return target;
}

/** `--node-args` of the command line as separate flags (space-separated). */
export function splitNodeArgs(text: string | undefined): string[] {
  return (text ?? '').split(' ').filter((a) => a !== '');
}

/** The servers in the order of run `run`: as given on odd runs, reversed on even ones. */
export function inTurn<T>(items: readonly T[], run: number): T[] {
  return run % 2 === 1 ? [...items] : [...items].reverse();
}
