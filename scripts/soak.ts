// `npm run soak -- --minutes N`: opa-sync under a long steady churn against the real components, to see
// whether its memory or open handles grow. A real control plane (the test harness's; its controller
// manager stopped once the cluster works, so that opa-sync's are the only watches of ConfigMaps and
// NetworkPolicies), a real OPA killed and started again every --opa-restart seconds, and opa-sync with
// --watch-timeout short, so that every watch is ended by the API server and opened again every few
// seconds. Meanwhile policy and data ConfigMaps (valid and broken Rego, modules calling a function
// another ConfigMap defines, invalid JSON) and NetworkPolicies change at a steady rate. Every
// --sample seconds opa-sync's /metrics are read (resident memory, heap used, active handles) and the
// API server's count of watch requests ended. At the end the churn stops and OPA must hold exactly what
// the cluster says. The report (growth per hour by a linear fit after the warm-up) goes to stdout and
// to docs/soak.md. Never part of `npm test`.
//
//   npm run soak -- --minutes 10 [--watch-timeout 5] [--opa-restart 30] [--rate 5] [--sample 5] [--warmup 2] [--seed 1]
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { NetworkingV1Api } from '@kubernetes/client-node';
import { controlPlane, httpRequest, sharedOpa, stopHarness, waitFor } from '../test/harness/index.js';
import { DATA_LABEL, deleteConfigMap, putConfigMap, scrapeMetric, startSync } from '../test/harness/e2e.js';
import { waitOpaMatchesCluster, type ModelScope } from '../test/harness/cluster-model.js';
import { removeRunDir } from '../test/harness/run-dir.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    'watch-timeout': { type: 'string', default: '5' },
    'opa-restart': { type: 'string', default: '30' },
    rate: { type: 'string', default: '5' },
    sample: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    seed: { type: 'string', default: '1' },
    out: { type: 'string', default: 'docs/soak.md' },
  },
});
const num = (name: keyof typeof values): number => {
  const n = Number(values[name]);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`--${name} must be a positive number, got ${values[name]}`);
  return n;
};
const MINUTES = num('minutes');
const WATCH_TIMEOUT_S = Math.ceil(num('watch-timeout'));
const OPA_RESTART_S = num('opa-restart');
const RATE = num('rate');
const SAMPLE_S = num('sample');
const WARMUP_MIN = Math.min(num('warmup'), MINUTES / 2);
const SEED = num('seed');

const NAMESPACE = 'soak';
const POLICIES = 20;
const DATA = 10;
const NETWORK_POLICIES = 30;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

/** mulberry32: the churn is the same for the same --seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Sample {
  /** Minutes since the churn started. */
  t: number;
  rss: number;
  heap: number;
  handles: number;
  watches: number;
  watchErrors: number;
  opaRestarts: number;
}

/** Least squares: slope and intercept of y over x. */
function fit(xs: readonly number[], ys: readonly number[]): { slope: number; intercept: number } {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i += 1) {
    sxy += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    sxx += ((xs[i] as number) - mx) ** 2;
  }
  const slope = sxx === 0 ? 0 : sxy / sxx;
  return { slope, intercept: my - slope * mx };
}

