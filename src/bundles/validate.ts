// Validates a candidate set of Rego modules with the real OPA compiler (`opa check`), never a parser of
// our own, and reads each module's package (`opa inspect`) for the bundle's roots. Errors come back per
// module, in OPA's own shape, with `location.file` set to the module's id (its bundle path without '/').
//
// `checkModules` checks a set from scratch in a temporary folder; the incremental checker
// (rego-checker.ts) keeps a folder and what compiled between builds, and runs the same commands, through
// the same functions here, over the modules an edit can affect.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { LoadError } from '../model/outcome.js';
import { OpaSyncError, messageOf } from '../util/errors.js';
import { opaMajorVersion, regoVersionFlags } from './opa-rego-flags.js';

const run = promisify(execFile);
/** OPA's reports on a thousand modules (ASTs, errors) are megabytes; execFile's default is 1 MiB. */
const MAX_OUTPUT = 512 * 1024 * 1024;

export interface CandidateModule {
  /** Bundle path, e.g. `/opa/my-cm/a.rego`; already checked by safe-names. */
  path: string;
  text: string;
}

/**
 * A package: as `opa inspect` prints it without `data.` (`a.b`, `a["b-c"]`), or its segments as OPA's
 * parser gives them. `deriveRoots` takes both.
 */
export type PackagePath = string | readonly string[];

export interface CheckResult {
  /** OPA's errors by module path; empty when everything compiles together. */
  errors: Map<string, LoadError[]>;
  /** Package by module path; filled only when everything compiles. */
  packages: Map<string, PackagePath>;
}

interface OpaError {
  message?: string;
  code?: string;
  location?: { file?: string; row?: number; col?: number };
}

export class OpaCheckError extends OpaSyncError {}

/** How a command ended that ran: its exit status and output. */
export interface OpaExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command; resolves with its status and output whatever the status, rejects (with an error that
 * has no numeric `code`) when it could not run, timed out, or `signal` stopped it (it is killed).
 */
export type OpaExec = (
  file: string,
  args: readonly string[],
  options: { cwd?: string | undefined; timeoutMs: number; signal?: AbortSignal | undefined },
) => Promise<OpaExecResult>;

/** `OpaExec` by execFile, from this process. */
export const execHere: OpaExec = (file, args, { cwd, timeoutMs, signal }) =>
  run(file, [...args], {
    cwd,
    timeout: timeoutMs,
    maxBuffer: MAX_OUTPUT,
    encoding: 'utf8',
    ...(signal === undefined ? {} : { signal }),
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: unknown) => {
      const failed = err as { code?: unknown; stdout?: string; stderr?: string };
      if (typeof failed.code !== 'number') throw err;
      return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
    },
  );

/** What a run of `opa` needs besides its arguments. */
export interface OpaRun {
  opaBin: string;
  /** The folder the command runs in (module files are named relative to it). */
  cwd: string;
  timeoutMs: number;
  /** Stops the command (the process is killed) when it aborts. */
  signal?: AbortSignal | undefined;
  /** How to run it (default `execHere`). */
  exec?: OpaExec | undefined;
}

/** The module path a location.file of `opa check` run in `dir` refers to. */
function modulePathOf(file: string, dir: string): string {
  const relative = path.isAbsolute(file) ? path.relative(dir, file) : path.normalize(file);
  return `/${relative.split(path.sep).join('/')}`;
}

/** The file of a module below `dir`. */
export function moduleFile(dir: string, modulePath: string): string {
  return path.join(dir, ...modulePath.split('/').filter((s) => s !== ''));
}

/** A module's file name as `opa check` is given it (relative, '/'-separated, as a walk of '.' names it). */
export function moduleArg(modulePath: string): string {
  return modulePath
    .split('/')
    .filter((s) => s !== '')
    .join('/');
}

/**
 * Runs `opa check` on `targets` (files relative to `cwd`, or '.') and returns OPA's errors grouped per
 * module; an empty map when they compile. Throws OpaCheckError when opa cannot run or gives no report.
 */
