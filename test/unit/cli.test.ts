// The opa-sync command line: --version and --help, and a clear refusal of what it does not know.
// cli() runs in-process, with streams of the test's own.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { cli } from '../../src/cli.js';

function collect(): { stream: PassThrough; text(): string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

async function opaSync(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return opaSyncWithPath(process.env.PATH, ...args);
}

async function opaSyncWithPath(
  searchPath: string | undefined,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = collect();
  const stderr = collect();
  // Every case here ends by itself; a signal that never aborts proves it.
  const code = await cli(
    args,
    { stdout: stdout.stream, stderr: stderr.stream, path: searchPath },
    new AbortController().signal,
  );
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

describe('opa-sync command line', () => {
  it('prints the package version with --version and -v', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-v']) {
      const out = await opaSync(flag);
      expect(out.code).to.equal(0);
      expect(out.stdout).to.equal(`opa-sync ${pkg.version}\n`);
    }
  });

  it('prints the usage with --help', async () => {
    const out = await opaSync('--help');
    expect(out.code).to.equal(0);
    expect(out.stdout).to.match(/^opa-sync: loads Rego policies/);
    expect(out.stdout).to.include('--version');
  });

  it('names unknown flags on stderr also with --version and --help, with the flag a typo meant', async () => {
    for (const flag of ['--version', '--help']) {
      const out = await opaSync('--opa-ulr=http://127.0.0.1:8181/v1', flag);
      expect(out.code, flag).to.equal(0);
      expect(out.stderr, flag).to.equal(
        'opa-sync: warning: unknown flag --opa-ulr ignored: did you mean --opa-url?\n',
      );
      expect(out.stdout, flag).not.to.include('opa-ulr');
    }
  });

  it('names a mistyped flag with the flag it meant when starting', async () => {
    // --opa-bin on nothing: the run stops at once, after the warnings are logged.
    const out = await opaSyncWithPath('/nonexistent', '--bundle-adr=127.0.0.1:0', '--log-format=json');
    expect(out.code).to.equal(1);
    const warnings = out.stderr
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { level: number; msg: string })
      .filter((entry) => entry.level === 40)
      .map((entry) => entry.msg);
    expect(warnings).to.deep.equal(['unknown flag --bundle-adr ignored: did you mean --bundle-addr?']);
  });

  it('the local default on a busy port: exit 1, naming the address, the flag and what to do', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const { port } = busy.address() as AddressInfo;
    try {
      const bundles = mkdtempSync(path.join(tmpdir(), 'opa-sync-cli-'));
      // The local default (no source flag) with its port taken; nothing is built or written meanwhile.
      const out = await opaSync(
        `--bundle-addr=127.0.0.1:${port}`,
        '--opa-bin=/nonexistent/opa',
        `--bundles-dir=${bundles}`,
      );
      expect(out.code).to.equal(1);
      expect(out.stderr).to.include(
        `cannot listen on 127.0.0.1:${port}: the port is already in use (another opa-sync still running?); ` +
          'stop that process or choose another port with --bundle-addr=HOST:PORT',
      );
      expect(out.stdout).not.to.include('serves the bundle');
      expect(readdirSync(bundles)).to.deep.equal([]);
    } finally {
      busy.close();
    }
  });

  it('refuses to replicate Secrets without --replicate-allow-secrets, saying why', async () => {
    const out = await opaSync('--replicate=v1/secrets');
    expect(out.code).to.equal(2);
    expect(out.stderr).to.include('--replicate=v1/secrets');
    expect(out.stderr).to.include('--replicate-allow-secrets');
    expect(out.stderr).to.match(/expose/);
  });

  it('refuses a resource replicated twice (one data path, two writers)', async () => {
    const out = await opaSync('--replicate=v1/services', '--replicate-cluster=v1/services');
    expect(out.code).to.equal(2);
    expect(out.stderr).to.include('resource "services" is replicated twice');
  });

  it('says exactly what is missing when the opa binary that validates bundles is not there', async () => {
    const out = await opaSyncWithPath('/nonexistent', '--policies-dir=policies', '--bundle-addr=127.0.0.1:0');
    expect(out.code).to.equal(1);
    expect(out.stdout + out.stderr).to.include(
      'bundles are validated with the opa binary, which is not on PATH',
    );
    expect(out.stdout + out.stderr).to.include('--opa-bin');
    expect(out.stdout + out.stderr).to.include('npm run tools');
  });

  it("refuses kube-mgmt's --opa-config with exit 2 and says what to use instead (no warning and a silent no-op)", async () => {
    const out = await opaSync('--kubeconfig=/nonexistent', '--opa-config=/config/config.yaml');
    expect(out.code).to.equal(2);
    expect(out.stderr).to.include('--opa-config');
    expect(out.stderr).to.include('opa-sync does not implement it');
    expect(out.stderr).to.include('--replicate-cluster');
    expect(out.stderr).not.to.include('unknown flag');
  });

  it('reports every configuration problem at once and exits non-zero', async () => {
    const out = await opaSync('--log-level=loud', '--opa-url=', 'stray');
    expect(out.code).to.equal(2);
    expect(out.stderr).to.include('--log-level');
    expect(out.stderr).to.include('--opa-url');
    expect(out.stderr).to.include('stray');
    expect(out.stdout).to.equal('');
  });
});
