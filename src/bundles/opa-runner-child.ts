// The child side of OpaRunner (opa-runner.ts): a small Node process that runs `opa` commands for the
// bundle publisher and sends back their exit code and output. It exists because starting a process
// from the main process forks that process, and a fork's cost grows with its memory (30–40 ms of a
// blocked event loop at 400 MB, measured); this process stays small. It imports nothing of opa-sync's,
// holds no state but the commands in flight, and exits when its parent goes away.
import { execFile, type ChildProcess } from 'node:child_process';

interface RunRequest {
  id: number;
  file: string;
  args: string[];
  cwd?: string | undefined;
  timeoutMs: number;
  maxBuffer: number;
}

interface CancelRequest {
  cancel: number;
}

const running = new Map<number, ChildProcess>();

function reply(message: unknown): void {
  // A parent that went away meanwhile gets nothing: the 'disconnect' handler ends this process.
  if (process.connected) process.send?.(message);
}

process.on('message', (message: RunRequest | CancelRequest) => {
  if ('cancel' in message) {
    running.get(message.cancel)?.kill('SIGKILL');
    return;
  }
  const { id } = message;
  const child = execFile(
    message.file,
    message.args,
    {
      cwd: message.cwd,
      timeout: message.timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: message.maxBuffer,
      encoding: 'utf8',
    },
    (err, stdout, stderr) => {
      running.delete(id);
      // Exited with a status: the command ran. Anything else (not found, killed, too much output): it did not.
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      reply({ id, code, stdout, stderr, ...(code === null ? { error: err?.message ?? 'failed' } : {}) });
    },
  );
  running.set(id, child);
});

process.on('disconnect', () => {
  for (const child of running.values()) child.kill('SIGKILL');
  process.exit(0);
});
