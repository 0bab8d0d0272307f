// The real components opa-sync is tested against (OPA, the other OPA versions of the version matrix,
// etcd, kube-apiserver, kube-controller-manager, kubectl, the CNCF distribution registry and the oras
// client for OCI publishing), built from Go modules once per machine into a versioned cache outside the
// work tree.
//
// Run alone with `npm run tools`; `npm test` runs it first and it returns at once when nothing is
// missing. Each binary can be brought by the user instead (OPA_BIN, ETCD_BIN, KUBE_APISERVER_BIN,
// KUBE_CONTROLLER_MANAGER_BIN, KUBECTL_BIN, REGISTRY_BIN, ORAS_BIN), and OPA_SYNC_TOOLS_DIR moves the whole cache. A build
// prints its steps with the time each took the last time here (build-progress.ts), and can be stopped.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isExecutable } from '../src/util/find-binary.js';
import { OPA_VERSION, toolsCacheDir as cacheDirOf } from '../src/util/tools-cache.js';
import { formatDuration, timedStep } from './build-progress.js';

export { OPA_VERSION };
/**
 * The other OPA versions that the version matrix (test/e2e/opa-matrix.test.ts) runs opa-sync against,
 * beside OPA_VERSION, each built into `opa-<version>/opa` of the cache: the last 0.x (Rego v0 by
 * default), the newest 1.0.x patch the Go module proxy serves, and the newest 1.x it serves. They never
 * replace the default `opa` (requireTool('opa')) that everything else uses.
 */
export const MATRIX_OPA_VERSIONS = ['v0.70.0', 'v1.0.1', 'v1.22.4'] as const;
export type MatrixOpaVersion = (typeof MATRIX_OPA_VERSIONS)[number];
export const KUBERNETES_VERSION = 'v1.34.4';
/** The CNCF distribution registry that OCI publishing is tested against. */
export const REGISTRY_VERSION = 'v3.1.2';
/** The oras CLI: an independent client that fetches what opa-sync pushed. */
export const ORAS_VERSION = 'v1.3.6';

/** The tools that are one `go install` of a Go module each, into a cache folder of their own. */
const GO_INSTALLED = {
  registry: {
    module: `github.com/distribution/distribution/v3/cmd/registry@${REGISTRY_VERSION}`,
    dir: `registry-${REGISTRY_VERSION}`,
    title: `building the distribution registry ${REGISTRY_VERSION}`,
    version: REGISTRY_VERSION,
  },
  oras: {
    module: `oras.land/oras/cmd/oras@${ORAS_VERSION}`,
    dir: `oras-${ORAS_VERSION}`,
    title: `building oras ${ORAS_VERSION}`,
    version: ORAS_VERSION,
  },
} as const;
type GoInstalled = keyof typeof GO_INSTALLED;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const k8sModuleDir = path.join(repoRoot, 'tools', 'k8s');

export type ToolName =
  'opa' | 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kubectl' | 'registry' | 'oras';
export const TOOL_NAMES: readonly ToolName[] = [
  'opa',
  'etcd',
  'kube-apiserver',
  'kube-controller-manager',
  'kubectl',
  'registry',
  'oras',
];

/** The environment variable that points at a user-supplied binary for each tool. */
export const TOOL_ENV: Readonly<Record<ToolName, string>> = {
  opa: 'OPA_BIN',
  etcd: 'ETCD_BIN',
  'kube-apiserver': 'KUBE_APISERVER_BIN',
  'kube-controller-manager': 'KUBE_CONTROLLER_MANAGER_BIN',
  kubectl: 'KUBECTL_BIN',
  registry: 'REGISTRY_BIN',
  oras: 'ORAS_BIN',
};

function isGoInstalled(name: ToolName): name is GoInstalled {
  return Object.hasOwn(GO_INSTALLED, name);
}

export interface ToolLocation {
  name: ToolName;
  path: string;
  /** Where the path came from: the user's environment variable or the build cache. */
  from: 'env' | 'cache';
  present: boolean;
}

type Env = Readonly<Record<string, string | undefined>>;

export function toolsCacheDir(env: Env = process.env): string {
  return cacheDirOf(env, homedir());
}

/** The cache folder of the Kubernetes binaries: keyed by version and by the wrapper module's pins. */
function k8sDirName(): string {
  const hash = createHash('sha256');
  for (const file of ['go.mod', 'go.sum']) hash.update(readFileSync(path.join(k8sModuleDir, file)));
  return `k8s-${KUBERNETES_VERSION}-${hash.digest('hex').slice(0, 12)}`;
}

