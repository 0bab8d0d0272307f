#!/usr/bin/env node
// The opa-sync executable: the command line (cli.ts) bound to this process — its arguments, its
// streams, its PATH, and SIGTERM/SIGINT as the stop signal.
import { cli } from './cli.js';

const controller = new AbortController();
for (const name of ['SIGTERM', 'SIGINT'] as const) process.once(name, () => controller.abort(name));

cli(
  process.argv.slice(2),
  { stdout: process.stdout, stderr: process.stderr, path: process.env.PATH },
  controller.signal,
).then(
  (code) => {
    process.exitCode = code;
    // Everything was stopped in order; should a library still hold a handle, do not hang on it.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`opa-sync: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
