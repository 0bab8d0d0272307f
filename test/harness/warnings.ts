// Catches MaxListenersExceededWarning (Node's sign of a listener leak, e.g. abort listeners piling up on
// one AbortSignal) in the test process itself and in every opa-sync child process the harness starts,
// so that the mocha hooks can fail the run and say where it came from.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import type { ManagedProcess } from './processes.js';

export const LISTENER_WARNING = 'MaxListenersExceededWarning';

interface WatchedLog {
  readonly process: ManagedProcess;
  /** Bytes of the log already looked at (whole lines only). */
  offset: number;
}

interface WarningState {
  listening: boolean;
  /** The test process's own warnings not yet reported. */
  own: string[];
  logs: Map<string, WatchedLog>;
}

// On globalThis: the hooks file and the specs may load two instances of this module (see run-dir.ts).
const KEY = Symbol.for('opa-sync.test-warnings');
const shared = globalThis as typeof globalThis & { [KEY]?: WarningState };
const state: WarningState = (shared[KEY] ??= { listening: false, own: [], logs: new Map() });

/** Starts recording the test process's own listener warnings (once, however often it is called). */
export function recordOwnWarnings(): void {
  if (state.listening) return;
  state.listening = true;
  process.on('warning', (warning) => {
    if (warning.name === LISTENER_WARNING) state.own.push(`${warning.name}: ${warning.message}`);
  });
}

/** Looks for listener warnings in this child process's log (its stderr) from now on. */
export function watchLog(proc: ManagedProcess): void {
  state.logs.set(proc.logFile, { process: proc, offset: 0 });
}

/** The complete lines a log has gained since the last look. */
function newLines(log: WatchedLog): string[] {
  let size: number;
  try {
    size = statSync(log.process.logFile).size;
  } catch {
    return [];
  }
  if (size <= log.offset) return [];
  const buffer = Buffer.alloc(size - log.offset);
  const fd = openSync(log.process.logFile, 'r');
  try {
    readSync(fd, buffer, 0, buffer.length, log.offset);
  } finally {
    closeSync(fd);
  }
  const end = buffer.lastIndexOf('\n');
  if (end < 0) return [];
  log.offset += end + 1;
  return buffer.subarray(0, end).toString('utf8').split('\n');
}

/**
 * The listener warnings since the last call, each naming where it was seen: the test process, or the
 * child process and its log file.
 */
export function takeListenerWarnings(): string[] {
  const found = state.own.splice(0).map((w) => `the test process: ${w}`);
  for (const log of state.logs.values()) {
    for (const line of newLines(log)) {
      if (line.includes(LISTENER_WARNING)) {
        found.push(`${log.process.name} (log ${log.process.logFile}): ${line.trim()}`);
      }
    }
  }
  return found;
}

/** Stops the watched child processes still running, so that what they print on the way out is seen. */
export async function stopWatchedProcesses(): Promise<void> {
  await Promise.all(
    [...state.logs.values()].filter((l) => !l.process.hasExited()).map((l) => l.process.stop()),
  );
}
