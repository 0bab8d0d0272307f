// Runs `opa` commands (check, eval, inspect) for the bundle publisher from a small helper process
// (opa-runner-child.ts) instead of from opa-sync's own. Starting a process forks the one that starts
// it, and a fork costs in proportion to its memory: with 1,000 policies and 10 MB of data in memory
// (~400 MB), each `opa check` started here held the event loop 30–40 ms and took 50–120 ms to start;
// from the helper, 2–5 ms and 25 ms (`npm run bench -- rebuild` measures the effect on 304s).
//
// Lifecycle: the publisher's run() owns one runner; the helper starts with the first command and is
// stopped by `stop()` when run() ends. It exits by itself when opa-sync goes away (its IPC channel
// closes), so it is never left running. If it dies, the commands in flight fail (the publisher
// retries the build) and the next command starts a new helper.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { messageOf } from '../util/errors.js';
import type { OpaExec, OpaExecResult } from './validate.js';

/** The output that `opa` may write (ASTs of a thousand modules are megabytes). */
const MAX_OUTPUT = 512 * 1024 * 1024;
/** How long past a command's own time limit the helper may take to answer before it is given up. */
const GRACE_MS = 5000;

interface Pending {
  resolve: (result: OpaExecResult) => void;
  reject: (err: Error) => void;
}

interface Reply {
  id: number;
  code: number | null;
  stdout: string;
  stderr: string;
  error?: string;
}

/** The helper's file and Node flags: its .js beside this one, or its .ts under a TypeScript loader. */
function childEntry(): { file: string; execArgv: string[] } {
  const here = import.meta.url;
  if (!here.endsWith('.ts'))
    return { file: fileURLToPath(new URL('./opa-runner-child.js', here)), execArgv: [] };
  // Run from sources (tests, tsx): the child needs the same loader flags, and nothing else (no --inspect).
  const execArgv: string[] = [];
  const flags = process.execArgv;
  for (let i = 0; i < flags.length; i += 1) {
    const flag = flags[i] ?? '';
    if (!/^--(import|require|loader|experimental-loader)(=|$)/.test(flag)) continue;
    execArgv.push(flag);
    const next = flags[i + 1];
    if (!flag.includes('=') && next !== undefined) {
      execArgv.push(next);
      i += 1;
    }
  }
  return { file: fileURLToPath(new URL('./opa-runner-child.ts', here)), execArgv };
}

/** An error of a command that could not run: no exit status, as execFile's errors for the same. */
class RunError extends Error {
  readonly code: string;
  constructor(message: string, code = 'opa_runner_failed') {
    super(message);
    this.code = code;
  }
}

/**
 * @example
 * const runner = new OpaRunner();
 * try {
 *   const { code, stdout } = await runner.exec(opaBin, ['version'], { timeoutMs: 10_000 });
 * } finally {
 *   await runner.stop();
 * }
 */
export class OpaRunner {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private stopped = false;

  /** Runs `file args` in the helper; resolves with its exit code and output, rejects if it could not run. */
  readonly exec: OpaExec = (file, args, { cwd, timeoutMs, signal }) => {
    if (this.stopped) return Promise.reject(new RunError('the opa runner is stopped'));
    if (signal?.aborted) return Promise.reject(new RunError('aborted', 'ABORT_ERR'));
    const child = this.start();
    const id = this.nextId;
    this.nextId += 1;
    return new Promise<OpaExecResult>((resolve, reject) => {
      const onAbort = (): void => {
        if (child.connected) child.send({ cancel: id });
        finish(() => reject(new RunError('aborted', 'ABORT_ERR')));
      };
      // The helper answers within the command's own limit; past it, the helper itself is given up.
      const timer = setTimeout(() => {
        finish(() => reject(new RunError(`no answer from the opa runner within ${timeoutMs + GRACE_MS} ms`)));
        child.kill('SIGKILL');
      }, timeoutMs + GRACE_MS);
      const finish = (settle: () => void): void => {
        if (!this.pending.delete(id)) return;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        settle();
      };
      this.pending.set(id, {
        resolve: (result) => finish(() => resolve(result)),
        reject: (err) => finish(() => reject(err)),
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      child.send({ id, file, args, cwd, timeoutMs, maxBuffer: MAX_OUTPUT });
    });
  };

  /** Stops the helper (and the commands it runs); a later `exec` fails. */
  async stop(): Promise<void> {
    this.stopped = true;
    const child = this.child;
    this.child = undefined;
    this.failAll('the opa runner was stopped');
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    if (child.connected) child.disconnect(); // the helper kills its commands and exits
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }

  private start(): ChildProcess {
    if (this.child !== undefined) return this.child;
    const { file, execArgv } = childEntry();
    const child = fork(file, [], { execArgv, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.child = child;
    child.on('message', (reply: Reply) => {
      const pending = this.pending.get(reply.id);
      if (pending === undefined) return;
      if (reply.code === null) pending.reject(new RunError(reply.error ?? 'opa could not run'));
      else pending.resolve({ code: reply.code, stdout: reply.stdout, stderr: reply.stderr });
    });
    child.on('error', (err) => {
      if (this.child === child) this.child = undefined;
      child.kill('SIGKILL');
      this.failAll(`the opa runner failed: ${messageOf(err)}`);
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.failAll(`the opa runner exited (${signal ?? String(code)})`);
    });
    return child;
  }

  private failAll(message: string): void {
    for (const pending of [...this.pending.values()]) pending.reject(new RunError(message));
  }
}
