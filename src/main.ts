#!/usr/bin/env node
// The opa-sync executable: the command line (cli.ts) bound to this process — its arguments, its
// streams, its PATH, and SIGTERM/SIGINT as the stop signal (run-process.ts).
import { cli } from './cli.js';
import { crashed, exitWith, stopSignal } from './run-process.js';

cli(
  process.argv.slice(2),
  { stdout: process.stdout, stderr: process.stderr, path: process.env.PATH },
  stopSignal(),
).then(exitWith, crashed);
