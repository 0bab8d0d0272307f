// The test harness: one real OPA and one real control plane per test run, started on first use and
// shared by every test file; more OPA instances on request. Tests isolate themselves by namespace.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
import { requireTool } from '../../scripts/tools.js';
import { createCa, type CertificateAuthority } from './certs.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { startOpa, type OpaOptions, type OpaServer } from './opa.js';
import { runDir } from './run-dir.js';

export type { ControlPlane } from './control-plane.js';
export type { OpaServer, OpaOptions } from './opa.js';
export { waitFor } from './wait.js';
export { httpRequest } from './http.js';

const execFileAsync = promisify(execFile);

// On globalThis: mocha may load this module twice (the hooks file through require, specs through
// import); both must share one control plane, one shared OPA and one list of extra OPAs.
interface HarnessState {
  ca?: Promise<CertificateAuthority>;
  opa?: Promise<OpaServer>;
  controlPlane?: Promise<ControlPlane>;
  startedOpa?: OpaServer;
  startedControlPlane?: ControlPlane;
  extraOpas: Set<OpaServer>;
}
const STATE = Symbol.for('opa-sync.test-harness');
const shared = globalThis as typeof globalThis & { [STATE]?: HarnessState };
const state: HarnessState = (shared[STATE] ??= { extraOpas: new Set() });

/** The run's certificate authority: signs the API server's, OPA's and webhooks' certificates. */
export function testCa(): Promise<CertificateAuthority> {
  state.ca ??= createCa(runDir());
  return state.ca;
}

// A failed start is remembered: every test that needs the component fails with the same reason.
function memo<T>(start: () => Promise<T>): Promise<T> {
  const p = start();
  p.catch(() => undefined);
  return p;
}

/** The shared OPA of the run (plain HTTP, no authentication). Tests must not assume it is empty. */
export function sharedOpa(): Promise<OpaServer> {
  state.opa ??= memo(async () => {
    state.startedOpa = await startOpa(runDir());
    return state.startedOpa;
  });
  return state.opa;
}

/** Another OPA, owned by the caller (stopped at the end of the run if the caller does not). */
export async function extraOpa(options: OpaOptions = {}): Promise<OpaServer> {
  const server = await startOpa(runDir(), options);
  state.extraOpas.add(server);
  // The same object (its `process` follows restarts), with a stop that also forgets it.
  const stop = server.stop.bind(server);
  server.stop = async () => {
    state.extraOpas.delete(server);
    await stop();
  };
  return server;
}

/** The shared control plane of the run. */
export function controlPlane(): Promise<ControlPlane> {
  state.controlPlane ??= memo(async () => {
    state.startedControlPlane = await startControlPlane(runDir(), await testCa());
    return state.startedControlPlane;
  });
  return state.controlPlane;
}

/** Creates a namespace with a unique name (`<prefix>-<random>`) for one test or suite. */
export async function createNamespace(prefix: string): Promise<string> {
  const cp = await controlPlane();
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  await cp
    .kubeConfig()
    .makeApiClient(CoreV1Api)
    .createNamespace({
      body: { metadata: { name, labels: { 'opa-sync-test': 'true' } } },
    });
  return name;
}

/** Runs the real kubectl against the shared control plane; resolves with stdout, rejects with stderr. */
export async function kubectl(args: string[], input?: string): Promise<string> {
  const cp = await controlPlane();
  const binary = requireTool('kubectl');
  const child = execFileAsync(binary, [`--kubeconfig=${cp.kubeconfigFile}`, ...args], { timeout: 60_000 });
  if (input !== undefined) {
    child.child.stdin?.end(input);
  }
  try {
    return (await child).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`kubectl ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real kubectl and resolves with its exit code and output, failing or not. */
export async function kubectlRun(
  args: string[],
  options: { cwd?: string; input?: string } = {},
): Promise<KubectlResult> {
  const cp = await controlPlane();
  const binary = requireTool('kubectl');
  const child = execFileAsync(binary, [`--kubeconfig=${cp.kubeconfigFile}`, ...args], {
    timeout: 60_000,
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  if (options.input !== undefined) child.child.stdin?.end(options.input);
  try {
    const { stdout, stderr } = await child;
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string; message: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

/** Stops everything the harness started. */
export async function stopHarness(): Promise<void> {
  await Promise.all([...state.extraOpas].map((o) => o.stop()));
  state.extraOpas.clear();
  await state.startedOpa?.stop();
  await state.startedControlPlane?.stop();
}
