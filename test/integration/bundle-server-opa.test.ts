// Real OPAs pulling from the bundle server: periodic polling activates and follows a new revision with
// 304s in between, a long-polling OPA gets a change within a second and stays quiet while idle, status
// reports fill the fleet view, and a token file keeps out an OPA without credentials. The bundle is
// made here by hand (tar-stream + gzip), so these tests do not depend on the bundle builder.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createGzip } from 'node:zlib';
import { expect } from 'chai';
import tar from 'tar-stream';
import { Fleet, type FleetInstance } from '../../src/bundles/fleet.js';
import { BundleRegistry, type PublishedBundle } from '../../src/bundles/registry.js';
import { createBundleApp, listenBundleServer, type RunningServer } from '../../src/bundles/server.js';
import { TokenFile } from '../../src/bundles/tokens.js';
import { Metrics } from '../../src/http/metrics.js';
import { silentLogger } from '../../src/util/logger.js';
import { extraOpa, httpRequest, waitFor, type OpaServer } from '../harness/index.js';
import { metricValue } from '../harness/metrics.js';

async function makeBundle(name: string, revision: string, rego: string): Promise<PublishedBundle> {
  const pack = tar.pack();
  const files: [string, string][] = [
    ['/.manifest', JSON.stringify({ revision, roots: ['fleet'] })],
    ['/fleet/p.rego', rego],
  ];
  for (const [file, content] of files) pack.entry({ name: file, mtime: new Date(0), mode: 0o644 }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack.pipe(createGzip())) chunks.push(chunk as Buffer);
  const bytes = Buffer.concat(chunks);
  const etag = `"sha256-${createHash('sha256').update(bytes).digest('hex')}"`;
  return { name, bytes, etag, revision };
}

const REGO_R1 = 'package fleet\n\nallow := true\n';
const regoWithRevision = (revision: string): string =>
  `${REGO_R1}\nrevision := ${JSON.stringify(revision)}\n`;

interface BundleServer {
  url: string;
  registry: BundleRegistry;
  metrics: Metrics;
  server: RunningServer;
}

async function startServer(tokens?: TokenFile): Promise<BundleServer> {
  const registry = new BundleRegistry();
  const metrics = new Metrics({ processMetrics: false });
  const fleet = new Fleet(metrics, (name) => registry.get(name)?.revision);
  const app = createBundleApp({ registry, fleet, tokens, metrics, logger: silentLogger() });
  const server = await listenBundleServer(app, '127.0.0.1', 0);
  return { url: `http://127.0.0.1:${server.port}`, registry, metrics, server };
}

