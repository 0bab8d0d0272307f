// The fleet view under hostile status reports: nothing kept is unbounded (errors reduced to OPA's own
// fields, a byte budget per instance and for the view), a report nested too deep is refused with a
// clear 400 and changes nothing, /v1/fleet always renders, and a report costs what it holds (the
// gauges are counted per report, not by walking the fleet).
import http from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect } from 'chai';
import fc from 'fast-check';
import { Fleet, MAX_REPORT_DEPTH, nestingDepth, parseStatusReport } from '../../src/bundles/fleet.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { createBundleApp, listenBundleServer } from '../../src/bundles/server.js';
import { Metrics } from '../../src/http/metrics.js';
import { InvalidInputError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { metricValue } from '../harness/metrics.js';

const NOW = '2026-12-01T12:00:00Z';

/** A full garbage collection, without starting node with --expose-gc. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

function report(id: string, bundles: Record<string, unknown> = {}): unknown {
  return { labels: { id, version: '1.22.3' }, bundles };
}

/** `[[[…]]]`, `depth` levels deep, built without recursion. */
function nested(depth: number): unknown {
  let value: unknown = [];
  for (let i = 1; i < depth; i += 1) value = [value];
  return value;
}

describe('fleet view: bounded status intake', () => {
  it('keeps only OPA’s fields of each error, the first few, with strings cut', () => {
    const errors = Array.from({ length: 50 }, (_, i) => ({
      code: 'bundle_error',
      message: 'x'.repeat(5000),
      location: { file: `f${i}.rego`, row: i, col: 1, extra: nested(10) },
      junk: nested(20),
    }));
    const instance = parseStatusReport(report('a', { main: { errors } }), undefined, NOW);
    const kept = instance.bundles[0]?.errors ?? [];
    expect(kept).to.have.length(5);
    expect(kept[0]).to.have.keys('code', 'message', 'location');
    expect(kept[0]?.location).to.deep.equal({ file: 'f0.rego', row: 0, col: 1 });
    expect(kept[0]?.message?.length).to.be.at.most(1025);
  });

  it('refuses a report nested deeper than the cap with a clear error, whatever the nesting', () => {
    expect(nestingDepth(nested(5000), MAX_REPORT_DEPTH)).to.be.greaterThan(MAX_REPORT_DEPTH);
    expect(nestingDepth({ a: [1, { b: 2 }] }, MAX_REPORT_DEPTH)).to.equal(3);
    const deep = report('deep', { main: { errors: [nested(5000)] } });
    expect(() => parseStatusReport(deep, undefined, NOW))
      .to.throw(InvalidInputError, `nested deeper than ${MAX_REPORT_DEPTH}`)
      .with.property('code', 'invalid_status_report');
  });

  it('keeps each instance within its byte budget, and the view within its own (oldest evicted, counted)', async () => {
    const metrics = new Metrics({ processMetrics: false });
    const fleet = new Fleet(
      metrics,
      () => undefined,
      () => new Date(NOW),
      { maxBytes: 1024 * 1024 },
    );
    const bundles = Object.fromEntries(
      Array.from({ length: 64 }, (_, i) => [
        `b${i}`,
        { active_revision: 'r'.repeat(1000), errors: [{ code: 'c', message: 'm'.repeat(1000) }] },
      ]),
    );
    for (let i = 0; i < 500; i += 1) fleet.record(report(`i${i}`, bundles), undefined);
    const { instances, bytes } = fleet.size;
    expect(bytes).to.be.at.most(1024 * 1024);
    expect(instances).to.be.lessThan(500);
    expect(fleet.list().some((i) => i.id === 'i499')).to.equal(true);
    expect(fleet.list().some((i) => i.id === 'i0')).to.equal(false);
    expect(await metricValue(metrics, 'opa_sync_fleet_evictions_total')).to.equal(500 - instances);
  });

  it('counts the gauges per report: a report looks up only its own bundles, never the whole fleet', () => {
    const metrics = new Metrics({ processMetrics: false });
    let lookups = 0;
    const fleet = new Fleet(metrics, () => {
      lookups += 1;
      return 'rev-1';
    });
    const bundles = Object.fromEntries(
      Array.from({ length: 64 }, (_, i) => [`b${i}`, { active_revision: 'rev-1' }]),
    );
    for (let i = 0; i < 1000; i += 1) fleet.record(report(`i${i}`, bundles), undefined);
    lookups = 0;
    fleet.record(report('one-more', bundles), undefined);
    // At most one lookup per bundle of that report (none once each bundle has its counter).
    expect(lookups).to.be.at.most(64);
  });

  it('gives the same gauges counted per report as recounted from scratch (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            id: fc.constantFrom('a', 'b', 'c', 'd'),
            revisions: fc.dictionary(fc.constantFrom('x', 'y', 'z'), fc.constantFrom('r1', 'r2')),
          }),
          { maxLength: 30 },
        ),
        async (reports) => {
          const incremental = new Metrics({ processMetrics: false });
          const published: Record<string, string> = { x: 'r1', y: 'r2' };
          const fleet = new Fleet(incremental, (name) => published[name]);
          for (const r of reports) {
            const bundles = Object.fromEntries(
              Object.entries(r.revisions).map(([name, rev]) => [name, { active_revision: rev }]),
            );
            fleet.record(report(r.id, bundles), undefined);
          }
          const counted = await Promise.all(
            ['x', 'y', 'z'].map((b) =>
              metricValue(incremental, 'opa_sync_fleet_instances_current_revision', { bundle: b }),
            ),
          );
          fleet.updateGauges();
          const recounted = await Promise.all(
            ['x', 'y', 'z'].map((b) =>
              metricValue(incremental, 'opa_sync_fleet_instances_current_revision', { bundle: b }),
            ),
          );
          expect(counted).to.deep.equal(recounted);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('survives a flood of 10,000 distinct instances with oversized and deep reports: bounded, and /v1/fleet answers', async function () {
    this.timeout(120_000);
    const registry = new BundleRegistry();
    const metrics = new Metrics({ processMetrics: false });
    const fleet = new Fleet(metrics, (name) => registry.get(name)?.revision, undefined, {
      maxBytes: 8 * 1024 * 1024,
    });
    const server = await listenBundleServer(
      createBundleApp({ registry, fleet, metrics, logger: silentLogger() }),
      '127.0.0.1',
      0,
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const post = (body: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port: server.port,
            path: '/status',
            method: 'POST',
            agent,
            headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    collectGarbage();
    const heapBefore = process.memoryUsage().heapUsed;
    try {
      // The report that took the server to 4 GB: nested errors, a fresh id each time.
      const oom = (i: number): string =>
        `{"labels":{"id":"oom-${i}"},"bundles":{"policies":{"errors":[[${'[],'.repeat(330_000)}[]]]}}}`;
      const big = (i: number): string =>
        JSON.stringify(
          report(
            `big-${i}`,
            Object.fromEntries(
              Array.from({ length: 64 }, (_, b) => [
                `b${b}`,
                { errors: Array(2).fill({ code: 'c', message: 'm'.repeat(700) }) },
              ]),
            ),
          ),
        );
      const deep = `{"labels":{"id":"deep"},"bundles":{"p":{"errors":[${'['.repeat(5000)}${']'.repeat(5000)}]}}}`;
      const statuses: number[] = [];
      for (let i = 0; i < 10_000; i += 50) {
        const batch: Promise<number>[] = [];
        for (let j = i; j < i + 50; j += 1) {
          const body =
            j % 500 === 0
              ? oom(j)
              : j % 100 === 1
                ? deep
                : j % 10 === 2
                  ? big(j)
                  : JSON.stringify(report(`plain-${j}`));
          batch.push(post(body));
        }
        statuses.push(...(await Promise.all(batch)));
      }
      expect(statuses.filter((s) => s === 400).length).to.equal(100); // the deep ones, refused
      expect(statuses.filter((s) => s === 200).length).to.equal(9900); // everything else, kept within bounds
      expect(fleet.size.bytes).to.be.at.most(8 * 1024 * 1024);
      const view = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: server.port, path: '/v1/fleet', agent }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
            );
          })
          .on('error', reject);
      });
      expect(view.status).to.equal(200);
      const { instances } = JSON.parse(view.body) as { instances: { id: string }[] };
      expect(instances.length).to.equal(fleet.size.instances);
      expect(instances.some((i) => i.id === 'deep')).to.equal(false);
      // What the view holds stays within its budget, whatever came in: after a full collection the
      // heap is back near where it started (the old view kept every nested report: gigabytes).
      collectGarbage();
      expect(process.memoryUsage().heapUsed - heapBefore).to.be.lessThan(64 * 1024 * 1024);
    } finally {
      agent.destroy();
      await server.close();
    }
  });
});