/** Where each tool is (or will be once built). Reads no configuration other than the given env. */
export function locateTools(env: Env = process.env): ToolLocation[] {
  const cache = toolsCacheDir(env);
  return TOOL_NAMES.map((name) => {
    const fromEnv = env[TOOL_ENV[name]];
    if (fromEnv) {
      const file = path.resolve(fromEnv);
      return { name, path: file, from: 'env', present: isExecutable(file) };
    }
    const dir =
      name === 'opa' ? `opa-${OPA_VERSION}` : isGoInstalled(name) ? GO_INSTALLED[name].dir : k8sDirName();
    const file = path.join(cache, dir, name);
    return { name, path: file, from: 'cache', present: isExecutable(file) };
  });
}

/** The path of one tool, or an error that names the binary, how to build it and how to bring one. */
export function requireTool(name: ToolName, env: Env = process.env): string {
  const found = locateTools(env).find((t) => t.name === name);
  if (!found) throw new Error(`unknown tool ${name}`);
  if (!found.present) {
    const how =
      found.from === 'env'
        ? `${TOOL_ENV[name]} points at ${found.path}, which is not an executable file`
        : `${found.path} is missing: run \`npm run tools\` to build it, or set ${TOOL_ENV[name]} to a ${name} binary`;
    throw new Error(`the ${name} binary is not available: ${how}`);
  }
  return found.path;
}

/** Where the tools script puts (or has put) OPA `version` of the matrix. */
export function locateOpaVersion(version: MatrixOpaVersion, env: Env = process.env): ToolLocation {
  const file = path.join(toolsCacheDir(env), `opa-${version}`, 'opa');
  return { name: 'opa', path: file, from: 'cache', present: isExecutable(file) };
}

/**
 * The opa binary of one version: OPA_VERSION is the default `opa` (OPA_BIN, else the cache); another
 * version of the matrix is the cache's, or an error that says how to build it.
 */
export function requireOpa(version: string, env: Env = process.env): string {
  if (version === OPA_VERSION) return requireTool('opa', env);
  const matrix = MATRIX_OPA_VERSIONS.find((v) => v === version);
  if (matrix === undefined) {
    throw new Error(
      `OPA ${version} is not one the tools script builds: ${[OPA_VERSION, ...MATRIX_OPA_VERSIONS].join(', ')}`,
    );
  }
  const found = locateOpaVersion(matrix, env);
  if (!found.present) {
    throw new Error(
      `the opa binary of OPA ${version} is not available: ${found.path} is missing: run \`npm run tools\` to build it`,
    );
  }
  return found.path;
}

export interface EnsureOptions {
  /** Stops a build: go and its compilers are ended, nothing half-built is kept. */
  signal?: AbortSignal | undefined;
  /** Where the `[tools]` lines go (default stdout); go's own output goes to this process's stdout/stderr. */
  out?: NodeJS.WritableStream | undefined;
  /** How often a running step prints its elapsed time (default 15 s). */
  progressEveryMs?: number | undefined;
}

/** How one ensureTools() call builds: the environment go runs in, and where progress goes. */
interface Builder {
  env: Env;
  cacheDir: string;
  out: NodeJS.WritableStream;
  signal: AbortSignal | undefined;
  everyMs: number | undefined;
  log(message: string): void;
}

function checkGo(b: Builder): void {
  const go = spawnSync('go', ['version'], { encoding: 'utf8', env: b.env });
  if (go.error || go.status !== 0) {
    throw new Error(
      'Go is needed to build the test tools but `go` was not found on PATH. Install Go 1.24 or newer ' +
        '(https://go.dev/doc/install), or point OPA_BIN, ETCD_BIN, KUBE_APISERVER_BIN, ' +
        'KUBE_CONTROLLER_MANAGER_BIN and KUBECTL_BIN at binaries you already have.',
    );
  }
  b.log(`using ${go.stdout.trim()}`);
}

/**
 * Runs go. With a signal, in a process group of its own, so that stopping it ends its compilers and
 * linkers too, not only the go command (the caller forwards Ctrl-C through the signal: the group no
 * longer gets the terminal's). Without one, as any child, in the caller's group.
 */
