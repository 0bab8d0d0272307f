// P15: how fast the admission webhook answers with N policy modules loaded. N labelled policy
// ConfigMaps (one module each) are created in the namespace opa-sync watches; opa-sync runs with
// --admission-addr (and as a pure bundle server, so that no OPA push competes for the cores); once it
// is ready, AdmissionReview requests are sent to its webhook one after the other over one keep-alive
// HTTPS connection, as the API server would: in turn a CREATE of a new policy, an UPDATE of a loaded
// one (an edited rule) and a CREATE with a type error (refused). Timed from the send to the whole
// answer; p50/p99 per run. The peer is a cold `opa check` of the same N modules (what a webhook without
// a warm compiler would pay per request), run alternately in the same invocation.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import getPort from 'get-port';
import { requireTool } from '../../tools.js';
import { createCa, createServingCert } from '../../../test/harness/certs.js';
import { pool, type KubeHttp } from '../kube.js';
import { machineLine } from '../machine.js';
import { POLICY_LABEL, createConfigMap, policyConfigMap } from '../policy-configmaps.js';
import { goalsTable, verdictOf, type Goal, type ScenarioFile } from '../report.js';
import { fmt, fmtStat, percentile, stat, type Stat } from '../stats.js';
import type { Context, Scenario } from '../scenario.js';

const CONCURRENCY = 100;
const WARM_UP = 5;
const LABEL_SELECTOR = encodeURIComponent(
  Object.entries(POLICY_LABEL)
    .map(([k, v]) => `${k}=${v}`)
    .join(','),
);

function policy(i: number, message = 'not allowed'): string {
  return [
    `package bench.p15.cm${i}`,
    '',
    'deny contains msg if {',
    '\tinput.request.kind.kind == "Pod"',
    `\tinput.request.object.metadata.labels.app == "app-${i}"`,
    `\tmsg := "cm${i}: ${message}"`,
    '}',
    '',
  ].join('\n');
}

const BROKEN = 'package bench.p15.broken\n\nx := count(1)\n';

interface P15Run {
  run: number;
  count: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  denied: number;
  /** Cold `opa check` of the same modules (ms), each of the run's tries. */
  peerMs: number[];
}

function review(ns: string, i: number, kind: number, count: number): string {
  const loaded = i % count;
  const name = kind === 1 ? `policy-${String(loaded).padStart(4, '0')}` : `new-${i}`;
  const text = kind === 0 ? policy(100_000 + i) : kind === 1 ? policy(loaded, `edit ${i}`) : BROKEN;
  const object = { metadata: { name, namespace: ns, labels: POLICY_LABEL }, data: { 'policy.rego': text } };
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `r${i}`,
      operation: kind === 1 ? 'UPDATE' : 'CREATE',
      namespace: ns,
      name,
      resource: { group: '', version: 'v1', resource: 'configmaps' },
      object,
      ...(kind === 1
        ? {
            oldObject: {
              ...object,
              data: { 'policy.rego': policy(loaded) },
            },
          }
        : {}),
    },
  });
}

function post(agent: https.Agent, port: number, ca: string, body: string): Promise<{ allowed: boolean }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: '/validate/configmaps',
        method: 'POST',
        agent,
        ca,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
              response?: { allowed: boolean };
            };
            if (res.statusCode !== 200 || parsed.response === undefined) {
              reject(
                new Error(
                  `HTTP ${res.statusCode ?? 0}: ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`,
                ),
              );
            } else resolve(parsed.response);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.once('error', reject);
    req.end(body);
  });
}

/** A cold `opa check` of the modules, from a folder written once. */
function coldCheck(dir: string): number {
  const t0 = performance.now();
  execFileSync(requireTool('opa'), ['check', '--format', 'json', '.'], { cwd: dir, stdio: 'ignore' });
  return performance.now() - t0;
}

