// What a process loads: importing the application starts nothing (the process exits by itself and
// prints nothing), and @kubernetes/client-node (≈75 MB of RSS and most of start-up) is loaded only
// when a Kubernetes source is configured. Each case runs in a child process that records every module
// it resolves (test/fixtures/hooks/).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const register = fileURLToPath(new URL('../fixtures/hooks/register.mjs', import.meta.url));
const CLIENT_NODE = '/node_modules/@kubernetes/client-node/';

/** Runs `script` (ESM) under tsx with the import recorder; resolves with its output and what it loaded. */
async function loads(script: string): Promise<{ stdout: string; stderr: string; urls: string[] }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-imports-'));
  const record = path.join(dir, 'imports.txt');
  writeFileSync(record, '');
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ['--import', 'tsx', '--import', register, '--input-type=module', '-e', script],
      { cwd: root, env: { ...process.env, OPA_SYNC_TEST_IMPORTS: record }, timeout: 30_000 },
    );
    return { stdout, stderr, urls: readFileSync(record, 'utf8').split('\n').filter(Boolean) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('what opa-sync loads', function () {
  this.timeout(60_000);

  it('importing the application starts nothing: the process ends by itself, silent', async () => {
    // `timeout` above: a listening server or a timer left running would keep the child alive.
    const out = await loads("await import('./src/app.ts'); await import('./src/cli.ts');");
    expect(out.stdout).to.equal('');
    expect(out.stderr).to.equal('');
    expect(out.urls.some((u) => u.endsWith('/src/app.ts'))).to.equal(true);
    expect(out.urls.filter((u) => u.includes(CLIENT_NODE))).to.deep.equal([]);
  });

  it('folder mode builds its parts without @kubernetes/client-node; a ConfigMap source loads it', async () => {
    const script = (args: string[]): string => `
      import { parseArgs } from './src/config.ts';
      import { createApp } from './src/app.ts';
      import { silentLogger } from './src/util/logger.ts';
      const parsed = parseArgs(${JSON.stringify(args)}, { localDefault: true });
      if (parsed.kind !== 'run') throw new Error(parsed.kind);
      const app = await createApp(parsed.config, { logger: silentLogger(), stdout: process.stdout, searchPath: process.env.PATH });
      console.log(app.parts.map((p) => p.name).join(','));
    `;
    const folder = await loads(
      script([
        '--policies-dir=policies',
        '--bundle-addr=127.0.0.1:0',
        '--opa-bin=/bin/true',
        '--health-endpoint=127.0.0.1:0',
      ]),
    );
    expect(folder.stdout.trim()).to.equal('ops,bundle-server,bundles,folder');
    expect(folder.urls.filter((u) => u.includes(CLIENT_NODE))).to.deep.equal([]);

    const kubeconfig = path.join(root, 'test/fixtures/kubeconfig-unreachable.yaml');
    const sidecar = await loads(script([`--kubeconfig=${kubeconfig}`, '--namespaces=opa']));
    expect(sidecar.stdout.trim()).to.equal('status,opa,configmaps');
    expect(sidecar.urls.some((u) => u.includes(CLIENT_NODE))).to.equal(true);
  });
});