function run(
  b: Builder,
  cmd: string,
  args: string[],
  cwd: string,
  extraEnv: Record<string, string>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    b.signal?.throwIfAborted();
    const child = spawn(cmd, args, {
      cwd,
      stdio: ['ignore', 'inherit', 'inherit'],
      detached: b.signal !== undefined,
      // GOTOOLCHAIN=local: fail fast rather than download another Go toolchain behind the user's back.
      env: {
        ...b.env,
        CGO_ENABLED: '0',
        GOTOOLCHAIN: 'local',
        GOFLAGS: '-buildvcs=false',
        ...extraEnv,
      },
    });
    const stop = (): void => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          // the group is gone already
        }
      }
    };
    b.signal?.addEventListener('abort', stop, { once: true });
    child.on('error', (err) => {
      b.signal?.removeEventListener('abort', stop);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      b.signal?.removeEventListener('abort', stop);
      if (b.signal?.aborted) reject(new Error(`${cmd} stopped`, { cause: b.signal.reason }));
      else if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${String(code)}`})`));
    });
  });
}

/** Builds into a scratch folder beside the target and renames it in place, so a broken build never counts. */
async function buildInto(targetDir: string, build: (scratch: string) => Promise<void>): Promise<void> {
  const scratch = `${targetDir}.partial-${process.pid}`;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  try {
    await build(scratch);
    rmSync(targetDir, { recursive: true, force: true });
    renameSync(scratch, targetDir);
  } catch (err) {
    rmSync(scratch, { recursive: true, force: true });
    throw err;
  }
}

async function buildOpa(
  b: Builder,
  version: string,
  targetDir: string,
  index: number,
  count: number,
): Promise<void> {
  // The default OPA and the matrix's each have their own estimate: the first builds OPA's modules, the
  // others mostly reuse them from go's build cache.
  const key = version === OPA_VERSION ? 'opa' : 'opa-matrix';
  await timedStep(
    { ...stepOptions(b, index, count), key, title: `building OPA ${version}`, what: version },
    () =>
      buildInto(targetDir, (scratch) =>
        run(
          b,
          'go',
          ['install', '-trimpath', '-ldflags=-s -w', `github.com/open-policy-agent/opa@${version}`],
          repoRoot,
          { GOBIN: scratch },
        ),
      ),
  );
}

async function buildGoInstalled(
  b: Builder,
  tool: GoInstalled,
  targetDir: string,
  index: number,
  count: number,
): Promise<void> {
  const spec = GO_INSTALLED[tool];
  await timedStep({ ...stepOptions(b, index, count), key: tool, title: spec.title, what: spec.version }, () =>
    buildInto(targetDir, (scratch) =>
      run(b, 'go', ['install', '-trimpath', '-ldflags=-s -w', spec.module], repoRoot, { GOBIN: scratch }),
    ),
  );
}

async function buildKubernetes(b: Builder, targetDir: string, index: number, count: number): Promise<void> {
  const minor = KUBERNETES_VERSION.split('.')[1] ?? '';
  const ldflags = [
    '-s -w',
    `-X k8s.io/component-base/version.gitVersion=${KUBERNETES_VERSION}`,
    '-X k8s.io/component-base/version.gitMajor=1',
    `-X k8s.io/component-base/version.gitMinor=${minor}`,
    '-X k8s.io/component-base/version.gitTreeState=clean',
  ].join(' ');
  const step = {
    ...stepOptions(b, index, count),
    key: 'kubernetes',
    title: `building kube-apiserver, kube-controller-manager, kubectl ${KUBERNETES_VERSION} and etcd (tools/k8s/go.mod)`,
    what: KUBERNETES_VERSION,
  } as const;
  await timedStep(step, () =>
    buildInto(targetDir, async (scratch) => {
      await run(
        b,
        'go',
        [
          'build',
          '-trimpath',
          `-ldflags=${ldflags}`,
          '-o',
          `${scratch}/`,
          'k8s.io/kubernetes/cmd/kube-apiserver',
          'k8s.io/kubernetes/cmd/kube-controller-manager',
          'k8s.io/kubernetes/cmd/kubectl',
        ],
        k8sModuleDir,
        {},
      );
      b.log(`step ${index}/${count}: now etcd, at the version Kubernetes selects`);
      // -o names the binary: the package path ends in /v3, which would otherwise name it "server".
      await run(
        b,
        'go',
        [
          'build',
          '-trimpath',
          '-ldflags=-s -w',
          '-o',
          path.join(scratch, 'etcd'),
          'go.etcd.io/etcd/server/v3',
        ],
        k8sModuleDir,
        {},
      );
    }),
  );
}

