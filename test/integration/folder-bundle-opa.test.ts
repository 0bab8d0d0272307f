// The local policies folder, end to end: the folder source feeds the real bundle sink (publisher with
// `opa check` validation, registry, bundle server), and a real OPA long-polls the bundle. Edits of the
// files reach that OPA without a restart; a file that does not compile keeps its last good version
// served while the other files go on being updated; an invalid data.json is left out while the rest is
// served.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { requireTool } from '../../scripts/tools.js';
import { Fleet } from '../../src/bundles/fleet.js';
import { BundlePublisher } from '../../src/bundles/publisher.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { createBundleApp, listenBundleServer, type RunningServer } from '../../src/bundles/server.js';
import { Metrics } from '../../src/http/metrics.js';
import { DesiredState } from '../../src/model/desired-state.js';
import type { Outcome } from '../../src/model/outcome.js';
import { FolderSource } from '../../src/sources/folder.js';
import { runPart, type RunningPart } from '../harness/parts.js';
import { silentLogger } from '../../src/util/logger.js';
import { downloadBundle } from '../harness/bundles.js';
import { extraOpa, waitFor, type OpaServer } from '../harness/index.js';

const MAIN_V1 = 'package authz\n\nallow if input.user == "admin"\n\nversion := 1\n';
const MAIN_V2 = 'package authz\n\nallow if input.user == "admin"\n\nversion := 2\n';
// Not Rego: `opa check` refuses it, so the publisher must keep serving MAIN_V2.
const MAIN_BROKEN = 'package authz\n\nallow if {{{ input.user ==\n\nversion := 3\n';
const OTHER = (value: string): string => `package other\n\nvalue := ${JSON.stringify(value)}\n`;

