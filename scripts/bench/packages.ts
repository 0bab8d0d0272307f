// Debian packages the benchmark needs (GNU time for the peak RSS of short-lived processes; nginx and
// wrk for the bundle-serving scenarios), installed with apt-get when missing: `apt-get update` once,
// then `apt-get install -y`. Needs root, as on the project's machines.
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

let updated = false;

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Returns `binary` (an absolute path), installing Debian package `pkg` first when it is missing. */
export function ensureDebianBinary(binary: string, pkg: string, log: (line: string) => void): string {
  if (executable(binary)) return binary;
  log(`bench: ${binary} is missing; installing the Debian package ${pkg}`);
  if (!updated) {
    execFileSync('apt-get', ['update'], { stdio: ['ignore', 'ignore', 'inherit'] });
    updated = true;
  }
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', pkg], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (!executable(binary)) throw new Error(`${pkg} was installed but ${binary} is still missing`);
  return binary;
}
