// Child processes of a test run (OPA, etcd, kube-apiserver, …): started with their output in a log
// file of the run's folder, stopped by process id, and all killed if the test process exits first.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  readonly exited: Promise<string>;
  readonly hasExited: () => boolean;
  stop(graceMs?: number): Promise<void>;
}

// On globalThis: the mocha hooks file may load a second instance of this module (see run-dir.ts), and
// its global teardown must stop what the tests started.
const RUNNING = Symbol.for('opa-sync.test-processes');
const shared = globalThis as typeof globalThis & { [RUNNING]?: Set<ManagedProcess> };
const running: Set<ManagedProcess> = (shared[RUNNING] ??= new Set<ManagedProcess>());

function killAll(): void {
  for (const p of running) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

// `mocha --exit` and crashes end the test process without teardown: never leave a server behind.
process.on('exit', killAll);
// A signal's default action ends the process without 'exit' (a `timeout`, a CI job cancelled, a closed
// terminal): kill the children, then let the signal do what it would have done. Once per process,
// however many instances of this module there are.
const SIGNALS = Symbol.for('opa-sync.test-processes.signals');
const marked = globalThis as typeof globalThis & { [SIGNALS]?: true };
if (marked[SIGNALS] === undefined) {
  marked[SIGNALS] = true;
  for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAll();
      process.kill(process.pid, signal);
    });
  }
}

export function startProcess(
  name: string,
  binary: string,
  args: readonly string[],
  logDir: string,
  env: Readonly<Record<string, string>> = {},
  cwd?: string,
): ManagedProcess {
  const logFile = path.join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...env },
      ...(cwd === undefined ? {} : { cwd }),
    });
  } finally {
    closeSync(fd);
  }
  let done = false;
  const exited = new Promise<string>((resolve) => {
    child.on('error', (err) => {
      done = true;
      resolve(`spawn error: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      done = true;
      resolve(signal ?? `exit ${String(code)}`);
    });
  });
  if (child.pid === undefined) {
    throw new Error(`${name}: could not start ${binary}`);
  }
  const pid = child.pid;
  const managed: ManagedProcess = {
    name,
    pid,
    logFile,
    exited,
    hasExited: () => done,
    async stop(graceMs = 10_000) {
      if (!done) {
        process.kill(pid, 'SIGTERM');
        const timer = new Promise<'timeout'>((resolve) =>
          setTimeout(() => resolve('timeout'), graceMs).unref(),
        );
        if ((await Promise.race([exited, timer])) === 'timeout' && !done) {
          process.kill(pid, 'SIGKILL');
          await exited;
        }
      }
      running.delete(managed);
    },
  };
  running.add(managed);
  void exited.then(() => running.delete(managed));
  return managed;
}

/** The last lines of a process's log, for failure reports. */
export function logTail(p: Pick<ManagedProcess, 'logFile'>, lines = 40): string {
  try {
    const text = readFileSync(p.logFile, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch (err) {
    return `(no log: ${err instanceof Error ? err.message : String(err)})`;
  }
}

export function runningProcesses(): ManagedProcess[] {
  return [...running];
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
}
