// `npm start`: opa-sync itself, in this process. package.json runs it with `exec node --import tsx …`,
// so that this process is npm's own child: the SIGTERM or SIGINT that npm forwards reaches opa-sync,
// which stops in order and frees its port (with a shell or a wrapper in between, the signal ended the
// shell and left opa-sync running). The sources run through tsx's loader, so there is no TypeScript
// build before the start. First it makes sure the opa binary that validates bundles is there (built
// once into the tools cache, with progress); then it runs opa-sync, by default its local-folder mode.
// Arguments after `npm start --` are passed on, e.g. `npm start -- --opa-url=http://127.0.0.1:8181/v1`.
import { cli } from '../src/cli.js';
import { crashed, exitWith, stopSignal } from '../src/run-process.js';
import { ensureTools, requireTool } from './tools.js';

async function start(args: readonly string[], signal: AbortSignal): Promise<number> {
  const ownOpa = args.some((a) => a === '--opa-bin' || a.startsWith('--opa-bin='));
  if (!ownOpa) {
    try {
      await ensureTools(['opa'], process.env, { signal });
    } catch (err) {
      if (signal.aborted) {
        process.stderr.write('[tools] stopped before the opa binary was built\n');
        return signal.reason === 'SIGINT' ? 130 : 143;
      }
      process.stderr.write(`[tools] ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
  }
  const opaBin = ownOpa ? [] : [`--opa-bin=${requireTool('opa')}`];
  return cli(
    [...opaBin, ...args],
    { stdout: process.stdout, stderr: process.stderr, path: process.env.PATH },
    signal,
  );
}

start(process.argv.slice(2), stopSignal()).then(exitWith, crashed);
