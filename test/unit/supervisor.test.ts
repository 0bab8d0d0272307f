// The supervisor: a part that fails is logged with its name and error, counted, shown in /health and
// /ready, then restarted with backoff or, for 'exit' parts and configuration errors, everything stops.
import { expect } from 'chai';
import { Metrics } from '../../src/http/metrics.js';
import type { Part } from '../../src/lifecycle/part.js';
import { Supervisor } from '../../src/lifecycle/supervisor.js';
import { untilAborted } from '../../src/lifecycle/wake.js';
import { ConfigError } from '../../src/util/errors.js';
import { capturingLogger } from '../harness/logs.js';
import { metricValue } from '../harness/metrics.js';
import { waitFor } from '../harness/wait.js';

const FAST = { minMs: 5, maxMs: 20, jitter: 0 };

/** A part that runs until stopped, records the order it was started and stopped in, and can be told to fail. */
function part(name: string, events: string[], onFailure: Part['onFailure'] = 'restart') {
  let failNext: Error | undefined;
  let wakeFail: (() => void) | undefined;
  let runs = 0;
  const p = {
    name,
    onFailure,
    ready: () => runs > 0,
    get runs() {
      return runs;
    },
    fail(err: Error) {
      failNext = err;
      wakeFail?.();
    },
    async run(signal: AbortSignal) {
      runs += 1;
      events.push(`start ${name}`);
      const failed = new Promise<void>((resolve) => {
        wakeFail = resolve;
      });
      try {
        await Promise.race([untilAborted(signal), failed]);
        if (failNext !== undefined && !signal.aborted) {
          const err = failNext;
          failNext = undefined;
          throw err;
        }
      } finally {
        events.push(`stop ${name}`);
      }
    },
  } satisfies Part & Record<string, unknown>;
  return p;
}

