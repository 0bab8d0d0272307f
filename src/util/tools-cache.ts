// Where `npm run tools` keeps the binaries it builds from Go modules (one home for the rule, used by
// scripts/tools.ts and by opa-sync itself): `$OPA_SYNC_TOOLS_DIR`, else `$XDG_CACHE_HOME/opa-sync/tools`,
// else `~/.cache/opa-sync/tools`; OPA in `opa-<version>/opa` below it. opa-sync looks there for the
// opa that validates bundles when none is on PATH and --opa-bin is not given.
import path from 'node:path';

/** The OPA version the tools script builds (and the tests and the image use). */
export const OPA_VERSION = 'v1.22.3';

/** The environment variables the location depends on. */
export interface ToolsCacheEnv {
  OPA_SYNC_TOOLS_DIR?: string | undefined;
  XDG_CACHE_HOME?: string | undefined;
}

/**
 * @example
 * toolsCacheDir({}, '/home/me'); // '/home/me/.cache/opa-sync/tools'
 */
export function toolsCacheDir(env: ToolsCacheEnv, home: string): string {
  if (env.OPA_SYNC_TOOLS_DIR) return path.resolve(env.OPA_SYNC_TOOLS_DIR);
  const cacheHome = env.XDG_CACHE_HOME ? env.XDG_CACHE_HOME : path.join(home, '.cache');
  return path.join(cacheHome, 'opa-sync', 'tools');
}

/** Where the tools script puts the opa binary. */
export function cachedOpaPath(env: ToolsCacheEnv, home: string): string {
  return path.join(toolsCacheDir(env, home), `opa-${OPA_VERSION}`, 'opa');
}
