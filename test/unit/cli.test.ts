// The opa-sync command line: --version and --help, and a clear refusal of what it does not know.
// cli() runs in-process, with streams of the test's own.
import { readFileSync } from 'node:fs';
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
