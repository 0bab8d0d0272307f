// The performance work's own measurements of issue 12 (until `npm run bench` lands): P1 (spawn → OPA
// holds all N NetworkPolicies), P7 (opa-sync's RSS once they are held) and P3 (churn: K updates/s for
// D s on the held objects) with a real kube-apiserver + etcd (the test harness's control plane) and a
// real OPA per run, opa-sync run as `node <build>/dist/main.js --kubeconfig … --opa-url …
// --replicate=networking.k8s.io/v1/networkpolicies`. Several builds alternate run by run, so that the
// noise of a shared machine falls on all of them alike; each figure is given as min/median/max.
//
//   npx tsx scripts/bench/perf-replication.ts --build before=/tmp/perf-before --build after=. \
//     --plan p1:1000,p1:10000,p3:200,p3:2000 --runs 3 [--duration 30] [--profile-dir /tmp/prof]
//
// A build is a folder holding dist/ (and package.json, node_modules). With --profile-dir each opa-sync
// runs with --cpu-prof, a heap snapshot is taken once OPA holds everything (SIGUSR2) and the event loop
// delay is recorded (perf-eld.mjs): see perf-profile.ts to read them. Nothing is left running.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import getPort from 'get-port';
import { createCa } from '../../test/harness/certs.js';
import { startControlPlane, type ControlPlane } from '../../test/harness/control-plane.js';
import { startOpa, type OpaServer } from '../../test/harness/opa.js';
import { startProcess, type ManagedProcess } from '../../test/harness/processes.js';
import { removeRunDir, runDir } from '../../test/harness/run-dir.js';

const PER_NAMESPACE = 100;
const SEQ = 'bench.opa-sync/seq';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- arguments

interface Args {
  builds: { name: string; dir: string }[];
  plan: { scenario: 'p1' | 'p3' | 'floor'; n: number }[];
  runs: number;
  duration: number;
  churnSize: number;
  profileDir: string | undefined;
  nodeArgs: string[];
  out: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    builds: [],
    plan: [],
    runs: 3,
    duration: 30,
    churnSize: 10_000,
    profileDir: undefined,
    nodeArgs: [],
    out: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--build') {
      const [name, dir] = value().split('=');
      if (!name || !dir) throw new Error('--build name=dir');
      args.builds.push({ name, dir: path.resolve(dir) });
    } else if (a === '--plan') {
      for (const item of value().split(',')) {
        const [scenario, n] = item.split(':');
        if ((scenario !== 'p1' && scenario !== 'p3' && scenario !== 'floor') || !n)
          throw new Error(`bad plan item ${item}`);
        args.plan.push({ scenario, n: Number(n) });
      }
    } else if (a === '--runs') args.runs = Number(value());
    else if (a === '--duration') args.duration = Number(value());
    else if (a === '--churn-size') args.churnSize = Number(value());
    else if (a === '--profile-dir') args.profileDir = path.resolve(value());
    else if (a === '--node-arg') args.nodeArgs.push(value());
    else if (a === '--out') args.out = path.resolve(value());
    else throw new Error(`unknown argument ${a}`);
  }
  if (args.builds.length === 0) args.builds.push({ name: 'this', dir: process.cwd() });
  return args;
}

// ---- statistics

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
}

function mmm(xs: number[], digits = 0): string {
  if (xs.length === 0) return '-';
  const f = (x: number): string => x.toFixed(digits);
  return `${f(Math.min(...xs))} / ${f(median(xs))} / ${f(Math.max(...xs))}`;
}

