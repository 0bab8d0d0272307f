// The command line: parses the arguments once, answers --help and --version, reports every
// configuration problem at once (exit 2), then runs the application until the signal aborts (exit 0)
// or a part fails for good (exit 1; 2 for a configuration problem found while starting, such as a
// replicated resource of the wrong scope). No side effects at import: src/main.ts is the executable.
import { parseArgs } from './config.js';
import { usage } from './usage.js';
import { ConfigError, messageOf } from './util/errors.js';
import { createLogger } from './util/logger.js';
import { version } from './version.js';

export interface CliIo {
  stdout: NodeJS.WritableStream;
  /** Configuration errors, and the log. */
  stderr: NodeJS.WritableStream;
  /** The PATH to look for the `opa` binary in. */
  path: string | undefined;
  /** Where `npm run tools` puts opa (src/util/tools-cache.ts): used when none is on PATH. */
  cachedOpa?: string | undefined;
}

/**
 * Runs opa-sync with `argv` (without node and the script) and resolves with the exit code.
 *
 * @example
 * const stop = new AbortController();
 * const code = await cli(['--policies-dir=policies'], { stdout, stderr, path: process.env.PATH }, stop.signal);
 */
export async function cli(argv: readonly string[], io: CliIo, signal: AbortSignal): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(argv, { localDefault: true });
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`opa-sync: ${err.message}\n\nRun opa-sync --help for the flags.\n`);
      return 2;
    }
    throw err;
  }
  if (parsed.kind === 'help' || parsed.kind === 'version') {
    // No logger yet (its flags may be the wrong ones): plain lines, apart from the answer on stdout.
    for (const warning of parsed.warnings) io.stderr.write(`opa-sync: warning: ${warning}\n`);
    io.stdout.write(parsed.kind === 'help' ? usage() : `opa-sync ${version()}\n`);
    return 0;
  }
  const { config, warnings } = parsed;
  const logger = createLogger(config.log.level, config.log.format, io.stderr);
  for (const warning of warnings) logger.warn(warning);
  logger.info({ version: version(), ...(config.opa.push ? { opaUrl: config.opa.url } : {}) }, 'starting');
  const onStop = (): void => logger.info({ signal: String(signal.reason) }, 'signal received; stopping');
  signal.addEventListener('abort', onStop, { once: true });
  try {
    // Loaded only now: --help, --version and configuration errors need none of the application.
    const { createApp } = await import('./app.js');
    const app = await createApp(config, {
      logger,
      stdout: io.stdout,
      searchPath: io.path,
      cachedOpa: io.cachedOpa,
    });
    await app.run(signal);
    logger.info('stopped');
    return 0;
  } catch (err) {
    logger.error({ err: messageOf(err) }, 'opa-sync failed');
    return err instanceof ConfigError ? 2 : 1;
  } finally {
    signal.removeEventListener('abort', onStop);
  }
}
