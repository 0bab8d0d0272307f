// Finds an executable by name in a PATH-style list of folders (the caller passes the PATH it has).
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export function findOnPath(name: string, searchPath: string | undefined): string | undefined {
  for (const dir of (searchPath ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
