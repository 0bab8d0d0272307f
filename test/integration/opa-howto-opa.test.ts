// What local mode prints works as printed, also behind a token file: a real OPA started on the written
// configuration gets the bundle (the configuration carries `credentials`, never the token itself);
// and opa-sync started directly, with no opa on PATH and no --opa-bin, finds the one `npm run tools`
// built in the tools cache.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { requireTool } from '../../scripts/tools.js';
import { cli } from '../../src/cli.js';
import { waitDecision } from '../harness/e2e.js';
import { extraOpa, httpRequest, waitFor, type OpaServer } from '../harness/index.js';

interface Running {
  stdout(): string;
  stop(): Promise<number>;
}

function start(args: string[], io: { path: string | undefined; cachedOpa?: string }): Running {
  const out = new PassThrough();
  const err = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  err.resume();
  const controller = new AbortController();
  const done = cli(args, { stdout: out, stderr: err, ...io }, controller.signal);
  return {
    stdout: () => Buffer.concat(chunks).toString('utf8'),
    async stop() {
      controller.abort('test');
      return done;
    },
  };
}

describe('the printed OPA configuration, as printed (real OPA)', function () {
  this.timeout(60_000);
  let dir: string;
  let opa: OpaServer | undefined;
  let sync: Running | undefined;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-howto-'));
    mkdirSync(path.join(dir, 'policies', 'app'), { recursive: true });
    writeFileSync(path.join(dir, 'policies', 'app', 'main.rego'), 'package app\n\nallow := true\n');
  });

  afterEach(async () => {
    await opa?.stop();
    opa = undefined;
    expect(await sync?.stop()).to.equal(0);
    sync = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  for (const tokens of [['s3cret-one'], ['s3cret-one', 's3cret-two']]) {
    it(`with a token file of ${tokens.length} token(s): an OPA on the written configuration gets the bundle`, async () => {
      const tokenFile = path.join(dir, 'tokens');
      writeFileSync(tokenFile, `${tokens.join('\n')}\n`);
      sync = start(
        [
          `--policies-dir=${path.join(dir, 'policies')}`,
          '--bundle-addr=127.0.0.1:0',
          `--bundles-dir=${path.join(dir, 'bundles')}`,
          `--bundle-token-file=${tokenFile}`,
          `--opa-bin=${requireTool('opa')}`,
        ],
        { path: process.env.PATH },
      );
      const config = path.join(dir, 'bundles', 'opa-config.yaml');
      await waitFor('the printed configuration', () =>
        sync?.stdout().includes(config) === true ? true : undefined,
      );
      const yaml = readFileSync(config, 'utf8');
      for (const token of tokens) {
        expect(yaml).not.to.include(token);
        expect(sync.stdout()).not.to.include(token);
      }
      expect(yaml).to.include('credentials:');
      // With several tokens the OPA takes one from the environment, as the printed lines say.
      const env = tokens.length === 1 ? {} : { OPA_SYNC_BUNDLE_TOKEN: tokens[1] as string };
      if (tokens.length > 1) expect(sync.stdout()).to.include('export OPA_SYNC_BUNDLE_TOKEN=');
      opa = await extraOpa({ extraArgs: [`--config-file=${config}`], env });
      await waitDecision(opa, 'app/allow', true);
    });
  }

  it('finds the opa of the tools cache when none is on PATH and --opa-bin is not given', async () => {
    const args = [
      `--policies-dir=${path.join(dir, 'policies')}`,
      '--bundle-addr=127.0.0.1:0',
      '--health-endpoint=127.0.0.1:0',
    ];
    const missing = start(args, { path: '/nonexistent', cachedOpa: path.join(dir, 'no-opa-here') });
    expect(await missing.stop()).to.equal(1);

    sync = start([...args, `--bundles-dir=${path.join(dir, 'bundles')}`], {
      path: '/nonexistent',
      cachedOpa: requireTool('opa'),
    });
    const url = await waitFor(
      'the bundle URL',
      () => /at (http:\/\/127\.0\.0\.1:\d+)\/bundles\//.exec(sync?.stdout() ?? '')?.[1],
    );
    await waitFor('the first bundle', async () =>
      (await httpRequest(`${url}/bundles/policies`)).status === 200 ? true : undefined,
    );
    expect(sync.stdout()).to.include(requireTool('opa'));
  });
});
