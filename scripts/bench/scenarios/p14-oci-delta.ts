// Issue 14: (1) the time opa-sync's OCI client takes to push a 1 MB and a 10 MB bundle to the local
// CNCF distribution registry (blobs, manifest, revision tag and latest), beside `oras push` of the same
// file, alternating per run; (2) delta vs snapshot bundles of the replicated data bundle: the bytes
// sent and the time until a long-polling real OPA holds the change, for 1, 100 and 1,000 changed
// objects out of 2,000. Part (2) runs opa-sync's publisher and bundle server in this process (no
// cluster: the changes are made in the desired state), with one OPA pulling with deltas and one without.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import getPort from 'get-port';
import { requireTool } from '../../tools.js';
import { Fleet } from '../../../src/bundles/fleet.js';
import { BundleRegistry } from '../../../src/bundles/registry.js';
import { ReplicatedBundlePublisher } from '../../../src/bundles/replicated-bundle.js';
import { createBundleApp, listenBundleServer, type RunningServer } from '../../../src/bundles/server.js';
import { Metrics } from '../../../src/http/metrics.js';
import { DesiredState } from '../../../src/model/desired-state.js';
import { OciClient } from '../../../src/oci/client.js';
import { Credentials } from '../../../src/oci/credentials.js';
import { pushArtifact } from '../../../src/oci/oci-publisher.js';
import { silentLogger } from '../../../src/util/logger.js';
import { startOciRegistry } from '../../../test/harness/oci-registry.js';
import { startOpa, type OpaServer } from '../../../test/harness/opa.js';
import { machineLine } from '../machine.js';
import type { Point, ScenarioFile } from '../report.js';
import { fmt, fmtStat, pairedRatios, stat, type Stat } from '../stats.js';
import type { Context, Scenario } from '../scenario.js';

const MB = 1024 * 1024;
const OBJECTS = 2000;
const KEY = 'networking.k8s.io/v1/networkpolicies';

interface PushRun {
  run: number;
  opaSyncMs: number;
  orasMs: number;
}

async function pushPoint(ctx: Context, sizeMb: number, runs: number): Promise<Point> {
  const machine = ctx.machine();
  const registry = await startOciRegistry({ dir: ctx.env.dir });
  const client = new OciClient(registry.host, { credentials: new Credentials({}), plainHttp: true });
  const results: PushRun[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      // Fresh random (incompressible) bytes each run: every blob is new to the registry.
      const bytes = randomBytes(sizeMb * MB);
      const file = path.join(ctx.env.dir, `bundle-${sizeMb}-${i}.tar.gz`);
      const config = path.join(ctx.env.dir, 'config.json');
      writeFileSync(file, bytes);
      writeFileSync(config, '{}');
      const ours = async (): Promise<number> => {
        const t0 = performance.now();
        await pushArtifact(
          client,
          { registry: registry.host, name: 'bench/opa-sync' },
          { name: 'bench', revision: `r${sizeMb}-${i}`, bytes },
          'latest',
        );
        return performance.now() - t0;
      };
      const oras = async (): Promise<number> => {
        const t0 = performance.now();
        await registry.oras(
          [
            'push',
            `${registry.host}/bench/oras:r${sizeMb}-${i}`,
            '--config',
            `config.json:application/vnd.oci.image.config.v1+json`,
            `${path.basename(file)}:application/vnd.oci.image.layer.v1.tar+gzip`,
          ],
          { cwd: ctx.env.dir },
        );
        return performance.now() - t0;
      };
      let opaSyncMs: number;
      let orasMs: number;
      if (i % 2 === 0) {
        opaSyncMs = await ours();
        orasMs = await oras();
      } else {
        orasMs = await oras();
        opaSyncMs = await ours();
      }
      results.push({ run: i + 1, opaSyncMs, orasMs });
    }
  } finally {
    client.close();
    await registry.stop();
  }
  const s: Record<string, Stat> = {
    opaSyncMs: stat(results.map((r) => r.opaSyncMs)),
    orasMs: stat(results.map((r) => r.orasMs)),
    ratio: stat(
      pairedRatios(
        results.map((r) => r.opaSyncMs),
        results.map((r) => r.orasMs),
      ),
    ),
  };
  ctx.log(`p14 push ${sizeMb} MB: opa-sync ${fmt(s.opaSyncMs?.median)} ms, oras ${fmt(s.orasMs?.median)} ms`);
  return {
    key: `push-${sizeMb}mb`,
    command: ctx.command,
    machine,
    runs: results,
    summary: s,
    goals: [],
    notes: [],
  };
}

