// Finds an executable by name in a PATH-style list of folders (the caller passes the PATH it has).
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export function findOnPath(name: string, searchPath: string | undefined): string | undefined {
  for (const dir of (searchPath ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** Whether `file` exists and may be run. */
export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The opa binary that compiles Rego for opa-sync (bundle validation, the admission webhook):
 * --opa-bin, else `opa` on the search path, else the one `npm run tools` built; undefined if none.
 */
export function findOpa({
  opaBin,
  searchPath,
  cachedOpa,
}: {
  opaBin: string | undefined;
  searchPath: string | undefined;
  cachedOpa?: string | undefined;
}): string | undefined {
  return (
    opaBin ??
    findOnPath('opa', searchPath) ??
    (cachedOpa !== undefined && isExecutable(cachedOpa) ? cachedOpa : undefined)
  );
}
