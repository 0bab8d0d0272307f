// A command line bound to this process: SIGTERM and SIGINT become the stop signal, the command's result
// the exit code, and a library's forgotten handle never keeps the process alive after an orderly stop.
// Used by the executable (src/main.ts) and by `npm start` (scripts/start.ts, opa-sync in npm's own child
// process, so that a signal npm forwards reaches it).

/** Signals within this long after the first are the same stop delivered twice (see stopSignal). */
const SAME_STOP_MS = 1000;

/**
 * The stop signal of this process: aborted (with the signal's name as reason) at the first SIGTERM or
 * SIGINT. A later one ends the process at once (a second Ctrl-C when an orderly stop takes too long),
 * except within a second of the first: under `npm start`, a Ctrl-C reaches opa-sync twice, from the
 * terminal (to the whole process group) and forwarded by npm, and that is one stop, not an impatient one.
 *
 * @example
 * const signal = stopSignal();
 * cli(process.argv.slice(2), io, signal).then(exitWith, crashed);
 */
export function stopSignal(): AbortSignal {
  const controller = new AbortController();
  let firstAt: number | undefined;
  const onSignal = (name: 'SIGTERM' | 'SIGINT'): void => {
    if (firstAt === undefined) {
      firstAt = Date.now();
      controller.abort(name);
    } else if (Date.now() - firstAt >= SAME_STOP_MS) {
      process.exit(name === 'SIGINT' ? 130 : 143);
    }
  };
  for (const name of ['SIGTERM', 'SIGINT'] as const) process.on(name, onSignal);
  return controller.signal;
}

/** Ends with `code` once the event loop is empty, or 2 s after everything was stopped in order. */
export function exitWith(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
}

/** What escaped every handler: the stack on stderr, exit code 1. */
export function crashed(err: unknown): void {
  process.stderr.write(`opa-sync: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
}
