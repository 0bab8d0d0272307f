#!/usr/bin/env node
// The opa-sync executable: the command line (cli.ts) bound to this process — its arguments, its
// streams, its PATH and tools cache (the only things it takes from the environment), and SIGTERM/SIGINT
// as the stop signal (run-process.ts).
import { homedir } from 'node:os';
import { cli } from './cli.js';
import { crashed, exitWith, stopSignal } from './run-process.js';
import { cachedOpaPath } from './util/tools-cache.js';

cli(
  process.argv.slice(2),
  {
    stdout: process.stdout,
    stderr: process.stderr,
    path: process.env.PATH,
    cachedOpa: cachedOpaPath(process.env, homedir()),
  },
  stopSignal(),
).then(exitWith, crashed);