// ---- /proc

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 (1-based) of the whole line; 12 and 13 after "pid (comm) ".
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function memory(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

// ---- HTTP

interface Answer {
  status: number;
  body: string;
  at: number;
}

class Http {
  private readonly agent: http.Agent;
  constructor(
    private readonly base: string,
    private readonly headers: Record<string, string>,
    ca: string | undefined,
    maxSockets: number,
  ) {
    this.agent = base.startsWith('https:')
      ? new https.Agent({ keepAlive: true, maxSockets, ...(ca === undefined ? {} : { ca }) })
      : new http.Agent({ keepAlive: true, maxSockets });
  }

  request(method: string, p: string, body?: unknown, contentType = 'application/json'): Promise<Answer> {
    const url = new URL(this.base + p);
    const transport = url.protocol === 'https:' ? https : http;
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = transport.request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            ...this.headers,
            accept: 'application/json',
            ...(text === undefined ? {} : { 'content-type': contentType }),
          },
          signal: AbortSignal.timeout(60_000),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(chunks).toString('utf8'),
              at: performance.now(),
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(text);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

async function pool(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

// ---- NetworkPolicies: object k is np-<k> in namespace bench-np-<k / 100>

const npNamespace = (k: number): string =>
  `bench-np-${String(Math.floor(k / PER_NAMESPACE)).padStart(4, '0')}`;
const npName = (k: number): string => `np-${String(k).padStart(6, '0')}`;

function networkPolicy(k: number): Record<string, unknown> {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: npName(k),
      namespace: npNamespace(k),
      labels: { app: `app-${k % 50}`, 'bench.opa-sync/set': 'replication' },
    },
    spec: {
      podSelector: { matchLabels: { app: `app-${k % 50}` } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [
            { podSelector: { matchLabels: { role: 'frontend' } } },
            { namespaceSelector: { matchLabels: { team: `t${k % 7}` } } },
          ],
          ports: [{ protocol: 'TCP', port: 8080 + (k % 10) }],
        },
      ],
    },
  };
}

async function seed(kube: Http, have: number, size: number): Promise<void> {
  if (size <= have) return;
  const started = performance.now();
  const firstNs = Math.floor(have / PER_NAMESPACE);
  const lastNs = Math.floor((size - 1) / PER_NAMESPACE);
  await pool(lastNs - firstNs + 1, 16, async (i) => {
    const name = npNamespace((firstNs + i) * PER_NAMESPACE);
    const res = await kube.request('POST', '/api/v1/namespaces', { metadata: { name } });
    if (res.status !== 201 && res.status !== 409) throw new Error(`namespace ${name}: ${res.status}`);
  });
  await pool(size - have, 48, async (i) => {
    const k = have + i;
    const res = await kube.request(
      'POST',
      `/apis/networking.k8s.io/v1/namespaces/${npNamespace(k)}/networkpolicies`,
      networkPolicy(k),
    );
    if (res.status !== 201 && res.status !== 409) throw new Error(`create ${npName(k)}: ${res.status}`);
  });
  log(`seeded NetworkPolicies ${have}…${size - 1} in ${Math.round(performance.now() - started)} ms`);
}

// ---- OPA

async function opaQuery(opa: Http, query: string, input?: unknown): Promise<Record<string, unknown>> {
  const res = await opa.request('POST', '/v1/query', { query, ...(input === undefined ? {} : { input }) });
  if (res.status !== 200) throw new Error(`OPA query: ${res.status} ${res.body.slice(0, 200)}`);
  const parsed = JSON.parse(res.body) as { result?: Record<string, unknown>[] };
  return parsed.result?.[0] ?? {};
}

const COUNT = 'n := sum([count(ns) | ns := data.kubernetes.networkpolicies[_]])';

/** When OPA first holds all `size` objects: a small sentinel read every 5 ms, then one full count. */
async function waitHolds(opa: Http, size: number, alive: () => boolean): Promise<number> {
  const last = size - 1;
  const sentinel = `/v1/data/kubernetes/networkpolicies/${npNamespace(last)}/${npName(last)}/metadata/name`;
  const deadline = performance.now() + 60_000;
  for (;;) {
    if (!alive()) throw new Error('opa-sync exited before OPA held everything');
    if (performance.now() > deadline) throw new Error(`OPA did not hold ${size} objects in time`);
    const at = performance.now();
    let seen = false;
    try {
      const res = await opa.request('GET', sentinel);
      seen = res.status === 200 && res.body.includes('"result"');
    } catch {
      // busy: poll again
    }
    if (seen) {
      const n = (await opaQuery(opa, COUNT)).n;
      if (n === size) return at;
      if (typeof n === 'number' && n > size) throw new Error(`OPA holds ${n} > ${size}`);
    }
    await sleep(5);
  }
}

