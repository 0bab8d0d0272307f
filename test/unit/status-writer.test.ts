// The status writer against a fake of our StatusPatcher seam: the latest outcome wins, the outcomes of
// several sinks are merged, failed writes are retried with the injected backoff, a ConfigMap that is
// gone is forgotten, and a patcher failing outside its contract rejects run().
import { expect } from 'chai';
import { Metrics } from '../../src/http/metrics.js';
import { StatusWriter } from '../../src/kube/status-writer.js';
import { DesiredState } from '../../src/model/desired-state.js';
import { KubeApiError } from '../../src/kube/errors.js';
import type { Outcome } from '../../src/model/outcome.js';
import type { ConfigMapOrigin } from '../../src/model/origin.js';
import { Backoff } from '../../src/util/backoff.js';
import { RetryableError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { FakePatcher, until, type PatchCall } from './kube-fakes.js';

const ANNOTATION = 'openpolicyagent.org/policy-status';
const origin = (name: string): ConfigMapOrigin => ({
  kind: 'configmap',
  role: 'policy',
  namespace: 'opa',
  name,
});
const ok = (name: string): Outcome => ({ origin: origin(name), errors: [] });
const failed = (name: string, code: string): Outcome => ({
  origin: origin(name),
  errors: [{ code, message: `${code} happened` }],
});

/** A Backoff that records the delays it hands out and its resets. */
class RecordingBackoff extends Backoff {
  readonly delays: number[] = [];
  resets = 0;

  constructor() {
    super({ minMs: 1, maxMs: 8, factor: 2, jitter: 0 });
  }

  override next(): number {
    const delay = super.next();
    this.delays.push(delay);
    return delay;
  }

  override reset(): void {
    this.resets += 1;
    super.reset();
  }
}

describe('StatusWriter', () => {
  let patcher: FakePatcher;
  let backoff: RecordingBackoff;
  let controller: AbortController;
  let metrics: Metrics;

  function writer(
    annotations: readonly string[] = [ANNOTATION],
    more: { state?: DesiredState; restoreIntervalMs?: number } = {},
  ): StatusWriter {
    return new StatusWriter({ patcher, annotations, logger: silentLogger(), metrics, backoff, ...more });
  }

  const values = (): (string | null | undefined)[] => patcher.calls.map((c) => c.annotations[ANNOTATION]);

  beforeEach(() => {
    patcher = new FakePatcher();
    backoff = new RecordingBackoff();
    controller = new AbortController();
    metrics = new Metrics();
  });

  afterEach(() => controller.abort());

  it('is a restartable Part named status, ready from the start', () => {
    const w = writer();
    expect([w.name, w.onFailure, w.ready()]).to.deep.equal(['status', 'restart', true]);
  });

  it('writes the latest outcome only, once, into every annotation key', async () => {
    const w = writer([ANNOTATION, 'example.com/status']);
    w.report(failed('p', 'rego_parse_error'));
    w.report(ok('p'));
    const run = w.run(controller.signal);
    await until('a write', () => patcher.calls.length === 1);
    expect(patcher.calls[0]).to.deep.equal({
      ref: { namespace: 'opa', name: 'p' },
      annotations: { [ANNOTATION]: '{"status":"ok"}', 'example.com/status': '{"status":"ok"}' },
    });
    w.report(failed('p', 'rego_parse_error'));
    await until('the second write', () => patcher.calls.length === 2);
    expect(values()[1]).to.equal(
      '{"status":"error","error":{"code":"rego_parse_error","message":"rego_parse_error happened"}}',
    );
    controller.abort();
    await run;
    expect(patcher.calls).to.have.lengthOf(2);
  });

  it('shows the errors of every sink, in sink order, and ok only when all are ok', async () => {
    const w = writer();
    const run = w.run(controller.signal);
    w.report(failed('p', 'opa_error'), 'opa');
    w.report(failed('p', 'bundle_error'), 'bundle');
    await until('a write with both', () =>
      values().some((v) => v?.includes('opa_error') && v.includes('bundle_error')),
    );
    const both = JSON.parse(values().at(-1) ?? '') as { error: { code: string }[] };
    expect(both.error.map((e) => e.code)).to.deep.equal(['bundle_error', 'opa_error']);
    w.report(ok('p'), 'bundle');
    await until('only the OPA error', () => {
      const last = values().at(-1) ?? '';
      return last.includes('opa_error') && !last.includes('bundle_error');
    });
    w.report(ok('p'), 'opa');
    await until('ok', () => values().at(-1) === '{"status":"ok"}');
    controller.abort();
    await run;
  });

  it('ignores outcomes of origins that are not ConfigMaps', async () => {
    const w = writer();
    w.report({ origin: { kind: 'file', role: 'policy', path: 'a.rego' }, errors: [] });
    w.report(ok('p'));
    const run = w.run(controller.signal);
    await until('a write', () => patcher.calls.length === 1);
    controller.abort();
    await run;
    expect(patcher.calls.map((c) => c.ref.name)).to.deep.equal(['p']);
  });

  it('retries a failed write with the injected backoff, and resets it after a success', async () => {
    const w = writer();
    const unreachable = (): Promise<never> =>
      Promise.reject(new RetryableError('kube_unreachable', 'PATCH: connect ECONNREFUSED'));
    patcher.answers.push(unreachable, () =>
      Promise.reject(new KubeApiError('kube_http_error', 'forbidden', { status: 403 })),
    );
    w.report(ok('p'));
    const run = w.run(controller.signal);
    await until('the third attempt', () => patcher.calls.length === 3);
    expect(backoff.delays).to.deep.equal([1, 2]);
    await until('the reset', () => backoff.resets === 1);
    expect(values()).to.deep.equal(['{"status":"ok"}', '{"status":"ok"}', '{"status":"ok"}']);
    const errors = (await metrics.registry.getSingleMetric('opa_sync_status_writes_total')?.get())?.values;
    expect(errors?.map((v) => [v.labels.result, v.value]).sort()).to.deep.equal([
      ['error', 2],
      ['ok', 1],
    ]);
    controller.abort();
    await run;
  });

  it('retries with the latest outcome when a newer one came during a failed write', async () => {
    const w = writer();
    let fail: (err: Error) => void = () => undefined;
    patcher.answers.push(() => new Promise((_, reject) => (fail = reject)));
    w.report(failed('p', 'old'));
    const run = w.run(controller.signal);
    await until('the first attempt', () => patcher.calls.length === 1);
    w.report(ok('p'));
    fail(new RetryableError('kube_timeout', 'no answer'));
    await until('the retry', () => patcher.calls.length === 2);
    expect(values()[1]).to.equal('{"status":"ok"}');
    controller.abort();
    await run;
  });

  it('forgets a ConfigMap that is gone (no retry, and no earlier sink errors on a later write)', async () => {
    const w = writer();
    patcher.answers.push(() => Promise.resolve('not-found'));
    w.report(failed('p', 'opa_error'), 'opa');
    const run = w.run(controller.signal);
    await until('the attempt', () => patcher.calls.length === 1);
    // Created again later: the bundle sink reports for it; the OPA error of the old one is forgotten.
    w.report(ok('p'), 'bundle');
    await until('the next write', () => patcher.calls.length === 2);
    expect(values()[1]).to.equal('{"status":"ok"}');
    expect(backoff.delays).to.deep.equal([]);
    controller.abort();
    await run;
    expect(patcher.calls).to.have.lengthOf(2);
  });

  it('rejects run() when the patcher throws something outside its contract, and writes it on the next run', async () => {
    const w = writer();
    const bug = new TypeError("Cannot read properties of undefined (reading 'metadata')");
    patcher.answers.push(() => Promise.reject(bug));
    w.report(ok('p'));
    let thrown: unknown;
    await w.run(controller.signal).catch((err: unknown) => {
      thrown = err;
    });
    expect(thrown).to.equal(bug);
    const run = w.run(controller.signal);
    await until('the write of the restarted run', () => patcher.calls.length === 2);
    controller.abort();
    await run;
  });

  it('stops during a write and keeps it for the next run', async () => {
    const w = writer();
    patcher.answers.push(
      () =>
        new Promise((_, reject) =>
          controller.signal.addEventListener('abort', () =>
            reject(new DOMException('aborted', 'AbortError')),
          ),
        ),
    );
    w.report(ok('p'));
    const run = w.run(controller.signal);
    await until('the attempt', () => patcher.calls.length === 1);
    controller.abort();
    await run;
    const again = new AbortController();
    const run2 = w.run(again.signal);
    await until('the write of the next run', () => patcher.calls.length === 2);
    again.abort();
    await run2;
  });

  describe('one PATCH per outcome, none when the annotation already holds it', () => {
    const ref = { namespace: 'opa', name: 'p' };
    const OK = '{"status":"ok"}';
    const ERR = '{"status":"error","error":{"code":"rego_type_error","message":"rego_type_error happened"}}';
    /** Waits until the writer has nothing left to do: a marker ConfigMap reported last is written. */
    let markers = 0;
    async function settled(w: StatusWriter): Promise<void> {
      const name = `marker-${++markers}`;
      w.report(ok(name));
      await until(`the write of ${name}`, () => patcher.calls.some((c) => c.ref.name === name));
    }
    const writesOf = (name: string): PatchCall[] => patcher.calls.filter((c) => c.ref.name === name);

    it('does not write the same outcome again (a policy failing on every retry)', async () => {
      const w = writer();
      const run = w.run(controller.signal);
      for (let i = 0; i < 5; i += 1) {
        w.report(failed('p', 'rego_type_error'));
        await settled(w);
      }
      expect(writesOf('p').map((c) => c.annotations[ANNOTATION])).to.deep.equal([ERR]);
      w.report(ok('p'));
      w.report(ok('p'));
      await settled(w);
      expect(writesOf('p').map((c) => c.annotations[ANNOTATION])).to.deep.equal([ERR, OK]);
      controller.abort();
      await run;
    });

    it('skips a ConfigMap seen holding the value already (a restarted opa-sync writes nothing)', async () => {
      const w = writer();
      w.observe(ref, { [ANNOTATION]: OK, other: 'x' });
      w.report(ok('p'));
      const run = w.run(controller.signal);
      await settled(w);
      expect(writesOf('p')).to.deep.equal([]);
      controller.abort();
      await run;
    });

    it('writes again to a ConfigMap seen without it (created again) or changed by someone else, restoring at most once per interval', async () => {
      const w = writer([ANNOTATION], { restoreIntervalMs: 200 });
      const run = w.run(controller.signal);
      w.report(ok('p'));
      await until('the first write', () => writesOf('p').length === 1);
      // Our own write coming back through the watch: nothing to do.
      w.observe(ref, { [ANNOTATION]: OK });
      await settled(w);
      expect(writesOf('p')).to.have.length(1);
      // Deleted and created again: the source sees it without annotations, the same outcome follows.
      w.observe(ref, undefined);
      w.observe(ref, {});
      w.report(ok('p'));
      await until('the write to the new ConfigMap', () => writesOf('p').length === 2);
      // Someone else overwrites it: restored at once.
      w.observe(ref, { [ANNOTATION]: 'edited by hand' });
      await until('the restore', () => writesOf('p').length === 3);
      // Another replica that keeps writing another value is answered only once per interval.
      const before = Date.now();
      w.observe(ref, { [ANNOTATION]: 'the other replica' });
      w.observe(ref, { [ANNOTATION]: 'the other replica' });
      await until('the second restore', () => writesOf('p').length === 4, 2000);
      expect(Date.now() - before).to.be.at.least(150);
      expect(writesOf('p').map((c) => c.annotations[ANNOTATION])).to.deep.equal([OK, OK, OK, OK]);
      controller.abort();
      await run;
    });

    it('removes the annotation of a ConfigMap that is no longer a policy, once, and never of a deleted one', async () => {
      const state = new DesiredState();
      const policy = {
        origin: origin('p'),
        modules: [{ id: 'opa/p/p.rego', text: 'package p' }],
        documents: [],
        problems: [],
      };
      state.set(policy);
      const w = writer([ANNOTATION], { state });
      const run = w.run(controller.signal);
      w.report(ok('p'));
      await until('the status', () => writesOf('p').length === 1);
      // The label removed: the source sees the ConfigMap (with our annotation) and drops the origin.
      w.observe(ref, { [ANNOTATION]: OK });
      state.delete(origin('p'));
      await until('the removal', () => writesOf('p').length === 2);
      expect(writesOf('p')[1]?.annotations).to.deep.equal({ [ANNOTATION]: null });
      // A late outcome of the old origin does not bring it back; seen without it, nothing to do.
      w.report(ok('p'));
      w.observe(ref, {});
      await settled(w);
      expect(writesOf('p')).to.have.length(2);
      // Labelled again, then deleted: nothing is written to a deleted ConfigMap.
      state.set(policy);
      w.report(ok('p'));
      await until('the status again', () => writesOf('p').length === 3);
      w.observe(ref, undefined);
      state.delete(origin('p'));
      await settled(w);
      expect(writesOf('p')).to.have.length(3);
      controller.abort();
      await run;
    });

    it("writes kube-mgmt's retries ('0') beside kube-mgmt's status key, and removes both", async () => {
      const state = new DesiredState();
      state.set({ origin: origin('p'), modules: [], documents: [], problems: [] });
      const key = 'openpolicyagent.org/kube-mgmt-status';
      const retries = 'openpolicyagent.org/kube-mgmt-retries';
      const w = writer([key], { state });
      const run = w.run(controller.signal);
      w.report(failed('p', 'rego_type_error'));
      await until('the status', () => writesOf('p').length === 1);
      w.report(ok('p'));
      await until('ok', () => writesOf('p').length === 2);
      state.delete(origin('p'));
      await until('the removal', () => writesOf('p').length === 3);
      expect(writesOf('p').map((c) => c.annotations)).to.deep.equal([
        { [key]: ERR, [retries]: '0' },
        { [key]: OK, [retries]: '0' },
        { [key]: null, [retries]: null },
      ]);
      controller.abort();
      await run;
    });
  });
});