describe('policies folder → bundle server → real OPA', () => {
  let folder: string;
  let state: DesiredState;
  let source: RunningPart;
  let registry: BundleRegistry;
  let server: RunningServer;
  let opa: OpaServer | undefined;
  const stop = new AbortController();
  let publishing: Promise<void> | undefined;
  const outcomes: Outcome[] = [];

  function put(rel: string, text: string): void {
    const file = path.join(folder, ...rel.split('/'));
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, text);
  }

  function lastOutcome(rel: string): Outcome | undefined {
    return outcomes.findLast((o) => o.origin.kind === 'file' && o.origin.path === rel);
  }

  async function query(dataPath: string, input: unknown = {}): Promise<unknown> {
    if (opa === undefined) throw new Error('OPA did not start');
    const res = await opa.request(`/v1/data/${dataPath}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ input }),
    });
    if (res.status !== 200) throw new Error(`OPA answered ${res.status}: ${res.body}`);
    return (JSON.parse(res.body) as { result?: unknown }).result;
  }

  async function until(what: string, dataPath: string, want: unknown, input: unknown = {}): Promise<void> {
    await waitFor(
      what,
      async () => {
        const got = await query(dataPath, input);
        if (JSON.stringify(got) !== JSON.stringify(want)) {
          throw new Error(`${dataPath} is ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
        }
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
  }

  before(async () => {
    folder = mkdtempSync(path.join(tmpdir(), 'opa-sync-folder-bundle-'));
    put('authz/main.rego', MAIN_V1);
    put('other/other.rego', OTHER('v1'));
    put('cfg/data.json', JSON.stringify({ limit: 3 }));
    // A unit test beside the policy is not part of the bundle (it would fail `opa check` on its own).
    put('authz/main_test.rego', 'package authz_test\n\ntest_x if data.authz.nothing_here.x\n');

    state = new DesiredState();
    source = runPart(new FolderSource({ dir: folder, state, logger: silentLogger(), debounceMs: 50 }));
    await source.waitReady();

    registry = new BundleRegistry();
    const metrics = new Metrics({ processMetrics: false });
    const publisher = new BundlePublisher({
      state,
      registry,
      logger: silentLogger(),
      opaBin: requireTool('opa'),
      defaultBundle: 'main',
      onOutcome: (o) => outcomes.push(o),
      metrics,
      debounceMs: 50,
    });
    publishing = publisher.run(stop.signal);
    await waitFor('the first bundle', () => (registry.isBuilt() ? true : undefined));

    const fleet = new Fleet(metrics, (name) => registry.get(name)?.revision);
    server = await listenBundleServer(
      createBundleApp({ registry, fleet, metrics, logger: silentLogger() }),
      '127.0.0.1',
      0,
    );
    const configFile = path.join(folder, '.opa-config.json');
    // OPA reads its config as YAML, and JSON is YAML. The file is hidden, so the source never loads it.
    writeFileSync(
      configFile,
      JSON.stringify({
        services: { s: { url: `http://127.0.0.1:${server.port}` } },
        bundles: {
          main: { service: 's', resource: 'bundles/main', polling: { long_polling_timeout_seconds: 10 } },
        },
      }),
    );
    opa = await extraOpa({ extraArgs: [`--config-file=${configFile}`] });
  });

  after(async () => {
    stop.abort();
    await publishing;
    await source.stop();
    await opa?.stop();
    await server?.close();
    rmSync(folder, { recursive: true, force: true });
  });

  it('serves a policy file and a data file to OPA', async () => {
    await until('authz.version 1', 'authz/version', 1);
    expect(await query('authz/allow', { user: 'admin' })).to.equal(true);
    expect(await query('authz/allow', { user: 'eve' })).to.equal(undefined);
    expect(await query('other/value')).to.equal('v1');
    expect(await query('cfg')).to.deep.equal({ limit: 3 });
    // The unit test file stays out of the bundle.
    expect(await query('authz_test')).to.equal(undefined);
    expect(lastOutcome('authz/main.rego')?.errors).to.deep.equal([]);
  });

  it('brings an edited file to OPA without a restart', async () => {
    const pid = opa?.process.pid;
    put('authz/main.rego', MAIN_V2);
    await until('authz.version 2', 'authz/version', 2);
    expect(opa?.process.pid).to.equal(pid);
  });

  it('keeps the last good version of a file that does not compile, and goes on serving the others', async () => {
    put('authz/main.rego', MAIN_BROKEN);
    await waitFor('the compile error to be reported', () =>
      (lastOutcome('authz/main.rego')?.errors.length ?? 0) > 0 ? true : undefined,
    );
    // OPA's own parse error, located in the file by its folder-relative path.
    expect(JSON.stringify(lastOutcome('authz/main.rego')?.errors))
      .to.contain('rego_parse_error')
      .and.contain('"file":"authz/main.rego"');

    // Another file changed after the broken one: the bundle that carries it was built from a state that
    // already held the broken file, and must carry main.rego's last good text. Asserted on what the
    // bundle server serves: OPA would keep its last good bundle on its own if it were given a broken one.
    put('other/other.rego', OTHER('v2'));
    const served = await waitFor('a served bundle with other.rego v2', async () => {
      const bundle = await downloadBundle(`http://127.0.0.1:${server.port}`, 'main');
      return bundle.files.get('other/other.rego') === OTHER('v2') ? bundle : undefined;
    });
    expect(served.files.get('authz/main.rego')).to.equal(MAIN_V2);
    await until('other.value v2', 'other/value', 'v2');
    expect(await query('authz/version')).to.equal(2);
    expect(await query('authz/allow', { user: 'admin' })).to.equal(true);

    // Fixed again: the fixed version is served.
    put('authz/main.rego', MAIN_V2.replace('version := 2', 'version := 4'));
    await until('authz.version 4', 'authz/version', 4);
    expect(lastOutcome('authz/main.rego')?.errors).to.deep.equal([]);
  });

  it('leaves out an invalid data.json and serves the rest', async () => {
    put('cfg/data.json', '{"limit": ');
    put('more/data.json', JSON.stringify({ extra: true }));
    await until('more.extra', 'more', { extra: true });
    await until('cfg to be left out', 'cfg', undefined);
    const problem = lastOutcome('cfg/data.json')?.errors[0];
    expect(problem?.code).to.equal('invalid_json');
    expect(problem?.message).to.contain('"cfg/data.json"');
    expect(await query('authz/version')).to.equal(4);
    expect(await query('other/value')).to.equal('v2');

    put('cfg/data.json', JSON.stringify({ limit: 5 }));
    await until('cfg.limit 5', 'cfg/limit', 5);
  });
});
