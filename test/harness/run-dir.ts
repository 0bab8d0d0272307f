// The folder of one test run: component logs, certificates and data. Kept when a test failed, so the
// logs can be read afterwards; removed otherwise.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

let dir: string | undefined;

export function runDir(): string {
  dir ??= mkdtempSync(path.join(tmpdir(), 'opa-sync-test-'));
  return dir;
}

export function removeRunDir(): void {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
}

export function hasRunDir(): boolean {
  return dir !== undefined;
}