interface DeltaRun {
  run: number;
  snapshotBytes: number;
  deltaBytes: number;
  deltaActivationMs: number;
  snapshotActivationMs: number;
}

function np(name: string, app: string): object {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name, namespace: `ns-${Number(name.slice(3)) % 20}`, labels: { team: 'bench' } },
    spec: {
      podSelector: { matchLabels: { app } },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ podSelector: {} }] }],
    },
  };
}

interface Side {
  registry: BundleRegistry;
  server: RunningServer;
  opa: OpaServer;
  metrics: Metrics;
  stop: AbortController;
  running: Promise<void>;
}

async function side(ctx: Context, state: DesiredState, deltas: boolean): Promise<Side> {
  const registry = new BundleRegistry();
  const metrics = new Metrics({ processMetrics: false });
  const publisher = new ReplicatedBundlePublisher({
    state,
    registry,
    name: 'k8s',
    logger: silentLogger(),
    deltas,
  });
  const stop = new AbortController();
  const running = publisher.run(stop.signal);
  registry.markBuilt();
  const server = await listenBundleServer(
    createBundleApp({
      registry,
      fleet: new Fleet(metrics, () => undefined),
      metrics,
      logger: silentLogger(),
    }),
    '127.0.0.1',
    await getPort({ host: '127.0.0.1' }),
  );
  const configFile = path.join(ctx.env.dir, `opa-config-${deltas ? 'delta' : 'snapshot'}.json`);
  writeFileSync(
    configFile,
    JSON.stringify({
      services: { s: { url: `http://127.0.0.1:${server.port}` } },
      bundles: {
        k8s: { service: 's', resource: 'bundles/k8s', polling: { long_polling_timeout_seconds: 30 } },
      },
    }),
  );
  const opa = await startOpa(ctx.env.dir, { extraArgs: [`--config-file=${configFile}`] });
  return { registry, server, opa, metrics, stop, running };
}

