// The folder of one test run: component logs, certificates and data. Kept when a test failed, so the
// logs can be read afterwards; removed otherwise.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

// Kept on globalThis: mocha loads the hooks file through its own loader, which can give this module a
// second instance; both must see the same folder.
const KEY = Symbol.for('opa-sync.test-run-dir');
const shared = globalThis as typeof globalThis & { [KEY]?: string };

export function runDir(): string {
  shared[KEY] ??= mkdtempSync(path.join(tmpdir(), 'opa-sync-test-'));
  return shared[KEY];
}

export function removeRunDir(): void {
  const dir = shared[KEY];
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  delete shared[KEY];
}

export function hasRunDir(): boolean {
  return shared[KEY] !== undefined;
}