describe('Supervisor', () => {
  it("shows an advisory part's readiness in /ready's checks without making /ready fail", async () => {
    const events: string[] = [];
    const server = part('server', events);
    const advisory = { ...part('oci', events), advisory: true, ready: () => false } satisfies Part;
    const supervisor = new Supervisor([server, advisory], {
      logger: capturingLogger().logger,
      backoff: FAST,
    });
    const stop = new AbortController();
    const running = supervisor.run(stop.signal);
    await waitFor('both started', () => (events.length === 2 ? true : undefined));
    expect(supervisor.readiness()).to.deep.equal({ ready: true, checks: { server: true, oci: false } });
    stop.abort();
    await running;
  });

  it("gives the reasons a part not ready states in /ready's reasons, and none for a ready part", async () => {
    const events: string[] = [];
    const stale = ['the watch of policy ConfigMaps of opa has heard nothing from the API server since …'];
    const source = { ...part('source', events), ready: () => false, notReady: () => stale } satisfies Part;
    const sink = {
      ...part('sink', events),
      notReady: () => ['never shown: the part is ready'],
    } satisfies Part;
    const supervisor = new Supervisor([sink, source], { logger: capturingLogger().logger, backoff: FAST });
    const stop = new AbortController();
    const running = supervisor.run(stop.signal);
    await waitFor('both started', () => (events.length === 2 ? true : undefined));
    expect(supervisor.readiness()).to.deep.equal({
      ready: false,
      checks: { sink: true, source: false },
      reasons: { source: stale },
    });
    stop.abort();
    await running;
  });

  it('starts parts in order and stops them in reverse order', async () => {
    const events: string[] = [];
    const parts = [part('server', events), part('sink', events), part('source', events)];
    const supervisor = new Supervisor(parts, { logger: capturingLogger().logger, backoff: FAST });
    const stop = new AbortController();
    const running = supervisor.run(stop.signal);
    await waitFor('all started', () => (events.length === 3 ? true : undefined));
    expect(supervisor.readiness()).to.deep.equal({
      ready: true,
      checks: { server: true, sink: true, source: true },
    });
    stop.abort();
    await running;
    expect(events).to.deep.equal([
      'start server',
      'start sink',
      'start source',
      'stop source',
      'stop sink',
      'stop server',
    ]);
    expect(supervisor.health().parts.sink?.phase).to.equal('stopped');
  });

  it('restarts a failed "restart" part after the backoff, logging, counting and showing the failure', async () => {
    const events: string[] = [];
    const sink = part('sink', events);
    const { logger, lines } = capturingLogger();
    const metrics = new Metrics({ processMetrics: false });
    const supervisor = new Supervisor([sink], {
      logger,
      metrics,
      backoff: { minMs: 300, maxMs: 300, jitter: 0 },
    });
    const stop = new AbortController();
    const running = supervisor.run(stop.signal);
    await waitFor('started', () => (sink.runs === 1 ? true : undefined));

    sink.fail(new RangeError('Maximum call stack size exceeded'));
    await waitFor('the failure shown', () =>
      supervisor.health().parts.sink?.phase === 'restarting' ? true : undefined,
    );
    const health = supervisor.health();
    expect(health.healthy).to.equal(false);
    expect(health.parts.sink).to.deep.include({
      phase: 'restarting',
      restarts: 1,
      lastError: 'Maximum call stack size exceeded',
    });
    expect(supervisor.readiness()).to.deep.equal({ ready: false, checks: { sink: false } });
    expect(await metricValue(metrics, 'opa_sync_part_failures_total', { part: 'sink' })).to.equal(1);
    expect(await metricValue(metrics, 'opa_sync_part_up', { part: 'sink' })).to.equal(0);
    const logged = lines.find((l) => l.msg === 'part failed; restarting it');
    expect(logged).to.deep.include({ part: 'sink', err: 'Maximum call stack size exceeded', retryInMs: 300 });

    await waitFor('the restart', () => (sink.runs === 2 ? true : undefined));
    expect(supervisor.health()).to.deep.include({ healthy: true });
    expect(await metricValue(metrics, 'opa_sync_part_up', { part: 'sink' })).to.equal(1);
    stop.abort();
    await running;
  });

  it('stops everything and rejects when an "exit" part fails', async () => {
    const events: string[] = [];
    const server = part('server', events, 'exit');
    const source = part('source', events);
    const supervisor = new Supervisor([server, source], { logger: capturingLogger().logger, backoff: FAST });
    const running = supervisor.run(new AbortController().signal);
    await waitFor('started', () => (events.length === 2 ? true : undefined));
    server.fail(new Error('cannot listen on 127.0.0.1:8282: the port is already in use'));
    let error: unknown;
    await running.catch((err: unknown) => {
      error = err;
    });
    expect(String(error)).to.include('the port is already in use');
    expect(events).to.deep.equal(['start server', 'start source', 'stop server', 'stop source']);
    expect(supervisor.health().parts.server).to.deep.include({ phase: 'failed' });
  });

  it('exits on a configuration error even from a "restart" part: it cannot heal', async () => {
    const events: string[] = [];
    const source = part('replication', events);
    const supervisor = new Supervisor([source], { logger: capturingLogger().logger, backoff: FAST });
    const running = supervisor.run(new AbortController().signal);
    await waitFor('started', () => (source.runs === 1 ? true : undefined));
    source.fail(new ConfigError(['--replicate=v1/namespaces: Namespace is cluster-scoped']));
    let error: unknown;
    await running.catch((err: unknown) => {
      error = err;
    });
    expect(error).to.be.instanceOf(ConfigError);
    expect(source.runs).to.equal(1);
  });

  it('takes a run() that returns without being asked to as a failure', async () => {
    const quitter: Part = { name: 'quitter', onFailure: 'restart', ready: () => true, run: async () => {} };
    const { logger, lines } = capturingLogger();
    const supervisor = new Supervisor([quitter], { logger, backoff: { minMs: 1000, maxMs: 1000 } });
    const stop = new AbortController();
    const running = supervisor.run(stop.signal);
    await waitFor('the failure', () =>
      supervisor.health().parts.quitter?.phase === 'restarting' ? true : undefined,
    );
    expect(lines.find((l) => l.msg === 'part failed; restarting it')?.err).to.equal(
      'quitter stopped although nobody asked it to',
    );
    stop.abort();
    await running;
  });

  it('refuses two parts with the same name (their health and metrics would mix)', () => {
    const events: string[] = [];
    expect(
      () => new Supervisor([part('a', events), part('a', events)], { logger: capturingLogger().logger }),
    ).to.throw('two parts are named a');
  });
});
