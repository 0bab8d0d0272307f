// Runs the real opa-sync command line (src/main.ts through tsx) as a child process of the test run,
// with its log kept beside the other components' logs, and waits for its /ready when asked.
import { fileURLToPath } from 'node:url';
import getPort from 'get-port';
import { httpRequest } from './http.js';
import { logTail, startProcess, type ManagedProcess } from './processes.js';
import { runDir } from './run-dir.js';
import { StopWaiting, waitFor } from './wait.js';
import { watchLog } from './warnings.js';

const mainTs = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
// Resolved here, so that opa-sync may run with another working directory.
const tsxLoader = import.meta.resolve('tsx');
let counter = 0;

/** Waits until opa-sync's /ready answers 200; fails at once, with its log's tail, if it exits. */
export async function waitOpaSyncReady(
  proc: ManagedProcess,
  opsUrl: string,
  { timeoutMs, intervalMs }: { timeoutMs: number; intervalMs: number },
): Promise<void> {
  await waitFor(
    `${proc.name} /ready`,
    async () => {
      if (proc.hasExited()) throw new StopWaiting(`${proc.name} exited:\n${logTail(proc, 30)}`);
      const res = await httpRequest(`${opsUrl}/ready`, { timeoutMs: 1000 });
      return res.status === 200 ? true : undefined;
    },
    { timeoutMs, intervalMs },
  );
}

export interface OpaSyncProcess {
  readonly process: ManagedProcess;
  /** http://127.0.0.1:<port> of --health-endpoint. */
  readonly opsUrl: string;
  /** The JSON log lines written so far. */
  logLines(): Record<string, unknown>[];
  waitReady(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts opa-sync with the given flags plus a --health-endpoint on a free port. */
export async function startOpaSync(
  args: readonly string[],
  { waitReady = true, cwd }: { waitReady?: boolean; cwd?: string } = {},
): Promise<OpaSyncProcess> {
  const port = await getPort({ host: '127.0.0.1' });
  const name = `opa-sync-${++counter}`;
  const proc = startProcess(
    name,
    process.execPath,
    ['--import', tsxLoader, mainTs, `--health-endpoint=127.0.0.1:${port}`, ...args],
    runDir(),
    {},
    cwd,
  );
  // Its stderr is in the log: the mocha hooks fail the test during which it warns of a listener leak.
  watchLog(proc);
  const opsUrl = `http://127.0.0.1:${port}`;
  const handle: OpaSyncProcess = {
    process: proc,
    opsUrl,
    logLines() {
      return logTail(proc, 100_000)
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    waitReady: (timeoutMs = 60_000) => waitOpaSyncReady(proc, opsUrl, { timeoutMs, intervalMs: 200 }),
    stop: () => proc.stop(),
  };
  if (waitReady) {
    try {
      await handle.waitReady();
    } catch (err) {
      await proc.stop();
      throw err;
    }
  }
  return handle;
}
