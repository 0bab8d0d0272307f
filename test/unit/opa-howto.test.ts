// Local mode's first minute: the OPA configuration is written to the bundles folder and printed as it
// is in the file, with a command that can be pasted as is (full paths, quoted for the shell).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { parse } from 'yaml';
import {
  opaConfigYaml,
  opaRunCommand,
  serverUrl,
  shellWord,
  showOpaHowTo,
} from '../../src/bundles/opa-howto.js';
import { capturingLogger } from '../harness/logs.js';

function collect(): { stream: PassThrough; text(): string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

describe('how to point an OPA at the local bundle server', () => {
  it('is an OPA configuration that long-polls the bundle from the server', () => {
    expect(parse(opaConfigYaml('http://127.0.0.1:8282', 'policies'))).to.deep.equal({
      services: { 'opa-sync': { url: 'http://127.0.0.1:8282' } },
      bundles: {
        policies: {
          service: 'opa-sync',
          resource: 'bundles/policies',
          polling: { long_polling_timeout_seconds: 60 },
        },
      },
      status: { service: 'opa-sync' },
    });
    expect(serverUrl('0.0.0.0', 8282, false)).to.equal('http://127.0.0.1:8282');
    expect(serverUrl('::', 8282, true)).to.equal('https://[::1]:8282');
    expect(serverUrl('127.0.0.2', 1, false)).to.equal('http://127.0.0.2:1');
  });

  it('quotes for the shell only what needs it', () => {
    expect(shellWord('/home/me/.cache/opa-sync/tools/opa-v1.22.3/opa')).to.equal(
      '/home/me/.cache/opa-sync/tools/opa-v1.22.3/opa',
    );
    expect(shellWord('--config-file=/x/bundles/opa-config.yaml')).to.equal(
      '--config-file=/x/bundles/opa-config.yaml',
    );
    expect(shellWord('/my stuff/opa')).to.equal(`'/my stuff/opa'`);
    expect(shellWord("/it's/opa")).to.equal(`'/it'\\''s/opa'`);
    expect(shellWord('$HOME')).to.equal(`'$HOME'`);
    expect(opaRunCommand('/o p/opa', '/c/opa-config.yaml')).to.equal(
      `'/o p/opa' run --server --addr=127.0.0.1:8181 --config-file=/c/opa-config.yaml`,
    );
  });

  it('writes the configuration it prints to <bundles dir>/opa-config.yaml and prints the command on it', () => {
    const work = mkdtempSync(path.join(tmpdir(), 'opa-sync-howto-'));
    const out = collect();
    const { logger, lines } = capturingLogger();
    showOpaHowTo({
      out: out.stream,
      logger,
      url: 'http://127.0.0.1:8282',
      bundle: 'policies',
      opaBin: '/tools/opa',
      dir: path.join(work, 'bundles'),
      folder: path.join(work, 'policies'),
    });
    const file = path.join(work, 'bundles', 'opa-config.yaml');
    const text = out.text();
    expect(text).to.include(
      'opa-sync serves the bundle "policies" at http://127.0.0.1:8282/bundles/policies\n',
    );
    expect(text).to.include(`An OPA pulls it with this configuration, written to ${file}:\n`);
    expect(text).to.include(`\n  /tools/opa run --server --addr=127.0.0.1:8181 --config-file=${file}\n`);
    expect(text).to.include(`Then edit a .rego file under ${path.join(work, 'policies')}: the OPA has it`);
    const written = readFileSync(file, 'utf8');
    expect(written).to.equal(opaConfigYaml('http://127.0.0.1:8282', 'policies'));
    // Printed as it is in the file, indented by two.
    const printed = written
      .trimEnd()
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n');
    expect(text).to.include(printed);
    expect(lines).to.deep.equal([]);
  });

  it('says why, and still prints everything, when the configuration cannot be written', () => {
    const work = mkdtempSync(path.join(tmpdir(), 'opa-sync-howto-'));
    const notADir = path.join(work, 'bundles');
    writeFileSync(notADir, 'a file');
    const out = collect();
    const { logger, lines } = capturingLogger();
    showOpaHowTo({
      out: out.stream,
      logger,
      url: 'http://127.0.0.1:8282',
      bundle: 'policies',
      opaBin: '/tools/opa',
      dir: notADir,
      folder: 'policies',
    });
    expect(lines.map((l) => [l.msg, l.file])).to.deep.equal([
      ['could not write the OPA configuration', path.join(notADir, 'opa-config.yaml')],
    ]);
    expect(out.text()).to.include('An OPA pulls it with this configuration (save it as opa-config.yaml):');
    expect(out.text()).to.include(
      '/tools/opa run --server --addr=127.0.0.1:8181 --config-file=opa-config.yaml',
    );
  });
});
