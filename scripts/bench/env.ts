// The real components a benchmark runs against, started from the test harness: a control plane
// (etcd + kube-apiserver; the controller manager is stopped once it has proven the cluster works, so
// that its informers do not compete for the 2 cores), fresh OPAs, and opa-sync itself as the built
// `node dist/main.js` — never through tsx, whose loader adds start-up time that users do not pay.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import getPort from 'get-port';
import { createCa, type CertificateAuthority } from '../../test/harness/certs.js';
import { startControlPlane, type ControlPlane } from '../../test/harness/control-plane.js';
import { startOpa, type OpaOptions, type OpaServer } from '../../test/harness/opa.js';
import { waitOpaSyncReady } from '../../test/harness/opa-sync.js';
import { startProcess, type ManagedProcess } from '../../test/harness/processes.js';
import { waitFor } from '../../test/harness/wait.js';
import { KubeHttp } from './kube.js';
import { OpaHttp } from './opa-http.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const MAIN_JS = path.join(REPO, 'dist', 'main.js');

export interface Cluster {
  cp: ControlPlane;
  kube: KubeHttp;
}

export interface Opa {
  server: OpaServer;
  http: OpaHttp;
  stop(): Promise<void>;
}

export interface OpaSync {
  process: ManagedProcess;
  /** performance.now() just before the spawn. */
  spawnedAt: number;
  opsUrl: string;
  waitReady(timeoutMs?: number): Promise<number>;
  /** With `--profile`: writes a heap snapshot now (SIGUSR2) and waits until it is complete; else nothing. */
  heapSnapshot(): Promise<void>;
  stop(): Promise<void>;
}

/** Preloaded into a profiled opa-sync: records its event-loop delay and writes it at exit. */
const ELD_PRELOAD = path.join(REPO, 'scripts', 'bench', 'perf-eld.mjs');

/**
 * Everything one benchmark invocation starts, in one temporary folder; `close()` stops it all.
 * With `profileDir` (`npm run bench -- … --profile DIR`) every opa-sync runs under `--cpu-prof`, records its
 * event-loop delay (perf-eld.mjs) and can be asked for heap snapshots, each in `DIR/<opa-sync-N>/`; read
 * them with `npx tsx scripts/bench/perf-profile.ts DIR`.
 */
export class BenchEnv {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-bench-'));
  constructor(private readonly profileDir?: string) {}

  private ca: Promise<CertificateAuthority> | undefined;
  private readonly stops: (() => Promise<void>)[] = [];
  private counter = 0;

  private certificateAuthority(): Promise<CertificateAuthority> {
    this.ca ??= createCa(this.dir);
    return this.ca;
  }

  /** A new control plane (each scenario gets its own: no state carried from one to the next). */
  async cluster(): Promise<Cluster> {
    const cpDir = path.join(this.dir, `cluster-${++this.counter}`);
    mkdirSync(cpDir, { recursive: true });
    const cp = await startControlPlane(cpDir, await this.certificateAuthority());
    const kube = new KubeHttp(cp.server, cp.ca.pem, cp.adminToken);
    this.stops.push(async () => {
      kube.close();
      await cp.stop();
    });
    await cp.processes.controllerManager.stop();
    return { cp, kube };
  }

  /** A fresh, empty OPA on a free loopback port (options: e.g. a configuration file that pulls bundles). */
  async opa(options: OpaOptions = {}): Promise<Opa> {
    const server = await startOpa(this.dir, options);
    const opaHttp = new OpaHttp(server.url);
    let stopped = false;
    const stop = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      opaHttp.close();
      await server.stop();
    };
    this.stops.push(stop);
    return { server, http: opaHttp, stop };
  }

  /** Spawns `node dist/main.js <args> --health-endpoint=127.0.0.1:<free port>`. */
  async opaSync(args: readonly string[], cwd?: string): Promise<OpaSync> {
    const port = await getPort({ host: '127.0.0.1' });
    const opsUrl = `http://127.0.0.1:${port}`;
    const name = `opa-sync-${++this.counter}`;
    const profile = this.profileDir === undefined ? undefined : path.join(this.profileDir, name);
    const nodeArgs: string[] = [];
    const env: Record<string, string> = {};
    if (profile !== undefined) {
      mkdirSync(profile, { recursive: true });
      nodeArgs.push(
        '--cpu-prof',
        `--cpu-prof-dir=${profile}`,
        '--heapsnapshot-signal=SIGUSR2',
        `--diagnostic-dir=${profile}`,
        `--import=${ELD_PRELOAD}`,
      );
      env['PERF_ELD_FILE'] = path.join(profile, 'eld.json');
    }
    const spawnedAt = performance.now();
    const proc = startProcess(
      name,
      process.execPath,
      [...nodeArgs, MAIN_JS, `--health-endpoint=127.0.0.1:${port}`, ...args],
      this.dir,
      env,
      cwd,
    );
    const stop = (): Promise<void> => proc.stop();
    this.stops.push(stop);
    return {
      process: proc,
      spawnedAt,
      opsUrl,
      async waitReady(timeoutMs = 120_000) {
        await waitOpaSyncReady(proc, opsUrl, { timeoutMs, intervalMs: 5 });
        return performance.now();
      },
      async heapSnapshot() {
        if (profile !== undefined) await heapSnapshot(proc.pid, profile);
      },
      stop,
    };
  }

  /** Registers how to stop something started outside these helpers (a server of the serving scenarios). */
  onClose(stop: () => Promise<void>): void {
    this.stops.push(stop);
  }

  /** Stops whatever is still running (in reverse order of start) and removes the folder unless kept. */
  async close({ keep = false }: { keep?: boolean } = {}): Promise<void> {
    for (const stop of this.stops.reverse()) {
      try {
        await stop();
      } catch (err) {
        process.stderr.write(`bench: stopping failed: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
    this.stops.length = 0;
    if (keep) process.stderr.write(`bench: logs kept in ${this.dir}\n`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Signals `pid` to write a heap snapshot into `dir`, and waits until the file stops growing. */
async function heapSnapshot(pid: number, dir: string): Promise<void> {
  const snapshots = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot'));
  const before = snapshots().length;
  process.kill(pid, 'SIGUSR2');
  await waitFor(
    `a heap snapshot of ${pid} in ${dir}`,
    (() => {
      let lastSize = -1;
      return () => {
        const files = snapshots();
        if (files.length <= before) return undefined;
        const size = statSync(path.join(dir, files[files.length - 1] as string)).size;
        const done = size > 0 && size === lastSize;
        lastSize = size;
        return done ? true : undefined;
      };
    })(),
    { timeoutMs: 120_000, intervalMs: 500 },
  );
}

/** A sleep that keeps no handle alive beyond its own timer. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