/** Resolves with the ms from `t0` until the OPA's value at `dataPath` has `app === want`. */
async function activated(opa: OpaServer, dataPath: string, want: string, t0: number): Promise<number> {
  for (;;) {
    const res = await opa.request(`/v1/data/${dataPath}`);
    const app = (
      JSON.parse(res.body) as { result?: { spec?: { podSelector?: { matchLabels?: { app?: string } } } } }
    ).result?.spec?.podSelector?.matchLabels?.app;
    if (app === want) return performance.now() - t0;
    if (performance.now() - t0 > 60_000) throw new Error(`${opa.name} never held ${dataPath} = ${want}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function deltaPoints(ctx: Context, counts: number[], runs: number): Promise<Point[]> {
  const machine = ctx.machine();
  const state = new DesiredState();
  state.defineCollection(KEY, ['kubernetes', 'networkpolicies']);
  for (let i = 0; i < OBJECTS; i++) {
    const obj = np(`np-${i}`, `app-${i}`) as { metadata: { name: string; namespace: string } };
    state.setEntry(KEY, [obj.metadata.namespace, obj.metadata.name], obj);
  }
  state.markCollectionSynced(KEY);
  const withDeltas = await side(ctx, state, true);
  const snapshots = await side(ctx, state, false);
  const points: Point[] = [];
  let edit = 0;
  try {
    const first = `kubernetes/networkpolicies/ns-0/np-0`;
    await activated(withDeltas.opa, first, 'app-0', performance.now());
    await activated(snapshots.opa, first, 'app-0', performance.now());
    for (const count of counts) {
      const results: DeltaRun[] = [];
      for (let r = 0; r < runs; r++) {
        edit += 1;
        const before =
          (await withDeltas.metrics.registry.getSingleMetric('opa_sync_bundle_delta_bytes_total')?.get())
            ?.values[0]?.value ?? 0;
        const t0 = performance.now();
        for (let i = 0; i < count; i++) {
          const obj = np(`np-${i}`, `edit-${edit}`) as { metadata: { name: string; namespace: string } };
          state.setEntry(KEY, [obj.metadata.namespace, obj.metadata.name], obj);
        }
        // The last object changed is the one both OPAs are watched for.
        const last = `kubernetes/networkpolicies/ns-${(count - 1) % 20}/np-${count - 1}`;
        const [deltaActivationMs, snapshotActivationMs] = await Promise.all([
          activated(withDeltas.opa, last, `edit-${edit}`, t0),
          activated(snapshots.opa, last, `edit-${edit}`, t0),
        ]);
        const after =
          (await withDeltas.metrics.registry.getSingleMetric('opa_sync_bundle_delta_bytes_total')?.get())
            ?.values[0]?.value ?? 0;
        results.push({
          run: r + 1,
          snapshotBytes: snapshots.registry.get('k8s')?.bytes.length ?? NaN,
          deltaBytes: after - before,
          deltaActivationMs,
          snapshotActivationMs,
        });
      }
      const s: Record<string, Stat> = {
        snapshotBytes: stat(results.map((x) => x.snapshotBytes)),
        deltaBytes: stat(results.map((x) => x.deltaBytes)),
        deltaActivationMs: stat(results.map((x) => x.deltaActivationMs)),
        snapshotActivationMs: stat(results.map((x) => x.snapshotActivationMs)),
      };
      ctx.log(
        `p14 delta ${count}/${OBJECTS} changed: delta ${fmt(s.deltaBytes?.median, 0)} B in ${fmt(s.deltaActivationMs?.median)} ms, snapshot ${fmt(s.snapshotBytes?.median, 0)} B in ${fmt(s.snapshotActivationMs?.median)} ms`,
      );
      points.push({
        key: `delta-${count}`,
        command: ctx.command,
        machine,
        runs: results,
        summary: s,
        goals: [],
        notes: [],
      });
    }
  } finally {
    for (const x of [withDeltas, snapshots]) {
      x.stop.abort();
      await x.running;
      await x.opa.stop();
      await x.server.close();
    }
  }
  return points;
}

export const p14: Scenario = {
  id: 'p14',
  title:
    'OCI push (1 MB, 10 MB, beside oras push) and delta vs snapshot bundles (1, 100, 1,000 changed objects)',
  defaults: '--runs 5; delta bundles: 1, 100 and 1,000 of 2,000 objects changed (--size sets the counts)',
  async run(ctx) {
    requireTool('registry');
    requireTool('oras');
    const runs = ctx.options.runs ?? 5;
    const points: Point[] = [];
    for (const mb of [1, 10]) points.push(await pushPoint(ctx, mb, runs));
    points.push(...(await deltaPoints(ctx, ctx.options.sizes ?? [1, 100, 1000], runs)));
    return points;
  },
  render(file: ScenarioFile) {
    const out = ['## P14: OCI push, and delta vs snapshot bundles', ''];
    const pushes = Object.values(file.points).filter((p) => p.key.startsWith('push-'));
    if (pushes.length > 0) {
      const p0 = pushes[0] as Point;
      out.push(
        '### OCI push to the local distribution registry',
        '',
        `\`${p0.command}\` — ${machineLine(p0.machine)}. ${p0.runs.length} runs per size, alternating opa-sync's push (\`pushArtifact\`: HEAD and upload of the config and layer blobs, HEAD and PUT of the manifest under the revision tag and \`latest\`) with \`oras push\` of the same file (config + one layer, one tag) to another repository; fresh random bytes each run, plain http on 127.0.0.1.`,
        '',
        '| bundle | opa-sync push (ms) | oras push (ms) | ratio opa-sync / oras, paired |',
        '| --- | --- | --- | --- |',
      );
      for (const p of pushes) {
        const s = p.summary as Record<string, Stat>;
        out.push(
          `| ${p.key.slice(5, -2)} MB | ${fmtStat(s.opaSyncMs)} | ${fmtStat(s.orasMs)} | ${fmtStat(s.ratio, 2)} |`,
        );
      }
      out.push('');
    }
    const deltas = Object.values(file.points).filter((p) => p.key.startsWith('delta-'));
    if (deltas.length > 0) {
      const p0 = deltas[0] as Point;
      out.push(
        '### Delta vs snapshot bundles of the replicated data bundle',
        '',
        `\`${p0.command}\` — ${machineLine(p0.machine)}. ${OBJECTS} NetworkPolicy-like objects in 20 namespaces, in opa-sync's desired state (this process); the replicated bundle publisher and bundle server of opa-sync serve two real OPAs that long-poll, one offered deltas (\`--bundle-deltas\`) and one not. A run changes the first N objects at once and measures, from the change, the time until each OPA holds the last of them, and the bytes sent (the delta bytes from \`opa_sync_bundle_delta_bytes_total\`; the snapshot's size).`,
        '',
        '| changed objects | delta bytes | snapshot bytes | delta: change → OPA holds it (ms) | snapshot: change → OPA holds it (ms) |',
        '| --- | --- | --- | --- | --- |',
      );
      for (const p of deltas) {
        const s = p.summary as Record<string, Stat>;
        out.push(
          `| ${p.key.slice(6)} | ${fmtStat(s.deltaBytes, 0)} | ${fmtStat(s.snapshotBytes, 0)} | ${fmtStat(s.deltaActivationMs)} | ${fmtStat(s.snapshotActivationMs)} |`,
        );
      }
      out.push('');
    }
    return out.join('\n');
  },
};