/** OPA's own count of requests by method on /v1/data (its Prometheus metrics). */
async function opaRequests(opa: Http): Promise<Record<string, number>> {
  const res = await opa.request('GET', '/metrics');
  const counts: Record<string, number> = {};
  for (const line of res.body.split('\n')) {
    if (!line.startsWith('http_request_duration_seconds_count{')) continue;
    const handler = /handler="([^"]+)"/.exec(line)?.[1];
    const method = /method="([^"]+)"/.exec(line)?.[1];
    if (handler !== 'v1/data') continue;
    const key = method ?? '?';
    counts[key] = (counts[key] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return counts;
}

// ---- opa-sync

interface Tool {
  proc: ManagedProcess;
  spawnedAt: number;
  /** Date.now() at spawn, to compare with the log's times. */
  spawnedAtEpoch: number;
  profileBase: string | undefined;
}

let toolCounter = 0;

async function startTool(
  args: Args,
  build: string,
  cp: ControlPlane,
  opa: OpaServer,
  tag: string,
): Promise<Tool> {
  const port = await getPort({ host: '127.0.0.1' });
  const nodeArgs = [...args.nodeArgs];
  const env: Record<string, string> = {};
  let profileBase: string | undefined;
  const id = ++toolCounter;
  if (args.profileDir !== undefined) {
    profileBase = path.join(args.profileDir, `${tag}-${id}`);
    mkdirSync(profileBase, { recursive: true });
    const eld = fileURLToPath(new URL('./perf-eld.mjs', import.meta.url));
    nodeArgs.push(
      '--cpu-prof',
      `--cpu-prof-dir=${profileBase}`,
      '--heapsnapshot-signal=SIGUSR2',
      `--diagnostic-dir=${profileBase}`,
      `--import=${eld}`,
    );
    env['PERF_ELD_FILE'] = path.join(profileBase, 'eld.json');
  }
  const spawnedAt = performance.now();
  const spawnedAtEpoch = Date.now();
  const proc = startProcess(
    `opa-sync-${tag}-${id}`,
    process.execPath,
    [
      ...nodeArgs,
      path.join(build, 'dist', 'main.js'),
      `--kubeconfig=${cp.kubeconfigFile}`,
      `--opa-url=${opa.url}/v1`,
      '--replicate=networking.k8s.io/v1/networkpolicies',
      `--health-endpoint=127.0.0.1:${port}`,
    ],
    runDir(),
    env,
    build,
  );
  return { proc, spawnedAt, spawnedAtEpoch, profileBase };
}

async function heapSnapshot(tool: Tool): Promise<void> {
  if (tool.profileBase === undefined) return;
  const { readdirSync } = await import('node:fs');
  const before = readdirSync(tool.profileBase).filter((f) => f.endsWith('.heapsnapshot')).length;
  process.kill(tool.proc.pid, 'SIGUSR2');
  const deadline = performance.now() + 120_000;
  // The file appears when writing starts: wait until its size stops changing.
  let lastSize = -1;
  while (performance.now() < deadline) {
    await sleep(500);
    const files = readdirSync(tool.profileBase).filter((f) => f.endsWith('.heapsnapshot'));
    if (files.length <= before) continue;
    const { statSync } = await import('node:fs');
    const size = statSync(path.join(tool.profileBase, files[files.length - 1] as string)).size;
    if (size === lastSize && size > 0) return;
    lastSize = size;
  }
}

// ---- scenarios

interface P1Result {
  ms: number;
  rssMiB: number;
  hwmMiB: number;
  /** From spawn to these log lines (ms): the first one, the replication source's start, the list's end, the PUT's end. */
  logStart: number;
  logReplicating: number;
  logListed: number;
  logLoaded: number;
  /** From the replication source's start to the list's end, and from there to the PUT's end (ms). */
  listPhase: number;
  putPhase: number;
}

/** When (ms after spawn) the tool first logged each of these messages. */
function logTimes(tool: Tool, messages: Record<string, string>): Record<string, number> {
  const times: Record<string, number> = {};
  const text = readFileSync(tool.proc.logFile, 'utf8');
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { msg?: string; time?: number };
    for (const [key, msg] of Object.entries(messages)) {
      if (times[key] === undefined && (msg === '*' || entry.msg === msg) && entry.time !== undefined)
        times[key] = entry.time - tool.spawnedAtEpoch;
    }
  }
  return times;
}