function stepOptions(b: Builder, index: number, count: number) {
  return { cacheDir: b.cacheDir, out: b.out, everyMs: b.everyMs, index, count };
}

/**
 * Builds whatever of the named tools is missing from the cache. Tools brought by env are never built.
 * `env` is also the environment go runs in.
 */
export async function ensureTools(
  only: readonly ToolName[] = TOOL_NAMES,
  env: Env = process.env,
  options: EnsureOptions = {},
  opaVersions: readonly MatrixOpaVersion[] = [],
): Promise<void> {
  const wanted = [
    ...locateTools(env).filter((t) => only.includes(t.name)),
    ...opaVersions.map((v) => locateOpaVersion(v, env)),
  ];
  const broken = wanted.filter((t) => t.from === 'env' && !t.present);
  if (broken.length > 0) {
    throw new Error(broken.map((t) => `${TOOL_ENV[t.name]}=${t.path} is not an executable file`).join('; '));
  }
  const missing = wanted.filter((t) => !t.present);
  if (missing.length === 0) return;

  const out = options.out ?? process.stdout;
  const b: Builder = {
    env,
    cacheDir: toolsCacheDir(env),
    out,
    signal: options.signal,
    everyMs: options.progressEveryMs,
    log: (message) => {
      out.write(`[tools] ${message}\n`);
    },
  };
  // The matrix's OPAs by version; the default one is plain `opa`.
  const label = (t: ToolLocation): string => {
    const dir = path.basename(path.dirname(t.path));
    return t.name === 'opa' && t.from === 'cache' && dir !== `opa-${OPA_VERSION}`
      ? dir.replace('-', ' ')
      : t.name;
  };
  b.log(`missing: ${missing.map(label).join(', ')} (cache: ${b.cacheDir})`);
  checkGo(b);
  const started = Date.now();
  const dirs = [...new Set(missing.map((t) => path.dirname(t.path)))];
  for (const [i, dir] of dirs.entries()) {
    mkdirSync(path.dirname(dir), { recursive: true });
    const goInstalled = (Object.keys(GO_INSTALLED) as GoInstalled[]).find(
      (tool) => GO_INSTALLED[tool].dir === path.basename(dir),
    );
    const base = path.basename(dir);
    if (base.startsWith('opa-')) await buildOpa(b, base.slice('opa-'.length), dir, i + 1, dirs.length);
    else if (goInstalled !== undefined) await buildGoInstalled(b, goInstalled, dir, i + 1, dirs.length);
    else await buildKubernetes(b, dir, i + 1, dirs.length);
  }
  const stillMissing = [
    ...locateTools(env).filter((t) => only.includes(t.name)),
    ...opaVersions.map((v) => locateOpaVersion(v, env)),
  ].filter((t) => !t.present);
  if (stillMissing.length > 0) {
    throw new Error(
      `the build finished but these are missing: ${stillMissing.map((t) => t.path).join(', ')}`,
    );
  }
  if (dirs.length > 1) b.log(`built in ${formatDuration(Date.now() - started)}`);
}

async function main(argv: string[]): Promise<void> {
  const quiet = argv.includes('--quiet-if-present');
  const onlyArg = argv.find((a) => a.startsWith('--only='));
  // `--only=opa,opa-matrix`: opa-matrix names the other OPA versions of the version matrix.
  const named = onlyArg?.slice('--only='.length).split(',');
  for (const n of named ?? []) {
    if (n !== 'opa-matrix' && !(TOOL_NAMES as readonly string[]).includes(n)) {
      throw new Error(`--only: unknown tool ${n}`);
    }
  }
  const only = named ? TOOL_NAMES.filter((n) => named.includes(n)) : TOOL_NAMES;
  const opaVersions = named === undefined || named.includes('opa-matrix') ? MATRIX_OPA_VERSIONS : [];
  const controller = new AbortController();
  for (const name of ['SIGINT', 'SIGTERM'] as const) process.once(name, () => controller.abort(name));
  await ensureTools(only, process.env, { signal: controller.signal }, opaVersions);
  const located = locateTools().filter((t) => only.includes(t.name));
  if (!quiet) {
    for (const t of located) {
      process.stdout.write(`[tools] ${t.name}: ${t.path}${t.from === 'env' ? ' (from env)' : ''}\n`);
    }
    for (const v of opaVersions) process.stdout.write(`[tools] opa ${v}: ${locateOpaVersion(v).path}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`[tools] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