export async function runCheck(
  opa: OpaRun,
  targets: readonly string[],
  { v0 }: { v0: boolean | undefined },
): Promise<Map<string, LoadError[]>> {
  const flags = regoVersionFlags(await opaMajorVersion(opa.opaBin), v0);
  const exec = opa.exec ?? execHere;
  const check = await exec(opa.opaBin, ['check', '--format', 'json', ...flags, ...targets], opa).catch(
    (err: unknown) => {
      throw new OpaCheckError('opa_check_failed', `could not run ${opa.opaBin} check: ${messageOf(err)}`, {
        cause: err,
      });
    },
  );
  const errors = new Map<string, LoadError[]>();
  if (check.code === 0) return errors;
  const text = `${check.stdout}${check.stderr}`;
  const start = text.indexOf('{');
  let parsed: { errors?: OpaError[] };
  try {
    parsed = JSON.parse(text.slice(start)) as { errors?: OpaError[] };
  } catch (err) {
    throw new OpaCheckError(
      'opa_check_failed',
      `opa check failed without a JSON report: ${text.slice(0, 300)}`,
      { cause: err },
    );
  }
  // Grouped per module in the shape of OPA's own answer to a failed policy PUT.
  const byModule = new Map<string, unknown[]>();
  for (const e of parsed.errors ?? []) {
    const modulePath = modulePathOf(e.location?.file ?? '', opa.cwd);
    const id = modulePath.slice(1);
    const error = {
      code: e.code ?? 'rego_error',
      message: e.message ?? '',
      ...(e.location === undefined
        ? {}
        : { location: { file: id, row: e.location.row, col: e.location.col } }),
    };
    byModule.set(modulePath, [...(byModule.get(modulePath) ?? []), error]);
  }
  for (const [modulePath, moduleErrors] of byModule) {
    errors.set(modulePath, [
      {
        code: 'invalid_parameter',
        message: 'error(s) occurred while compiling module(s)',
        errors: moduleErrors,
      },
    ]);
  }
  if (errors.size === 0) {
    throw new OpaCheckError('opa_check_failed', `opa check failed: ${text.slice(0, 300)}`);
  }
  return errors;
}

/** The codes of OPA's errors in a `runCheck` result, all of them. */
export function errorCodes(errors: Map<string, LoadError[]>): string[] {
  return [...errors.values()].flatMap((list) =>
    list.flatMap((e) => (e.errors ?? []).map((inner) => (inner as { code?: string }).code ?? '')),
  );
}

/** Runs `opa inspect` on `cwd` and returns the package of every module file in it, by module path. */
export async function runInspect(
  opa: OpaRun,
  { v0 }: { v0: boolean | undefined },
): Promise<Map<string, string>> {
  const flags = regoVersionFlags(await opaMajorVersion(opa.opaBin), v0);
  let namespaces: Record<string, string[]> | undefined;
  try {
    const inspected = await (opa.exec ?? execHere)(
      opa.opaBin,
      ['inspect', '--format', 'json', ...flags, '.'],
      opa,
    );
    if (inspected.code !== 0)
      throw new Error(`exit status ${inspected.code}: ${inspected.stderr.slice(0, 300)}`);
    ({ namespaces } = JSON.parse(inspected.stdout) as { namespaces?: Record<string, string[]> });
  } catch (err) {
    throw new OpaCheckError('opa_check_failed', `opa inspect failed: ${messageOf(err)}`, { cause: err });
  }
  const packages = new Map<string, string>();
  for (const [namespace, files] of Object.entries(namespaces ?? {})) {
    for (const file of files) packages.set(modulePathOf(file, opa.cwd), namespace.replace(/^data\./, ''));
  }
  return packages;
}

/**
 * Checks the modules together, from scratch: written to a temporary folder, `opa check`, then (when
 * they compile) `opa inspect` for their packages.
 */
export async function checkModules(
  opaBin: string,
  modules: readonly CandidateModule[],
  { v0, timeoutMs = 30_000 }: { v0?: boolean | undefined; timeoutMs?: number } = {},
): Promise<CheckResult> {
  const result: CheckResult = { errors: new Map(), packages: new Map() };
  if (modules.length === 0) return result;
  const dir = await mkdtemp(path.join(tmpdir(), 'opa-sync-check-'));
  try {
    for (const m of modules) {
      const file = moduleFile(dir, m.path);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, m.text);
    }
    const opa = { opaBin, cwd: dir, timeoutMs };
    result.errors = await runCheck(opa, ['.'], { v0 });
    if (result.errors.size > 0) return result;
    result.packages = await runInspect(opa, { v0 });
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