async function p1Run(args: Args, build: string, cp: ControlPlane, n: number, tag: string): Promise<P1Result> {
  const opaServer = await startOpa(runDir(), { extraArgs: ['--log-level=error'] });
  const opa = new Http(opaServer.url, {}, undefined, 4);
  try {
    const tool = await startTool(args, build, cp, opaServer, tag);
    try {
      const at = await waitHolds(opa, n, () => !tool.proc.hasExited());
      await sleep(3000);
      const mem = memory(tool.proc.pid);
      await heapSnapshot(tool);
      const t = logTimes(tool, {
        logStart: '*',
        logReplicating: 'replicating resources',
        logListed: 'initial list done',
        logLoaded: 'loaded the whole collection into OPA',
      });
      return {
        ms: at - tool.spawnedAt,
        ...mem,
        logStart: t.logStart ?? NaN,
        logReplicating: t.logReplicating ?? NaN,
        logListed: t.logListed ?? NaN,
        logLoaded: t.logLoaded ?? NaN,
        listPhase: (t.logListed ?? NaN) - (t.logReplicating ?? NaN),
        putPhase: (t.logLoaded ?? NaN) - (t.logListed ?? NaN),
      };
    } finally {
      await tool.proc.stop();
    }
  } finally {
    opa.close();
    await opaServer.stop();
  }
}

interface Update {
  obj: number;
  seq: number;
  answeredAt: number;
  visibleAt: number;
}

