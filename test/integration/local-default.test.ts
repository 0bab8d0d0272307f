// The local default (what `npm start` runs): with no source flag, opa-sync serves ./policies as the
// bundle `policies`, writes ./bundles (and the OPA configuration, bundles/opa-config.yaml, which it also
// prints), and a real OPA that uses that file activates the bundle and gets an edit of a file under
// policies/ without a restart. (test/integration/newcomer.test.ts runs the same through `npm start`.)
// Also --policies-dir with more files than an AbortSignal's default listener limit.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import getPort from 'get-port';
import { requireTool } from '../../scripts/tools.js';
import { downloadBundle } from '../harness/bundles.js';
import { extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import { startOpaSync, type OpaSyncProcess } from '../harness/opa-sync.js';
import { logTail } from '../harness/processes.js';

describe('the local default: ./policies served as a bundle (real OPA)', function () {
  this.timeout(120_000);
  let work: string;
  let sync: OpaSyncProcess;
  let opa: OpaServer;
  let port: number;

  before(async () => {
    // A copy of the repository's policies/, so the test can edit files.
    work = mkdtempSync(path.join(tmpdir(), 'opa-sync-local-'));
    cpSync(fileURLToPath(new URL('../../policies', import.meta.url)), path.join(work, 'policies'), {
      recursive: true,
    });
    port = await getPort({ host: '127.0.0.1' });
    // --bundle-addr and --opa-bin are not source flags: the local default still applies.
    sync = await startOpaSync([`--bundle-addr=127.0.0.1:${port}`, `--opa-bin=${requireTool('opa')}`], {
      cwd: work,
    });
  });
  after(async () => {
    await opa?.stop();
    await sync?.stop();
  });

  it('writes and prints the OPA configuration, and an OPA using that file activates the bundle', async () => {
    const config = path.join(work, 'bundles', 'opa-config.yaml');
    await waitFor('the printed OPA configuration', () =>
      logTail(sync.process, 200).includes(`written to ${config}:`) ? true : undefined,
    );
    const written = readFileSync(config, 'utf8');
    expect(written).to.include(`url: http://127.0.0.1:${port}`);
    expect(written).to.include('resource: bundles/policies');
    opa = await extraOpa({ extraArgs: [`--config-file=${config}`] });
    await waitFor('the bundle to be activated', async () =>
      (await opa.request('/health?bundles=true')).status === 200 ? true : undefined,
    );
    const review = {
      request: {
        uid: 'u1',
        kind: { kind: 'Pod' },
        object: { metadata: { name: 'p', labels: { app: 'prop' } } },
      },
    };
    const res = await opa.request('/', {
      method: 'POST',
      body: JSON.stringify(review),
      headers: { 'content-type': 'application/json' },
    });
    const answer = JSON.parse(res.body) as {
      response: { uid: string; allowed: boolean; status?: { message: string } };
    };
    expect(answer.response.uid).to.equal('u1');
    expect(answer.response.allowed).to.equal(false);
    expect(answer.response.status?.message).to.include('missing an associated Network Security Policy');
    expect(existsSync(path.join(work, 'bundles', 'policies.tar.gz'))).to.equal(true);
  });

  it('an edit of a file under policies/ reaches the OPA without a restart', async () => {
    const file = path.join(work, 'policies', 'system', 'main.rego');
    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace('"allowed": true', '"allowed": true, "edited": true'),
    );
    const pid = opa.process.pid;
    await waitFor(
      'the edit to be live',
      async () => {
        const res = await opa.request('/', {
          method: 'POST',
          body: '{"request":{"uid":"u2"}}',
          headers: { 'content-type': 'application/json' },
        });
        return (JSON.parse(res.body) as { response?: { edited?: boolean } }).response?.edited === true
          ? true
          : undefined;
      },
      { timeoutMs: 10_000 },
    );
    expect(opa.process.pid).to.equal(pid);
  });
});

describe('--policies-dir with more files than an event target allows listeners by default (11+)', function () {
  this.timeout(60_000);
  let dir: string;
  let sync: OpaSyncProcess | undefined;

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-many-'));
  });
  after(async () => {
    await sync?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // The harness hooks fail this test if opa-sync prints a MaxListenersExceededWarning meanwhile.
  it('serves every file of the folder, edits included', async () => {
    const files = Array.from({ length: 12 }, (_, i) => `team${i}/policy.rego`);
    const rego = (i: number, version: number) => `package many.team${i}\n\nversion := ${version}\n`;
    files.forEach((file, i) => {
      mkdirSync(path.join(dir, path.dirname(file)), { recursive: true });
      writeFileSync(path.join(dir, file), rego(i, 1));
    });
    const port = await getPort({ host: '127.0.0.1' });
    sync = await startOpaSync([
      `--policies-dir=${dir}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
    ]);
    const url = `http://127.0.0.1:${port}`;
    const served = (version: number) =>
      waitFor(`all ${files.length} files at version ${version} in the bundle`, async () => {
        const bundle = await downloadBundle(url, 'policies');
        return files.every((file, i) => bundle.files.get(file) === rego(i, version)) ? true : undefined;
      });
    await served(1);
    files.forEach((file, i) => writeFileSync(path.join(dir, file), rego(i, 2)));
    await served(2);
  });
});
