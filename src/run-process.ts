// A command line bound to this process: SIGTERM and SIGINT become the stop signal, the command's result
// the exit code, and a library's forgotten handle never keeps the process alive after an orderly stop.
// Used by the executable (src/main.ts) and by `npm start` (scripts/start.ts, opa-sync in npm's own child
// process, so that a signal npm forwards reaches it).

/**
 * The stop signal of this process: aborted (with the signal's name as reason) at the first SIGTERM or
 * SIGINT. A second one of the same kind ends the process at once, as it would without us.
 *
 * @example
 * const signal = stopSignal();
 * cli(process.argv.slice(2), io, signal).then(exitWith, crashed);
 */
export function stopSignal(): AbortSignal {
  const controller = new AbortController();
  for (const name of ['SIGTERM', 'SIGINT'] as const) process.once(name, () => controller.abort(name));
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
