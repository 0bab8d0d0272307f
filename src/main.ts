#!/usr/bin/env node
// opa-sync's command line and composition root: parses the arguments once and runs what they ask for.
import { USAGE } from './usage.js';
import { version } from './version.js';

export function main(argv: readonly string[]): number {
  if (argv.includes('-v') || argv.includes('--version')) {
    process.stdout.write(`opa-sync ${version()}\n`);
    return 0;
  }
  if (argv.includes('-h') || argv.includes('--help') || argv.length === 0) {
    process.stdout.write(USAGE);
    return 0;
  }
  process.stderr.write(`opa-sync: unknown arguments: ${argv.join(' ')}\n\n${USAGE}`);
  return 2;
}

process.exitCode = main(process.argv.slice(2));
