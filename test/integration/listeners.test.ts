// Nothing piles up on a signal: after 1,000 changes of the desired state (each pushed into a real OPA
// and built into a bundle) and 1,000 long polls held and answered by the bundle server, the run
// signal has exactly the listeners it had once the parts were running, and no
// MaxListenersExceededWarning was emitted.
import { getEventListeners } from 'node:events';
import http from 'node:http';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import { BundlePublisher } from '../../src/bundles/publisher.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { createBundleApp, listenBundleServer } from '../../src/bundles/server.js';
import { Fleet } from '../../src/bundles/fleet.js';
import { Metrics } from '../../src/http/metrics.js';
import { ServerPart } from '../../src/http/server-part.js';
import type { Part } from '../../src/lifecycle/part.js';
import { DesiredState, type OriginState } from '../../src/model/desired-state.js';
import { OpaClient } from '../../src/opa/client.js';
import { OpaPusher } from '../../src/opa/pusher.js';
import { silentLogger } from '../../src/util/logger.js';
import { requireTool } from '../../scripts/tools.js';
import { sharedOpa, waitFor } from '../harness/index.js';

const CHANGES = 1000;
const POLLS = 1000;

function origin(i: number): OriginState {
  return {
    origin: { kind: 'configmap', role: 'policy', namespace: 'listeners', name: `p${i % 50}` },
    modules: [{ id: `listeners/p${i % 50}/p.rego`, text: `package listeners.p${i % 50}\n\nv := ${i}\n` }],
    documents: [],
    problems: [],
  };
}

/** A long poll as OPA sends it; resolves with the status of the answer. */
function longPoll(agent: http.Agent, port: number, etag: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port,
        path: '/bundles/main',
        agent,
        headers: { 'If-None-Match': etag, Prefer: 'modes=snapshot;wait=60' },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
  });
}

describe('listeners on the run signal (real OPA, real opa compiler)', function () {
  this.timeout(180_000);

  it(`are back to their start value after ${CHANGES} changes and ${POLLS} held-and-answered polls`, async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(`${w.name}: ${w.message}`);
    };
    process.on('warning', onWarning);
    const opa = await sharedOpa();
    const state = new DesiredState();
    const listed = state.registerSource('test');
    const metrics = new Metrics({ processMetrics: false });
    const registry = new BundleRegistry();
    const client = new OpaClient({ url: `${opa.url}/v1`, timeoutMs: 10_000, logger: silentLogger() });
    const parts: Part[] = [
      new OpaPusher({
        client,
        state,
        logger: silentLogger(),
        onOutcome: () => undefined,
        resyncIntervalMs: 50,
      }),
      new BundlePublisher({
        state,
        registry,
        logger: silentLogger(),
        opaBin: requireTool('opa'),
        defaultBundle: 'main',
        onOutcome: () => undefined,
        debounceMs: 20,
      }),
    ];
    const fleet = new Fleet(metrics, (name) => registry.get(name)?.revision);
    const server = new ServerPart({
      name: 'bundle-server',
      flag: '--bundle-addr',
      host: '127.0.0.1',
      port: 0,
      listen: () =>
        listenBundleServer(
          createBundleApp({ registry, fleet, metrics, logger: silentLogger() }),
          '127.0.0.1',
          0,
        ),
    });
    parts.push(server);
    const stop = new AbortController();
    const runs = parts.map((p) => p.run(stop.signal));
    const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
    try {
      state.set(origin(0));
      listed();
      await waitFor('every part ready', () => (parts.every((p) => p.ready()) ? true : undefined), {
        timeoutMs: 30_000,
      });
      const start = getEventListeners(stop.signal, 'abort').length;

      for (let i = 1; i <= CHANGES; i += 1) {
        state.set(origin(i));
        // Let the loops go idle and wake up again between changes, as they do under real traffic.
        if (i % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      const port = server.port as number;
      // The last change gave p0 `v := 1000`: once that bundle is out, the publisher has caught up.
      const etag = await waitFor('the last change in the bundle', () => {
        const bundle = registry.get('main');
        return bundle !== undefined && gunzipSync(bundle.bytes).includes(`v := ${CHANGES}\n`)
          ? bundle.etag
          : undefined;
      });
      const answers = Array.from({ length: POLLS }, () => longPoll(agent, port, etag));
      await waitFor(
        `${POLLS} polls held`,
        () => (registry.waiterCount('main') === POLLS ? true : undefined),
        {
          timeoutMs: 60_000,
        },
      );
      state.set({
        ...origin(0),
        modules: [{ id: 'listeners/p0/p.rego', text: 'package listeners.p0\n\nv := -1\n' }],
      });
      const statuses = await Promise.all(answers);
      expect(statuses.every((s) => s === 200)).to.equal(true);
      expect(registry.waiterCount()).to.equal(0);
      await waitFor('the pusher idle', () => (parts[0]?.ready() === true ? true : undefined));

      expect(getEventListeners(stop.signal, 'abort').length).to.equal(start);
      expect(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning'))).to.deep.equal([]);
    } finally {
      stop.abort();
      await Promise.all(runs);
      agent.destroy();
      client.close();
      process.off('warning', onWarning);
    }
  });
});