/** Open-loop updates: `rate`/s for `duration` s, each writing a sequence number into an annotation. */
async function churn(
  kube: Http,
  size: number,
  rate: number,
  duration: number,
  seqBase: number,
  updates: Update[] = [],
): Promise<{ updates: Update[]; failed: number }> {
  const total = Math.round(rate * duration);
  const step = 7919 % size === 0 ? 7907 : 7919;
  const inFlight = new Set<Promise<void>>();
  let failed = 0;
  const start = performance.now() + 10;
  for (let j = 0; j < total; j++) {
    const due = start + (j * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    while (inFlight.size >= 512) await Promise.race(inFlight);
    const obj = (j * step) % size;
    const u: Update = { obj, seq: seqBase + j, answeredAt: NaN, visibleAt: NaN };
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
          if (res.status === 200) u.answeredAt = res.at;
          else failed++;
        },
        () => {
          failed++;
        },
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  return { updates, failed };
}

const VISIBLE = `v := [i | some i; p := input.p[i]; to_number(data.kubernetes.networkpolicies[p[0]][p[1]].metadata.annotations[${JSON.stringify(SEQ)}]) >= p[2]]`;

async function visible(opa: Http, batch: Update[]): Promise<number[]> {
  const r = await opaQuery(opa, VISIBLE, {
    p: batch.map((u) => [npNamespace(u.obj), npName(u.obj), u.seq]),
  });
  return (r.v as number[] | undefined) ?? [];
}

/** The last update of each object. */
function lastPerObject(updates: Update[]): Update[] {
  const last = new Map<number, Update>();
  for (const u of updates) last.set(u.obj, u);
  return [...last.values()];
}

/** Waits until OPA shows every one of `updates` (checked in batches); returns when it first did. */
async function waitAllVisible(opa: Http, updates: Update[], intervalMs: number): Promise<number> {
  let pending = lastPerObject(updates);
  const deadline = performance.now() + 120_000;
  for (;;) {
    const at = performance.now();
    const still: Update[] = [];
    for (let i = 0; i < pending.length; i += 2000) {
      const batch = pending.slice(i, i + 2000);
      const seen = new Set(await visible(opa, batch));
      batch.forEach((u, j) => {
        if (!seen.has(j)) still.push(u);
      });
    }
    if (still.length === 0) return at;
    if (performance.now() > deadline) throw new Error(`${still.length} updates never visible in OPA`);
    pending = still;
    await sleep(intervalMs);
  }
}

interface P3Result {
  toolCpu: number;
  opaCpu: number;
  patches: number;
  updates: number;
  failed: number;
  achievedRate: number;
  lagAfterMs: number;
  p50: number;
  p99: number;
  max: number;
  eldP99?: number;
}

async function p3Run(
  args: Args,
  build: string,
  cp: ControlPlane,
  kube: Http,
  rate: number,
  tag: string,
  seqBase: number,
): Promise<P3Result> {
  const size = args.churnSize;
  const opaServer = await startOpa(runDir(), { extraArgs: ['--log-level=error'] });
  const opa = new Http(opaServer.url, {}, undefined, 4);
  try {
    const tool = await startTool(args, build, cp, opaServer, tag);
    try {
      await waitHolds(opa, size, () => !tool.proc.hasExited());
      await sleep(3000);
      // Cost pass: nothing polls OPA while the updates go on.
      const cpu0 = { tool: cpuSeconds(tool.proc.pid), opa: cpuSeconds(opaServer.process.pid) };
      const req0 = await opaRequests(opa);
      const t0 = performance.now();
      const cost = await churn(kube, size, rate, args.duration, seqBase);
      const sentFor = (performance.now() - t0) / 1000;
      const tail = cost.updates.slice(-200);
      await waitAllVisible(opa, tail, 10);
      const cpu1 = { tool: cpuSeconds(tool.proc.pid), opa: cpuSeconds(opaServer.process.pid) };
      const lagAfterMs = performance.now() - Math.max(...tail.map((u) => u.answeredAt));
      const req1 = await opaRequests(opa);
      await waitAllVisible(opa, cost.updates, 50);
      // Lag pass: a watcher asks OPA about every update answered and not yet seen, about every ms.
      const lagSeq = seqBase + cost.updates.length;
      const pending: Update[] = [];
      let done = false;
      let first = 0;
      let doneAt = Infinity;
      const watcher = (async (): Promise<void> => {
        for (;;) {
          while (first < pending.length && !Number.isNaN((pending[first] as Update).visibleAt)) first++;
          const batch: Update[] = [];
          for (let i = first; i < pending.length && batch.length < 500; i++) {
            const u = pending[i] as Update;
            if (!Number.isNaN(u.answeredAt) && Number.isNaN(u.visibleAt)) batch.push(u);
          }
          if (done && performance.now() > doneAt + 30_000) return;
          if (batch.length === 0) {
            if (done) return;
            await sleep(1);
            continue;
          }
          const idx = await visible(opa, batch);
          const at = performance.now();
          for (const i of idx) (batch[i] as Update).visibleAt = at;
          if (idx.length === 0) await sleep(1);
        }
      })();
      // churn() appends each update to `pending` as it sends it; the watcher looks at the answered ones.
      const lag = await churn(kube, size, rate, Math.min(args.duration, 10), lagSeq, pending);
      done = true;
      doneAt = performance.now();
      await watcher;
      const lags = lag.updates
        .filter((u) => !Number.isNaN(u.visibleAt))
        .map((u) => Math.max(0, u.visibleAt - u.answeredAt));
      await tool.proc.stop();
      let eldP99: number | undefined;
      if (tool.profileBase !== undefined) {
        await sleep(500);
        try {
          const eld = JSON.parse(readFileSync(path.join(tool.profileBase, 'eld.json'), 'utf8')) as {
            p99: number;
          };
          eldP99 = eld.p99;
        } catch {
          eldP99 = undefined;
        }
      }
      return {
        toolCpu: cpu1.tool - cpu0.tool,
        opaCpu: cpu1.opa - cpu0.opa,
        patches: (req1['patch'] ?? 0) - (req0['patch'] ?? 0),
        updates: cost.updates.length,
        failed: cost.failed,
        achievedRate: cost.updates.length / sentFor,
        lagAfterMs,
        p50: percentile(lags, 50),
        p99: percentile(lags, 99),
        max: Math.max(...lags),
        ...(eldP99 === undefined ? {} : { eldP99 }),
      };
    } finally {
      await tool.proc.stop();
    }
  } finally {
    opa.close();
    await opaServer.stop();
  }
}

/**
 * The replication floor: one LIST of the objects (whole, and in pages of several sizes) on a warm
 * connection, and one PUT of the same objects (managedFields dropped, [namespace][name]) into a fresh OPA.
 */
async function floorRun(kube: Http): Promise<Record<string, number>> {
  const list = '/apis/networking.k8s.io/v1/networkpolicies';
  const result: Record<string, number> = {};
  await kube.request('GET', `${list}?limit=1`);
  let body = '';
  for (const limit of [0, 500, 1000, 2000, 5000]) {
    const started = performance.now();
    let next: string | undefined;
    do {
      const q = new URLSearchParams();
      if (limit > 0) q.set('limit', String(limit));
      if (next !== undefined) q.set('continue', next);
      const res = await kube.request('GET', `${list}?${q.toString()}`);
      if (limit === 0) body = res.body;
      next = (JSON.parse(res.body) as { metadata?: { continue?: string } }).metadata?.continue || undefined;
    } while (next !== undefined);
    result[limit === 0 ? 'listMs' : `list${limit}Ms`] = performance.now() - started;
  }
  const items = (JSON.parse(body) as { items: { metadata: Record<string, unknown> }[] }).items;
  const tree: Record<string, Record<string, unknown>> = {};
  for (const o of items) {
    delete o.metadata.managedFields;
    const ns = o.metadata.namespace as string;
    (tree[ns] ??= {})[o.metadata.name as string] = o;
  }
  const opaServer = await startOpa(runDir(), { extraArgs: ['--log-level=error'] });
  const opa = new Http(opaServer.url, {}, undefined, 4);
  try {
    const text = JSON.stringify(tree);
    const started = performance.now();
    const res = await opa.request('PUT', '/v1/data/kubernetes/networkpolicies', JSON.parse(text));
    result.putMs = performance.now() - started;
    result.putMB = Buffer.byteLength(text) / 1048576;
    result.listMB = Buffer.byteLength(body) / 1048576;
    if (res.status !== 204) throw new Error(`PUT: ${res.status}`);
  } finally {
    opa.close();
    await opaServer.stop();
  }
  return result;
}

// ---- main

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const dir = runDir();
  const ca = await createCa(dir);
  log('starting the control plane');
  const cp = await startControlPlane(dir, ca);
  const kube = new Http(cp.server, { authorization: `Bearer ${cp.adminToken}` }, ca.pem, 64);
  const results: Record<string, unknown>[] = [];
  let have = 0;
  let seqBase = 1;
  let failed = true;
  try {
    for (const item of args.plan) {
      const size = item.scenario === 'p3' ? args.churnSize : item.n;
      if (size < have) throw new Error('the plan must grow: sizes only go up');
      await seed(kube, have, size);
      have = size;
      const byBuild = new Map<string, Record<string, number>[]>();
      for (let run = 0; run < args.runs; run++) {
        for (const build of item.scenario === 'floor' ? [{ name: 'floor', dir: '' }] : args.builds) {
          const tag = `${item.scenario}-${item.n}-${build.name}`;
          const r =
            item.scenario === 'floor'
              ? await floorRun(kube)
              : item.scenario === 'p1'
                ? await p1Run(args, build.dir, cp, item.n, tag)
                : await p3Run(args, build.dir, cp, kube, item.n, tag, seqBase);
          seqBase += 1_000_000;
          log(
            `${tag} run ${run + 1}: ${JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' ? Math.round(v * 100) / 100 : v))}`,
          );
          const list = byBuild.get(build.name) ?? [];
          list.push(r as unknown as Record<string, number>);
          byBuild.set(build.name, list);
          results.push({ scenario: item.scenario, n: item.n, build: build.name, run, ...r });
        }
      }
      for (const [name, list] of byBuild) {
        const keys = Object.keys(list[0] ?? {});
        const summary = keys
          .map(
            (k) =>
              `${k} ${mmm(
                list.map((r) => r[k] as number),
                k.endsWith('Cpu') || k === 'eldP99' ? 2 : 0,
              )}`,
          )
          .join('; ');
        console.log(`${item.scenario}:${item.n} ${name} (min / median / max of ${list.length}): ${summary}`);
      }
    }
    failed = false;
  } finally {
    kube.close();
    if (args.out !== undefined) writeFileSync(args.out, JSON.stringify(results, null, 2));
    await cp.stop();
    if (failed) log(`logs kept in ${dir}`);
    else removeRunDir();
  }
}

await main();