async function main(): Promise<void> {
  const started = new Date();
  const cp = await controlPlane();
  // Its informers would reconnect too (every 5–10 min) and compete for the cores: opa-sync's watches
  // are then the only ones of ConfigMaps and NetworkPolicies the API server counts.
  await cp.processes.controllerManager.stop();
  const core = cp.kubeConfig();
  const networking = core.makeApiClient(NetworkingV1Api);
  await httpRequest(`${cp.server}/api/v1/namespaces`, {
    method: 'POST',
    ca: cp.ca.pem,
    headers: { authorization: `Bearer ${cp.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metadata: { name: NAMESPACE } }),
  });
  const opa = await sharedOpa();
  const sync = await startSync({
    opa,
    namespaces: NAMESPACE,
    args: [
      '--replicate=networking.k8s.io/v1/networkpolicies',
      `--watch-timeout=${WATCH_TIMEOUT_S}s`,
      '--opa-resync-interval=2s',
      '--log-level=warn',
    ],
  });
  const scope: ModelScope = { namespaces: [NAMESPACE], networkPolicies: { namespaces: [NAMESPACE] } };

  const apiserverWatches = async (): Promise<number> => {
    const res = await httpRequest(`${cp.server}/metrics`, {
      ca: cp.ca.pem,
      headers: { authorization: `Bearer ${cp.adminToken}` },
    });
    let sum = 0;
    for (const line of res.body.split('\n')) {
      if (!line.startsWith('apiserver_request_total{') || !line.includes('verb="WATCH"')) continue;
      if (!/resource="(configmaps|networkpolicies)"/.test(line)) continue;
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  };

  const random = prng(SEED);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const ops = { configmaps: 0, networkPolicies: 0, failures: 0 };
  const policyText = (i: number): string => {
    const pkg = `package soaktest.p${i}\n\n`;
    switch (pick(['ok', 'ok', 'ok', 'uses', 'uses', 'parse', 'compile'] as const)) {
      case 'ok':
        return `${pkg}value := ${Math.floor(random() * 1000)}\n`;
      case 'uses':
        return `${pkg}value := data.soaktest.lib.f(${Math.floor(random() * 1000)})\n`;
      case 'parse':
        return `${pkg}value := {\n`;
      case 'compile':
        return `${pkg}value := x\n`;
    }
  };
  const churnOnce = async (): Promise<void> => {
    const r = random();
    if (r < 0.05) {
      // The lib the `uses` modules need: deleted now and then, and created again.
      if (random() < 0.5) await deleteConfigMap(NAMESPACE, 'lib');
      else await putConfigMap(NAMESPACE, 'lib', { 'main.rego': `package soaktest.lib\n\nf(x) := x + 1\n` });
    } else if (r < 0.45) {
      const i = Math.floor(random() * POLICIES);
      const what = random();
      if (what < 0.15) await deleteConfigMap(NAMESPACE, `p${i}`);
      else if (what < 0.25)
        await putConfigMap(NAMESPACE, `p${i}`, { 'main.rego': policyText(i) }, { labels: {} });
      else await putConfigMap(NAMESPACE, `p${i}`, { 'main.rego': policyText(i) });
    } else if (r < 0.65) {
      const i = Math.floor(random() * DATA);
      if (random() < 0.15) await deleteConfigMap(NAMESPACE, `d${i}`);
      else
        await putConfigMap(
          NAMESPACE,
          `d${i}`,
          {
            'a.json': random() < 0.1 ? '{"v":' : JSON.stringify({ v: Math.floor(random() * 1000) }),
            'b.json': JSON.stringify({ list: Array.from({ length: 20 }, (_, k) => k * random()) }),
          },
          { labels: DATA_LABEL },
        );
    } else {
      const name = `np${Math.floor(random() * NETWORK_POLICIES)}`;
      ops.networkPolicies += 1;
      if (random() < 0.25) {
        await networking
          .deleteNamespacedNetworkPolicy({ name, namespace: NAMESPACE })
          .catch((err: unknown) => {
            if ((err as { code?: number }).code !== 404) throw err;
          });
        return;
      }
      const body = {
        metadata: { name },
        spec: {
          podSelector: { matchLabels: { app: `a${Math.floor(random() * 1000)}` } },
          policyTypes: ['Ingress'],
        },
      };
      try {
        const existing = await networking.readNamespacedNetworkPolicy({ name, namespace: NAMESPACE });
        await networking.replaceNamespacedNetworkPolicy({
          name,
          namespace: NAMESPACE,
          body: { ...body, metadata: { name, resourceVersion: existing.metadata?.resourceVersion ?? '' } },
        });
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
        await networking.createNamespacedNetworkPolicy({ namespace: NAMESPACE, body });
      }
      return;
    }
    ops.configmaps += 1;
  };

  const samples: Sample[] = [];
  const t0 = Date.now();
  const end = t0 + MINUTES * 60_000;
  const baseWatches = await apiserverWatches();
  const takeSample = async (): Promise<void> => {
    const [rss, heap, handles, opaRestarts, watchErrors, watches] = await Promise.all([
      scrapeMetric(sync, 'process_resident_memory_bytes'),
      scrapeMetric(sync, 'nodejs_heap_size_used_bytes'),
      scrapeMetric(sync, 'nodejs_active_handles_total'),
      scrapeMetric(sync, 'opa_sync_opa_restarts_detected_total'),
      scrapeMetric(sync, 'opa_sync_watch_errors_total'),
      apiserverWatches(),
    ]);
    samples.push({
      t: (Date.now() - t0) / 60_000,
      rss,
      heap,
      handles,
      watches: watches - baseWatches,
      watchErrors,
      opaRestarts,
    });
  };

  let stop = false;
  const churn = (async () => {
    while (!stop) {
      const at = Date.now();
      try {
        await churnOnce();
      } catch (err) {
        ops.failures += 1;
        log(`churn step failed: ${(err as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1000 / RATE - (Date.now() - at))));
    }
  })();
  const restarts = (async () => {
    let count = 0;
    while (!stop) {
      await new Promise((resolve) => setTimeout(resolve, OPA_RESTART_S * 1000));
      if (stop) break;
      await opa.restart();
      count += 1;
    }
    return count;
  })();
  log(`soak: ${MINUTES} min, watches end every ${WATCH_TIMEOUT_S} s, OPA restarted every ${OPA_RESTART_S} s`);
  while (Date.now() < end) {
    await takeSample();
    const last = samples[samples.length - 1] as Sample;
    if (samples.length % 12 === 1)
      log(
        `t=${last.t.toFixed(1)} min rss=${(last.rss / 2 ** 20).toFixed(1)} MiB heap=${(last.heap / 2 ** 20).toFixed(1)} MiB ` +
          `handles=${last.handles} watches=${last.watches} opa restarts seen=${last.opaRestarts}`,
      );
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(SAMPLE_S * 1000, Math.max(0, end - Date.now()))),
    );
  }
  stop = true;
  await churn;
  const opaRestarts = await restarts;
  // After the last OPA restart and the last change: everything must be back, and nothing stale left.
  const convergeMs = await waitOpaMatchesCluster(opa, scope, { timeoutMs: 120_000 });
  await takeSample();
  const alive = await waitFor('opa-sync /ready', async () =>
    (await httpRequest(`${sync.opsUrl}/ready`)).status === 200 ? true : undefined,
  );
  await sync.stop();

  const after = samples.filter((s) => s.t >= WARMUP_MIN);
  const half = after.filter((s) => s.t >= (WARMUP_MIN + (samples[samples.length - 1]?.t ?? 0)) / 2);
  const perHour = (of: (s: Sample) => number, among: readonly Sample[] = after): number =>
    fit(
      among.map((s) => s.t / 60),
      among.map(of),
    ).slope;
  const first = after[0] as Sample;
  const last = samples[samples.length - 1] as Sample;
  const handlesPerWatch = fit(
    after.map((s) => s.watches),
    after.map((s) => s.handles),
  ).slope;
  const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
  const range = (of: (s: Sample) => number, show: (n: number) => string): string =>
    `${show(Math.min(...after.map(of)))}–${show(Math.max(...after.map(of)))}`;
  const row = (
    what: string,
    of: (s: Sample) => number,
    show: (n: number) => string,
    unit: string,
  ): string[] => [
    what,
    `${show(of(first))}${unit}`,
    `${show(of(last))}${unit}`,
    `${range(of, show)}${unit}`,
    `${show(perHour(of))}${unit}/h`,
    `${show(perHour(of, half))}${unit}/h`,
  ];
  const rows = [
    row('resident memory (RSS)', (s) => s.rss, mib, ' MiB'),
    row('heap used', (s) => s.heap, mib, ' MiB'),
    row(
      'active handles',
      (s) => s.handles,
      (n) => n.toFixed(1),
      '',
    ),
  ];
  const command = `npm run soak -- ${process.argv.slice(2).join(' ')}`.trim();
  const report = [
    '# Soak',
    '',
    'opa-sync under a long steady churn (scripts/soak.ts; not part of `npm test`): policy and data',
    'ConfigMaps (valid and broken Rego, modules calling a function another ConfigMap defines, which is',
    'deleted and created again, invalid JSON, labels removed) and NetworkPolicies change at a steady rate;',
    "every watch is ended by the API server and opened again every few seconds (opa-sync's `--watch-timeout`);",
    'OPA is killed and started again periodically. Growth is the slope of a least-squares line through the',
    'samples taken after the warm-up.',
    '',
    `Command: \`${command}\` (${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ` +
      `${os.cpus().length} cores, Node ${process.version}, shared machine).`,
    '',
    `- ${MINUTES} min of churn at ${RATE} changes/s: ${ops.configmaps} ConfigMap and ${ops.networkPolicies} ` +
      `NetworkPolicy changes (${ops.failures} refused by the API server);`,
    `- watches ended by the API server every ${WATCH_TIMEOUT_S} s: ${last.watches} watch requests of opa-sync ended ` +
      `(API server's \`apiserver_request_total{verb="WATCH"}\` for configmaps and networkpolicies), ` +
      `${last.watchErrors} of them failed (\`opa_sync_watch_errors_total\`);`,
    `- OPA killed and started again every ${OPA_RESTART_S} s: ${opaRestarts} times, ${last.opaRestarts} restarts ` +
      `detected by opa-sync (\`opa_sync_opa_restarts_detected_total\`);`,
    `- samples every ${SAMPLE_S} s: ${samples.length}, the first ${WARMUP_MIN} min left out of the fit;`,
    `- at the end, OPA held exactly what the cluster says ${(convergeMs / 1000).toFixed(1)} s after the churn ` +
      `stopped (waitOpaMatchesCluster), and /ready answered 200: ${alive}.`,
    '',
    '| measure | after warm-up | at the end | range after warm-up | growth (linear fit) | growth, last half |',
    '| ------- | ------------- | ---------- | ------------------- | ------------------- | ----------------- |',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    `Active handles against watch reconnects (fit of handles over watch requests ended): ` +
      `${handlesPerWatch.toFixed(4)} handles per reconnect.`,
    '',
  ].join('\n');
  process.stdout.write(`${report}\n`);
  // What people wrote under "## Notes" (how to read the figures) stays when the figures are renewed.
  const previous = existsSync(values.out) ? readFileSync(values.out, 'utf8') : '';
  const notes = previous.indexOf('\n## Notes\n');
  writeFileSync(values.out, notes < 0 ? report : `${report}${previous.slice(notes)}`);
  log(`report written to ${values.out}`);
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await stopHarness();
    if (process.exitCode !== 1) removeRunDir();
  });
