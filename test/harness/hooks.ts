// Mocha root hooks and global teardown: prints the logs of the real components when a test fails,
// and stops them (by process id) at the end of the run.
import type { Context } from 'mocha';
import { logTail, runningProcesses, stopAll } from './processes.js';
import { hasRunDir, removeRunDir, runDir } from './run-dir.js';
import { stopHarness } from './index.js';

let failures = 0;

export const mochaHooks = {
  afterEach(this: Context): void {
    if (this.currentTest?.state !== 'failed') return;
    failures += 1;
    for (const p of runningProcesses()) {
      process.stderr.write(`\n----- last lines of ${p.name} (${p.logFile}) -----\n${logTail(p, 15)}\n`);
    }
  },
};

export async function mochaGlobalTeardown(): Promise<void> {
  await stopHarness();
  // Whatever is still running (started through another instance of the harness modules): SIGTERM first.
  await stopAll();
  if (!hasRunDir()) return;
  if (failures > 0) process.stderr.write(`component logs kept in ${runDir()}\n`);
  else removeRunDir();
}