async function oneRun(
  ctx: Context,
  kube: KubeHttp,
  kubeconfig: string,
  count: number,
  requests: number,
  run: number,
): Promise<P15Run> {
  const ns = `bench-p15-${run}`;
  await kube.ensureNamespace(ns);
  await pool(count, CONCURRENCY, async (i) => {
    await createConfigMap(
      kube,
      ns,
      policyConfigMap(ns, `policy-${String(i).padStart(4, '0')}`, { 'policy.rego': policy(i) }),
    );
  });
  const certDir = path.join(ctx.env.dir, `p15-certs-${run}`);
  mkdirSync(certDir, { recursive: true });
  const ca = await createCa(certDir);
  const cert = await createServingCert(ca, 'admission');
  const port = await getPort({ host: '127.0.0.1' });
  const bundlePort = await getPort({ host: '127.0.0.1' });
  const peerDir = path.join(ctx.env.dir, `p15-peer-${run}`);
  for (let i = 0; i < count; i++) {
    const dir = path.join(peerDir, ns, `policy-${String(i).padStart(4, '0')}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'policy.rego'), policy(i));
  }
  const peerMs: number[] = [];
  // The peer first on odd runs, after on even runs.
  if (run % 2 === 1) peerMs.push(coldCheck(peerDir));
  const sync = await ctx.env.opaSync([
    `--kubeconfig=${kubeconfig}`,
    `--namespaces=${ns}`,
    `--bundle-addr=127.0.0.1:${bundlePort}`,
    `--opa-bin=${requireTool('opa')}`,
    `--admission-addr=127.0.0.1:${port}`,
    `--admission-tls-cert-file=${cert.certFile}`,
    `--admission-tls-key-file=${cert.keyFile}`,
  ]);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await sync.waitReady(300_000);
    for (let i = 0; i < WARM_UP; i++) await post(agent, port, ca.pem, review(ns, 900_000 + i, i % 3, count));
    const samples: number[] = [];
    let denied = 0;
    for (let i = 0; i < requests; i++) {
      const body = review(ns, i, i % 3, count);
      const t0 = performance.now();
      const answer = await post(agent, port, ca.pem, body);
      samples.push(performance.now() - t0);
      if (!answer.allowed) denied += 1;
    }
    if (run % 2 === 0) peerMs.push(coldCheck(peerDir));
    return {
      run,
      count,
      requests,
      p50Ms: percentile(samples, 50),
      p99Ms: percentile(samples, 99),
      maxMs: Math.max(...samples),
      denied,
      peerMs,
    };
  } finally {
    agent.destroy();
    await sync.stop();
    rmSync(peerDir, { recursive: true, force: true });
    await kube
      .request('DELETE', `/api/v1/namespaces/${ns}/configmaps?labelSelector=${LABEL_SELECTOR}`)
      .catch(() => undefined);
  }
}

export const p15: Scenario = {
  id: 'p15',
  title: 'P15: admission webhook latency with 1,000 policy modules loaded (p50/p99)',
  defaults: '--count 1000 --edits 300 --runs 3',
  async run(ctx) {
    const count = ctx.options.count ?? 1000;
    const requests = ctx.options.edits ?? 300;
    const runs = ctx.options.runs ?? 3;
    const { cp, kube } = await ctx.env.cluster();
    const machine = ctx.machine();
    const results: P15Run[] = [];
    for (let r = 1; r <= runs; r++) {
      const res = await oneRun(ctx, kube, cp.kubeconfigFile, count, requests, r);
      results.push(res);
      ctx.log(
        `p15 run ${r}/${runs}: ${requests} requests, p50 ${fmt(res.p50Ms)} ms, p99 ${fmt(res.p99Ms)} ms, max ${fmt(res.maxMs)} ms (${res.denied} refused); cold opa check ${res.peerMs.map((m) => fmt(m, 0)).join(', ')} ms`,
      );
    }
    const of = (f: (x: P15Run) => number): Stat => stat(results.map(f));
    const s: Record<string, Stat> = {
      p50Ms: of((x) => x.p50Ms),
      p99Ms: of((x) => x.p99Ms),
      maxMs: of((x) => x.maxMs),
      peerMs: stat(results.flatMap((x) => x.peerMs)),
      ratio: of((x) => (x.peerMs[0] ?? NaN) / x.p50Ms),
      denied: of((x) => x.denied),
    };
    const p99 = s.p99Ms?.median ?? NaN;
    const goals: Goal[] = [
      {
        measure: `P15 admission answer with ${fmt(count, 0)} policy modules loaded (p99 ms, median of runs)`,
        peer: '–',
        ours: `${fmt(p99)} (p50 ${fmt(s.p50Ms?.median)}; cold opa check ${fmt(s.peerMs?.median, 0)})`,
        goal: '≤ 300 ms',
        ...verdictOf(p99, 300),
      },
    ];
    return [
      { key: String(count), command: ctx.command, machine, runs: results, summary: s, goals, notes: [] },
    ];
  },
  render(file: ScenarioFile) {
    const out = [
      '## P15: admission webhook latency',
      '',
      'N labelled policy ConfigMaps (one module each, a package of its own) are created; opa-sync watches',
      'the namespace with `--admission-addr` (and `--bundle-addr`, a pure bundle server, so that no OPA push',
      'competes for the cores). Once it is ready (and after 5 warm-up requests), AdmissionReview requests go',
      'straight to its webhook, one after the other over one keep-alive HTTPS connection: in turn a CREATE of',
      'a new policy, an UPDATE of a loaded one (an edited rule) and a CREATE with a type error (refused).',
      'Timed from the send to the whole answer (the API server’s own overhead is not included). The peer is a',
      'cold `opa check` of the same N modules, what a webhook without a warm compiler would pay per request.',
      '',
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat>;
      const runs = p.runs as P15Run[];
      out.push(
        `### ${fmt(Number(p.key), 0)} policy modules loaded`,
        '',
        `\`${p.command}\` — ${machineLine(p.machine)}. ${runs.length} run(s) of ${runs[0]?.requests ?? 0} requests.`,
        '',
        '| measure | min / **median** / max |',
        '| --- | --- |',
        `| p50 (ms) | ${fmtStat(s.p50Ms)} |`,
        `| p99 (ms) | ${fmtStat(s.p99Ms)} |`,
        `| slowest answer (ms) | ${fmtStat(s.maxMs)} |`,
        `| requests refused (the type errors) | ${fmtStat(s.denied, 0)} |`,
        `| peer: cold \`opa check\` of the same modules (ms) | ${fmtStat(s.peerMs, 0)} |`,
        `| peer ÷ our p50 | ${fmtStat(s.ratio)} |`,
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