let configDir: string;
let configCount = 0;
function configFile(config: unknown): string {
  const file = path.join(configDir, `opa-config-${++configCount}.json`);
  // OPA reads its config as YAML, and JSON is YAML.
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

function opaConfig(
  url: string,
  labels: Record<string, string>,
  polling: Record<string, number>,
  extra: { credentials?: unknown; statusUrl?: string } = {},
): unknown {
  const services: Record<string, unknown> = {
    s: { url, ...(extra.credentials === undefined ? {} : { credentials: extra.credentials }) },
  };
  if (extra.statusUrl !== undefined) services.status = { url: extra.statusUrl };
  return {
    services,
    bundles: { b: { service: 's', resource: 'bundles/b', polling } },
    status: { service: extra.statusUrl === undefined ? 's' : 'status' },
    labels,
  };
}

async function query(opa: OpaServer, rule: string): Promise<unknown> {
  const res = await opa.request(`/v1/data/fleet/${rule}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  if (res.status !== 200) throw new Error(`OPA answered ${res.status}: ${res.body}`);
  return (JSON.parse(res.body) as { result?: unknown }).result;
}

async function fleetOf(server: BundleServer, headers: Record<string, string> = {}): Promise<FleetInstance[]> {
  const res = await httpRequest(`${server.url}/v1/fleet`, { headers });
  expect(res.status).to.equal(200);
  return (JSON.parse(res.body) as { instances: FleetInstance[] }).instances;
}

const PERIODIC = { min_delay_seconds: 1, max_delay_seconds: 2 };

describe('bundle server with real OPAs', () => {
  before(() => {
    configDir = mkdtempSync(path.join(tmpdir(), 'opa-sync-bundle-opa-'));
  });
  after(() => {
    rmSync(configDir, { recursive: true, force: true });
  });

  describe('periodic polling and the fleet view', () => {
    let bs: BundleServer;
    let opas: OpaServer[] = [];
    before(async () => {
      bs = await startServer();
      bs.registry.publish(await makeBundle('b', 'r1', REGO_R1));
      bs.registry.markBuilt();
      opas = await Promise.all(
        ['one', 'two'].map((name) =>
          extraOpa({ extraArgs: [`--config-file=${configFile(opaConfig(bs.url, { name }, PERIODIC))}`] }),
        ),
      );
    });
    after(async () => {
      await Promise.all(opas.map((o) => o.stop()));
      await bs.server.close();
    });

    it('activates the bundle in each OPA', async () => {
      for (const opa of opas) {
        expect(
          await waitFor(`${opa.name} to activate`, async () =>
            (await query(opa, 'allow')) === true ? true : undefined,
          ),
        ).to.equal(true);
      }
    });

    it('answers unchanged polls with 304', async () => {
      await waitFor(
        'a few 304s',
        async () =>
          (await metricValue(bs.metrics, 'opa_sync_bundle_requests_total', { bundle: 'b', result: '304' })) >=
          2
            ? true
            : undefined,
        { timeoutMs: 20_000, intervalMs: 200 },
      );
      // Two OPAs, one download each of the one revision so far: every other poll was a 304.
      const downloads = await metricValue(bs.metrics, 'opa_sync_bundle_requests_total', {
        bundle: 'b',
        result: '200',
      });
      expect(downloads).to.equal(2);
    });

    it('lists both OPAs in the fleet with the revision they run', async () => {
      const instances = await waitFor(
        'both OPAs in the fleet on the current revision',
        async () => {
          const current = bs.registry.get('b')?.revision;
          const list = await fleetOf(bs);
          const onCurrent = list.filter((i) =>
            i.bundles.some((b) => b.name === 'b' && b.activeRevision === current),
          );
          return onCurrent.length === 2 ? list : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      );
      expect(instances.map((i) => i.labels.name).sort()).to.deep.equal(['one', 'two']);
      expect(new Set(instances.map((i) => i.id)).size).to.equal(2);
      for (const instance of instances) {
        expect(instance.labels.version).to.equal('1.22.3');
        expect(instance.bundles[0]?.lastSuccessfulActivation).to.be.a('string');
      }
      expect(await metricValue(bs.metrics, 'opa_sync_fleet_instances')).to.equal(2);
      expect(
        await metricValue(bs.metrics, 'opa_sync_fleet_instances_current_revision', { bundle: 'b' }),
      ).to.equal(2);
    });

    it('picks up a republished revision', async () => {
      const before200 = await metricValue(bs.metrics, 'opa_sync_bundle_requests_total', {
        bundle: 'b',
        result: '200',
      });
      bs.registry.publish(await makeBundle('b', 'r2', regoWithRevision('r2')));
      for (const opa of opas) {
        await waitFor(
          `${opa.name} to run r2`,
          async () => ((await query(opa, 'revision')) === 'r2' ? true : undefined),
          {
            timeoutMs: 20_000,
            intervalMs: 100,
          },
        );
      }
      expect(
        await metricValue(bs.metrics, 'opa_sync_bundle_requests_total', { bundle: 'b', result: '200' }),
      ).to.equal(before200 + 2);
      await waitFor(
        'the fleet to report r2',
        async () => {
          const list = await fleetOf(bs);
          return list.length === 2 && list.every((i) => i.bundles[0]?.activeRevision === 'r2')
            ? true
            : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      );
    });
  });

  describe('long polling', () => {
    let bs: BundleServer;
    let opa: OpaServer | undefined;
    before(async () => {
      bs = await startServer();
      bs.registry.publish(await makeBundle('b', 'r1', REGO_R1));
      bs.registry.markBuilt();
      opa = await extraOpa({
        extraArgs: [
          // A short timeout: each request is held just under 3 s, so the end of one hold comes soon.
          `--config-file=${configFile(opaConfig(bs.url, { name: 'long' }, { long_polling_timeout_seconds: 3 }))}`,
        ],
      });
    });
    after(async () => {
      await opa?.stop();
      await bs.server.close();
    });

    it('gets a change in under a second, and while idle each request is held until its timeout', async () => {
      const o = opa;
      if (o === undefined) throw new Error('OPA did not start');
      await waitFor('OPA to activate r1', async () =>
        (await query(o, 'allow')) === true ? true : undefined,
      );
      // OPA holds one request at a time: it is parked here, not polling.
      await waitFor(
        'OPA to park a long poll',
        async () =>
          (await metricValue(bs.metrics, 'opa_sync_bundle_long_polls_held')) === 1 ? true : undefined,
        { timeoutMs: 10_000, intervalMs: 50 },
      );

      const published = Date.now();
      bs.registry.publish(await makeBundle('b', 'r2', regoWithRevision('r2')));
      await waitFor('OPA to run r2', async () => ((await query(o, 'revision')) === 'r2' ? true : undefined), {
        timeoutMs: 10_000,
        intervalMs: 20,
      });
      const took = Date.now() - published;
      expect(took, `change reached OPA after ${took} ms`).to.be.below(1000);

      await waitFor(
        'OPA to park again',
        async () =>
          (await metricValue(bs.metrics, 'opa_sync_bundle_long_polls_held')) === 1 ? true : undefined,
        { timeoutMs: 10_000, intervalMs: 20 },
      );
      const parkedAt = Date.now();
      const answered = () => metricValue(bs.metrics, 'opa_sync_bundle_requests_total', { bundle: 'b' });
      const notModified = () =>
        metricValue(bs.metrics, 'opa_sync_bundle_requests_total', { bundle: 'b', result: '304' });
      const before = await answered();
      const before304 = await notModified();
      // Not a fixed pause: wait for the held request's answer, a 304 at the end of its hold (2.7 s).
      await waitFor(
        'the held long poll to be answered',
        async () => ((await answered()) > before ? true : undefined),
        { timeoutMs: 10_000, intervalMs: 20 },
      );
      expect(Date.now() - parkedAt, 'how long the idle long poll was held').to.be.at.least(1500);
      expect((await answered()) - before, 'requests answered during one hold').to.equal(1);
      expect((await notModified()) - before304).to.equal(1);
      expect(await query(o, 'revision')).to.equal('r2');
    });
  });

  describe('bearer tokens', () => {
    let bs: BundleServer;
    let open: BundleServer;
    let tokens: TokenFile | undefined;
    let opas: OpaServer[] = [];
    const token = 'fleet-token-0123456789';
    before(async () => {
      const tokenFile = path.join(configDir, 'tokens');
      writeFileSync(tokenFile, `# bundle clients\n${token}\n`);
      tokens = new TokenFile(tokenFile, silentLogger());
      bs = await startServer(tokens);
      bs.registry.publish(await makeBundle('b', 'r1', REGO_R1));
      bs.registry.markBuilt();
      // Status of the OPA without credentials goes to a server without tokens, where its errors can be seen.
      open = await startServer();
      open.registry.markBuilt();
      opas = await Promise.all([
        extraOpa({
          extraArgs: [
            `--config-file=${configFile(opaConfig(bs.url, { name: 'anonymous' }, PERIODIC, { statusUrl: open.url }))}`,
          ],
        }),
        extraOpa({
          extraArgs: [
            `--config-file=${configFile(opaConfig(bs.url, { name: 'trusted' }, PERIODIC, { credentials: { bearer: { token } } }))}`,
          ],
        }),
      ]);
    });
    after(async () => {
      await Promise.all(opas.map((o) => o.stop()));
      await bs.server.close();
      await open.server.close();
      tokens?.close();
    });

    it('lets the OPA with the token in and keeps the other out with 401', async () => {
      const [anonymous, trusted] = opas;
      if (anonymous === undefined || trusted === undefined) throw new Error('OPAs did not start');
      await waitFor('the trusted OPA to activate', async () =>
        (await query(trusted, 'allow')) === true ? true : undefined,
      );

      const refused = await waitFor(
        'the anonymous OPA to report a 401',
        async () => {
          const list = await fleetOf(open);
          const status = list.find((i) => i.labels.name === 'anonymous')?.bundles.find((b) => b.name === 'b');
          return status?.httpCode === 401 ? status : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      );
      expect(refused.activeRevision).to.equal(undefined);
      expect(refused.code).to.equal('bundle_error');
      expect(await query(anonymous, 'allow')).to.equal(undefined);
      expect((await anonymous.request('/health?bundles')).status).to.not.equal(200);
      expect(
        await metricValue(bs.metrics, 'opa_sync_bundle_requests_total', { result: '401' }),
      ).to.be.at.least(1);

      // The trusted OPA's own status reports carry its token, so they reach the guarded server.
      const unauthenticated = await httpRequest(`${bs.url}/v1/fleet`);
      expect(unauthenticated.status).to.equal(401);
      await waitFor(
        'the trusted OPA in the guarded fleet',
        async () => {
          const list = await fleetOf(bs, { authorization: `Bearer ${token}` });
          return list.some((i) => i.labels.name === 'trusted' && i.bundles[0]?.activeRevision === 'r1')
            ? true
            : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      );
    });
  });
});
