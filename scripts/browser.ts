// The browser the web page's tests and `npm run screenshots` drive: Debian's `chromium` package,
// installed with apt-get when it is missing (as root, as the test machines run), like the Go-built
// tools of scripts/tools.ts. CHROMIUM_BIN names a chromium you already have; it is used as it is.
//
// Run alone with `npm run browser`; the UI tests' before hook calls ensureBrowser() and returns at once
// when the browser is there. apt-get's own lines go to the terminal as they come, with a line every
// 15 s saying how long it has been running, so that a download never looks like a hang.
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { isExecutable } from '../src/util/find-binary.js';

/** Where Debian's chromium package puts its launcher. */
export const DEBIAN_CHROMIUM = '/usr/bin/chromium';

type Env = Readonly<Record<string, string | undefined>>;

/** The chromium to drive: CHROMIUM_BIN when set, else Debian's. */
export function browserPath(env: Env = process.env): string {
  const fromEnv = env.CHROMIUM_BIN;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEBIAN_CHROMIUM;
}

function run(command: string, args: readonly string[], log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    log(`$ ${command} ${args.join(' ')}`);
    const child = spawn(command, args, {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    const ticker = setInterval(() => {
      log(`  … ${command} ${args[0] ?? ''} running for ${Math.round((Date.now() - started) / 1000)} s`);
    }, 15_000);
    child.once('error', (err) => {
      clearInterval(ticker);
      reject(new Error(`cannot run ${command}: ${err.message}`, { cause: err }));
    });
    child.once('exit', (code, signal) => {
      clearInterval(ticker);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} failed (${signal ?? `exit code ${code}`})`));
    });
  });
}

/**
 * Returns the chromium to drive, installing Debian's package first when it is missing. Throws, naming
 * what to do, when it cannot be installed (not root, no apt-get) or CHROMIUM_BIN is not executable.
 */
export async function ensureBrowser(
  log: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
  env: Env = process.env,
): Promise<string> {
  const binary = browserPath(env);
  if (isExecutable(binary)) return binary;
  if (binary !== DEBIAN_CHROMIUM) {
    throw new Error(`CHROMIUM_BIN=${binary} is not an executable file`);
  }
  if (process.getuid?.() !== 0) {
    throw new Error(
      `${DEBIAN_CHROMIUM} is missing: install Debian's chromium package (sudo apt-get install chromium), or set CHROMIUM_BIN`,
    );
  }
  log('installing the browser of the web page tests: Debian package chromium (about 100 MB, once)');
  const started = Date.now();
  await run('apt-get', ['update'], log);
  await run('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], log);
  if (!isExecutable(DEBIAN_CHROMIUM)) {
    throw new Error(`apt-get installed chromium, but ${DEBIAN_CHROMIUM} is not there`);
  }
  log(`chromium installed in ${Math.round((Date.now() - started) / 1000)} s`);
  return DEBIAN_CHROMIUM;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // --quiet-if-present: say nothing when the browser is already there (as `npm test` runs it).
  const quiet = process.argv.includes('--quiet-if-present') && isExecutable(browserPath());
  ensureBrowser().then(
    (binary) => {
      if (!quiet) process.stdout.write(`browser: ${binary}\n`);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
