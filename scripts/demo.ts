// `npm run demo`: the network-policy article, replayed for a person on a local control plane with OPA as
// the admission webhook and opa-sync as its sidecar. Prints each kubectl command and its output; with
// --step it waits for Enter between sections; --today runs the Rego v1 variant with today's flags.
// Everything it starts is stopped at the end, and on Ctrl-C.
import { createInterface } from 'node:readline/promises';
import { ensureTools } from './tools.js';
import { stopHarness } from '../test/harness/index.js';
import { removeRunDir } from '../test/harness/run-dir.js';
import {
  ARTICLE_VARIANT,
  TODAY_VARIANT,
  runSeedScenario,
  type ScenarioIO,
} from '../test/harness/seed-scenario.js';

const args = process.argv.slice(2);
const step = args.includes('--step');
const variant = args.includes('--today') ? TODAY_VARIANT : ARTICLE_VARIANT;

let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await stopHarness().catch(() => undefined);
    removeRunDir();
  }
  process.exit(code);
}
process.once('SIGINT', () => {
  process.stdout.write('\ninterrupted: stopping everything the demo started\n');
  void shutdown(130);
});
process.once('SIGTERM', () => void shutdown(143));

const indent = (text: string): string =>
  text
    .trimEnd()
    .split('\n')
    .map((line) => `  ${line}`)
    .join('\n');

const io: ScenarioIO = {
  async section(title) {
    process.stdout.write(`\n== ${title}\n`);
    if (step && process.stdin.isTTY) {
      const rl = createInterface({ input: process.stdin, output: process.stdout });
      await rl.question('   (Enter to go on) ');
      rl.close();
    }
  },
  command(line, result) {
    process.stdout.write(`$ ${line}\n`);
    if (result.stdout.trim() !== '') process.stdout.write(`${indent(result.stdout)}\n`);
    if (result.stderr.trim() !== '') process.stdout.write(`${indent(result.stderr)}\n`);
  },
  note(text) {
    process.stdout.write(`# ${text}\n`);
  },
};

async function main(): Promise<void> {
  process.stdout.write(`The network-policy article, with ${variant.name}.\n`);
  process.stdout.write(
    'Building the test tools if they are missing, then starting etcd, kube-apiserver, kube-controller-manager, OPA and opa-sync.\n',
  );
  await ensureTools();
  await runSeedScenario(variant, io);
  process.stdout.write('\nThe walkthrough is complete: every step behaved as in the article.\n');
}

main().then(
  () => shutdown(0),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    return shutdown(1);
  },
);
