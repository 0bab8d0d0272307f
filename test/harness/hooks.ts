// Mocha root hooks and global teardown: fails the test during which the test process or an opa-sync
// child process warns of a listener leak (MaxListenersExceededWarning), prints the logs of the real
// components when a test fails, and stops them (by process id) at the end of the run.
import type { Context, Hook } from 'mocha';
import { logTail, runningProcesses, stopAll } from './processes.js';
import { hasRunDir, removeRunDir, runDir } from './run-dir.js';
import { stopHarness } from './index.js';
import {
  LISTENER_WARNING,
  recordOwnWarnings,
  stopWatchedProcesses,
  takeListenerWarnings,
} from './warnings.js';

let failures = 0;

recordOwnWarnings();

function warningError(where: string, warnings: string[]): Error {
  return new Error(`${LISTENER_WARNING} ${where}:\n  ${warnings.join('\n  ')}`);
}

export const mochaHooks = {
  afterEach(this: Context): void {
    const warnings = takeListenerWarnings();
    if (warnings.length > 0) {
      // Fails the test that just ran (even one that passed) without failing the hook, so the tests after
      // it still run. The warning was printed during this test, or before it in a hook of its suite.
      (this.test as Hook).error(
        warningError(`while "${this.currentTest?.fullTitle() ?? '?'}" ran (or a hook before it)`, warnings),
      );
    }
    if (this.currentTest?.state !== 'failed' && warnings.length === 0) return;
    failures += 1;
    for (const p of runningProcesses()) {
      process.stderr.write(`\n----- last lines of ${p.name} (${p.logFile}) -----\n${logTail(p, 15)}\n`);
    }
  },

  // What the last suites' after hooks, and the opa-sync processes still running, print on the way out.
  async afterAll(this: Context): Promise<void> {
    await stopWatchedProcesses();
    const warnings = takeListenerWarnings();
    if (warnings.length > 0) {
      failures += 1;
      throw warningError('after the last test (in an after hook, or while opa-sync stopped)', warnings);
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
