// The configuration problems a command line gives (parseArgs's ConfigError), or none.
import { parseArgs } from '../../src/config.js';
import { ConfigError } from '../../src/util/errors.js';

export function configProblems(...argv: string[]): readonly string[] {
  try {
    parseArgs(argv);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}
