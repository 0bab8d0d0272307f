// A part whose work throws something unexpected is never silent: for each part, a throw injected at a
// seam of our own ends its run() with that error, so the supervisor logs, counts and shows it. (The
// Kubernetes parts have the same test beside their own tests.)
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { BundlePublisher } from '../../src/bundles/publisher.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { listen, createOpsApp } from '../../src/http/ops-server.js';
import { Metrics } from '../../src/http/metrics.js';
import { ServerPart } from '../../src/http/server-part.js';
import { Supervisor } from '../../src/lifecycle/supervisor.js';
import { DesiredState, type OriginState } from '../../src/model/desired-state.js';
import { OpaPusher, type OpaApi } from '../../src/opa/pusher.js';
import { FolderSource } from '../../src/sources/folder.js';
import { silentLogger } from '../../src/util/logger.js';
import { capturingLogger } from '../harness/logs.js';
import { runPart } from '../harness/parts.js';
import { waitFor } from '../harness/wait.js';

function policy(name: string): OriginState {
  return {
    origin: { kind: 'configmap', role: 'policy', namespace: 'opa', name },
    modules: [{ id: `opa/${name}/p.rego`, text: 'package p\n' }],
    documents: [],
    problems: [],
  };
}

/** Our narrow OPA seam, answering like an empty OPA, with one call that throws what a bug would. */
function opaThatThrows(on: 'putPolicy' | 'putData', err: Error): OpaApi & { calls: string[] } {
  const calls: string[] = [];
  const data = new Map<string, unknown>();
  return {
    calls,
    putPolicy: (id) => {
      calls.push(`putPolicy ${id}`);
      return on === 'putPolicy' ? Promise.reject(err) : Promise.resolve();
    },
    deletePolicy: () => Promise.resolve(),
    listPolicyIds: () => Promise.resolve([]),
    putData: (p, value) => {
      calls.push(`putData ${p.join('/')}`);
      // The marker write is what every full push starts with: let it through.
      if (on === 'putData' && p[0] !== 'opa_sync') return Promise.reject(err);
      data.set(p.join('/'), value);
      return Promise.resolve();
    },
    removeData: () => Promise.resolve(),
    patchData: () => Promise.resolve(),
    getData: (p) =>
      Promise.resolve(
        data.has(p.join('/')) ? { defined: true, value: data.get(p.join('/')) } : { defined: false },
      ),
  };
}

describe('a throw inside a part ends its run() with that error', () => {
  it('the OPA pusher (a RangeError while loading a data document), and its checker loop stops too', async () => {
    const state = new DesiredState();
    const err = new RangeError('Maximum call stack size exceeded');
    const opa = opaThatThrows('putData', err);
    const pusher = new OpaPusher({
      client: opa,
      state,
      logger: silentLogger(),
      onOutcome: () => undefined,
      resyncIntervalMs: 20,
    });
    const running = runPart(pusher);
    state.set({
      origin: { kind: 'configmap', role: 'data', namespace: 'opa', name: 'deep' },
      modules: [],
      documents: [{ path: ['opa', 'deep', 'x'], value: {} }],
      problems: [],
    });
    let error: unknown;
    await running.done.catch((e: unknown) => {
      error = e;
    });
    expect(error).to.equal(err);
    // The checker loop ended with the run: no more marker reads after it returned.
    const calls = opa.calls.length;
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(opa.calls.length).to.equal(calls);
  });

  it('the bundle publisher (a TypeError from reporting an outcome)', async () => {
    const state = new DesiredState();
    state.set({ ...policy('x'), modules: [], documents: [{ path: ['opa', 'x'], value: { a: 1 } }] });
    const publisher = new BundlePublisher({
      state,
      registry: new BundleRegistry(),
      logger: silentLogger(),
      // No module to compile, so the opa binary is never run.
      opaBin: '/nonexistent/opa',
      defaultBundle: 'main',
      onOutcome: () => {
        throw new TypeError("Cannot read properties of undefined (reading 'errors')");
      },
      debounceMs: 0,
    });
    let error: unknown;
    await runPart(publisher).done.catch((e: unknown) => {
      error = e;
    });
    expect(error).to.be.instanceOf(TypeError);
  });

  it('the folder source (a listener of the desired state throwing during the initial scan)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-fail-'));
    try {
      mkdirSync(path.join(dir, 'a'));
      writeFileSync(path.join(dir, 'a', 'data.json'), '{"x": 1}');
      const state = new DesiredState();
      state.subscribe(() => {
        throw new Error('listener bug');
      });
      const folder = new FolderSource({ dir, state, logger: silentLogger(), debounceMs: 10 });
      let error: unknown;
      await runPart(folder).done.catch((e: unknown) => {
        error = e;
      });
      expect(String(error)).to.include('listener bug');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a server whose port is taken, with the address and the flag to change in the message', async () => {
    const busy: Server = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const { port } = busy.address() as AddressInfo;
    try {
      const metrics = new Metrics({ processMetrics: false });
      const app = createOpsApp(
        metrics,
        { readiness: () => ({ ready: true, checks: {} }), health: () => ({ healthy: true, parts: {} }) },
        silentLogger(),
      );
      const ops = new ServerPart({
        name: 'ops',
        flag: '--health-endpoint',
        host: '127.0.0.1',
        port,
        listen: () => listen(app, '127.0.0.1', port),
      });
      let error: unknown;
      await runPart(ops).done.catch((e: unknown) => {
        error = e;
      });
      expect(String(error)).to.include(`cannot listen on 127.0.0.1:${port}: the port is already in use`);
      expect(String(error)).to.include('--health-endpoint=HOST:PORT');
    } finally {
      busy.close();
    }
  });

  it('under the supervisor: a pusher that keeps failing shows in /health and is restarted with a full push', async () => {
    const state = new DesiredState();
    state.set(policy('a'));
    const opa = opaThatThrows('putPolicy', new TypeError('bug in the push'));
    const pusher = new OpaPusher({
      client: opa,
      state,
      logger: silentLogger(),
      onOutcome: () => undefined,
      resyncIntervalMs: 1000,
    });
    const { logger, lines } = capturingLogger();
    const supervisor = new Supervisor([pusher], { logger, backoff: { minMs: 10, maxMs: 10, jitter: 0 } });
    const stop = new AbortController();
    const running = supervisor.run(stop.signal);
    await waitFor('two restarts', () =>
      (supervisor.health().parts.opa?.restarts ?? 0) >= 2 ? true : undefined,
    );
    expect(supervisor.health().parts.opa?.lastError).to.equal('bug in the push');
    // Each run starts with a full push: the marker is written again every time.
    expect(opa.calls.filter((c) => c === 'putData opa_sync/marker').length).to.be.at.least(2);
    expect(
      lines.filter((l) => l.msg === 'part failed; restarting it' && l.part === 'opa').length,
    ).to.be.at.least(2);
    stop.abort();
    await running;
  });
});
