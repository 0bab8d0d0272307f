// Validates a candidate set of Rego modules with the real OPA compiler (`opa check`), never a parser of
// our own, and reads each module's package (`opa inspect`) for the bundle's roots. Errors come back per
// module, in OPA's own shape, with `location.file` set to the module's id (its bundle path without '/').
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { LoadError } from '../model/outcome.js';
import { OpaSyncError, messageOf } from '../util/errors.js';

const run = promisify(execFile);

export interface CandidateModule {
  /** Bundle path, e.g. `/opa/my-cm/a.rego`; already checked by safe-names. */
  path: string;
  text: string;
}

export interface CheckResult {
  /** OPA's errors by module path; empty when everything compiles together. */
  errors: Map<string, LoadError[]>;
  /** Package (`kubernetes.admission`) by module path; filled only when everything compiles. */
  packages: Map<string, string>;
}

interface OpaError {
  message?: string;
  code?: string;
  location?: { file?: string; row?: number; col?: number };
}

export class OpaCheckError extends OpaSyncError {}

/** The module path a location.file of `opa check` run in `dir` refers to. */
function modulePathOf(file: string, dir: string): string {
  const relative = path.isAbsolute(file) ? path.relative(dir, file) : path.normalize(file);
  return `/${relative.split(path.sep).join('/')}`;
}

export async function checkModules(
  opaBin: string,
  modules: readonly CandidateModule[],
  { v0 = false, timeoutMs = 30_000 }: { v0?: boolean; timeoutMs?: number } = {},
): Promise<CheckResult> {
  const result: CheckResult = { errors: new Map(), packages: new Map() };
  if (modules.length === 0) return result;
  const dir = await mkdtemp(path.join(tmpdir(), 'opa-sync-check-'));
  try {
    for (const m of modules) {
      const file = path.join(dir, ...m.path.split('/').filter((s) => s !== ''));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, m.text);
    }
    const flags = v0 ? ['--v0-compatible'] : [];
    const check = await run(opaBin, ['check', '--format', 'json', ...flags, '.'], {
      cwd: dir,
      timeout: timeoutMs,
    }).then(
      () => undefined,
      (err: unknown) => err as { code?: unknown; stdout?: string; stderr?: string; message: string },
    );
    if (check !== undefined) {
      if (typeof check.code !== 'number') {
        throw new OpaCheckError('opa_check_failed', `could not run ${opaBin} check: ${check.message}`, {
          cause: check,
        });
      }
      const text = `${check.stdout ?? ''}${check.stderr ?? ''}`;
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
        const modulePath = modulePathOf(e.location?.file ?? '', dir);
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
      for (const [modulePath, errors] of byModule) {
        result.errors.set(modulePath, [
          { code: 'invalid_parameter', message: 'error(s) occurred while compiling module(s)', errors },
        ]);
      }
      if (result.errors.size === 0) {
        throw new OpaCheckError('opa_check_failed', `opa check failed: ${text.slice(0, 300)}`);
      }
      return result;
    }
    let namespaces: Record<string, string[]> | undefined;
    try {
      const inspected = await run(opaBin, ['inspect', '--format', 'json', ...flags, '.'], {
        cwd: dir,
        timeout: timeoutMs,
      });
      ({ namespaces } = JSON.parse(inspected.stdout) as { namespaces?: Record<string, string[]> });
    } catch (err) {
      throw new OpaCheckError('opa_check_failed', `opa inspect failed: ${messageOf(err)}`, { cause: err });
    }
    for (const [namespace, files] of Object.entries(namespaces ?? {})) {
      for (const file of files)
        result.packages.set(modulePathOf(file, dir), namespace.replace(/^data\./, ''));
    }
    return result;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
