// `npm start`: makes sure the opa binary that validates bundles is there (built once into the tools
// cache, with progress output), then runs opa-sync — by default its local-folder mode — with it.
// Arguments after `npm start --` are passed on, e.g. `npm start -- --opa-url=http://127.0.0.1:8181/v1`.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ensureTools, requireTool } from './tools.js';

const args = process.argv.slice(2);
await ensureTools(['opa']);
const opaBin = args.some((a) => a === '--opa-bin' || a.startsWith('--opa-bin='))
  ? []
  : [`--opa-bin=${requireTool('opa')}`];
const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const child = spawn(process.execPath, [main, ...opaBin, ...args], { stdio: 'inherit' });
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => {
  process.exitCode = code ?? (signal === null ? 1 : 128);
});
