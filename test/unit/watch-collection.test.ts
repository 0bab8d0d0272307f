// The restarting watcher against an injected fake of the client-node informer surface it wraps
// (Informer: on/off/start/stop), played as client-node 1.4 behaves: failures reach the error callbacks
// and the informer stops; stop() and a start() on a running informer fire AbortError there too.
import { expect } from 'chai';
import type { Informer, KubernetesObject } from '@kubernetes/client-node';
import type { WatchHandlers, WatchTarget } from '../../src/kube/ports.js';
import { WatchSilentError } from '../../src/kube/list-watch.js';
import { RestartingWatcher } from '../../src/kube/watch-collection.js';
import { until } from './kube-fakes.js';

type Obj = KubernetesObject;
type Verb = 'add' | 'update' | 'delete' | 'error' | 'connect';

const abortError = (): Error =>
  Object.assign(new Error('The user aborted a request.'), { name: 'AbortError' });

/** What one start() does: list these objects and open the watch, or fail, or wait for the test. */
type StartScript =
  | { kind: 'ok'; objects?: Obj[] }
  | { kind: 'fail'; error: unknown }
  | { kind: 'reject'; error: unknown }
  | { kind: 'hold'; release: Promise<void>; objects?: Obj[] };

class FakeInformer implements Informer<Obj> {
  readonly callbacks = new Map<Verb, ((arg: never) => void)[]>();
  readonly scripts: StartScript[] = [];
  starts = 0;
  stops = 0;
  watchOpen = false;

  constructor(
    readonly target: WatchTarget,
    readonly signal: AbortSignal,
  ) {}

  on(verb: string, cb: (arg: never) => void): void {
    const list = this.callbacks.get(verb as Verb) ?? [];
    list.push(cb);
    this.callbacks.set(verb as Verb, list);
  }

  off(verb: string, cb: (arg: never) => void): void {
    const list = this.callbacks.get(verb as Verb) ?? [];
    const i = list.indexOf(cb);
    if (i >= 0) list.splice(i, 1);
  }

  emit(verb: Verb, arg: unknown): void {
    for (const cb of [...(this.callbacks.get(verb) ?? [])]) (cb as (a: unknown) => void)(arg);
  }

  listeners(): number {
    return [...this.callbacks.values()].reduce((n, l) => n + l.length, 0);
  }

  async start(): Promise<void> {
    this.starts += 1;
    // client-node: a start on a running informer aborts the old watch, which reports an AbortError.
    if (this.watchOpen) this.emit('error', abortError());
    this.watchOpen = false;
    const script = this.scripts.shift() ?? { kind: 'ok' };
    if (script.kind === 'reject') throw script.error;
    if (script.kind === 'fail') {
      this.emit('error', script.error);
      return;
    }
    for (const obj of script.objects ?? []) this.emit('add', obj);
    if (script.kind === 'hold') await script.release;
    this.watchOpen = true;
  }

  stop(): Promise<void> {
    this.stops += 1;
    // client-node 1.4 fires the error callbacks for its own abort.
    if (this.watchOpen) this.emit('error', abortError());
    this.watchOpen = false;
    return Promise.resolve();
  }

  /** The open watch dies (connection reset, API server restart): the informer stops. */
  die(error: unknown): void {
    this.watchOpen = false;
    this.emit('error', error);
  }
}

interface Recorded {
  events: string[];
  retries: { err: unknown; ms: number }[];
  listed: number;
}

function recorder(overrides: Partial<WatchHandlers<Obj>> = {}): {
  handlers: WatchHandlers<Obj>;
  seen: Recorded;
} {
  const seen: Recorded = { events: [], retries: [], listed: 0 };
  const handlers: WatchHandlers<Obj> = {
    add: (o) => seen.events.push(`add ${o.metadata?.name}`),
    update: (o) => seen.events.push(`update ${o.metadata?.name}`),
    delete: (o) => seen.events.push(`delete ${o.metadata?.name}`),
    listed: () => {
      seen.listed += 1;
    },
    retrying: (err, ms) => seen.retries.push({ err, ms }),
    ...overrides,
  };
  return { handlers, seen };
}

const obj = (name: string): Obj => ({ metadata: { name, namespace: 'opa', resourceVersion: '1' } });
const TARGET: WatchTarget = { path: '/api/v1/namespaces/opa/configmaps', labelSelector: 'a=b' };

describe('RestartingWatcher', () => {
  let informers: FakeInformer[];
  let scripts: StartScript[];
  let controller: AbortController;

  function watcher(stopGraceMs = 5000, staleAfterMs?: number): RestartingWatcher {
    return new RestartingWatcher({
      informer: (target: WatchTarget, signal: AbortSignal) => {
        const informer = new FakeInformer(target, signal);
        informer.scripts.push(...scripts);
        informers.push(informer);
        return informer;
      },
      backoff: { minMs: 1, maxMs: 4, factor: 2, jitter: 0 },
      stopGraceMs,
      ...(staleAfterMs === undefined ? {} : { staleAfterMs }),
    });
  }

  beforeEach(() => {
    informers = [];
    scripts = [];
    controller = new AbortController();
  });

  afterEach(() => controller.abort());

  it('delivers the list, calls listed once the watch is open, and resolves after stop', async () => {
    scripts.push({ kind: 'ok', objects: [obj('a'), obj('b')] });
    const { handlers, seen } = recorder();
    const done = watcher().watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    const [informer] = informers;
    expect(informer?.target).to.deep.equal(TARGET);
    expect(seen.events).to.deep.equal(['add a', 'add b']);
    informer?.emit('update', obj('a'));
    informer?.emit('delete', obj('b'));
    expect(seen.events.slice(2)).to.deep.equal(['update a', 'delete b']);
    controller.abort();
    await done;
    expect(informer?.watchOpen).to.equal(false);
    expect(informer?.signal.aborted).to.equal(true);
    // Its own AbortError on stop was not taken for a failure, and every callback was removed.
    expect(seen.retries).to.deep.equal([]);
    expect(informer?.listeners()).to.equal(0);
  });

  it('restarts with backoff after failures, resets the backoff once a start succeeds, and lists once', async () => {
    const refused = new Error('connect ECONNREFUSED 127.0.0.1:6443');
    scripts.push({ kind: 'fail', error: refused }, { kind: 'fail', error: refused }, { kind: 'ok' });
    const { handlers, seen } = recorder();
    const done = watcher().watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    const informer = informers[0] as FakeInformer;
    expect(informer.starts).to.equal(3);
    expect(seen.retries.map((r) => r.ms)).to.deep.equal([1, 2]);
    expect(seen.retries[0]?.err).to.equal(refused);
    // The open watch dies: restarted after the first delay again (reset), and listed is not repeated.
    informer.die(Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    await until('the fourth start', () => informer.starts === 4 && informer.watchOpen);
    expect(seen.retries.map((r) => r.ms)).to.deep.equal([1, 2, 1]);
    expect(seen.listed).to.equal(1);
    controller.abort();
    await done;
    expect(informers).to.have.lengthOf(1);
  });

  it('reports a watch found silent as stale since it last heard, and fresh once it is watching again', async () => {
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    scripts.push({ kind: 'ok' }, { kind: 'hold', release: held });
    const stale: { since: Date; err: unknown }[] = [];
    let fresh = 0;
    const { handlers, seen } = recorder({
      stale: (since, err) => stale.push({ since, err }),
      fresh: () => (fresh += 1),
    });
    const done = watcher(5000, 60_000).watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    const informer = informers[0] as FakeInformer;
    // Silent for the idle timeout: stale at once, since it last heard (not since now).
    const since = Date.now() - 60_000;
    const silent = new WatchSilentError('watch: nothing received for 60000 ms', since);
    informer.die(silent);
    await until('stale', () => stale.length === 1);
    expect(stale[0]?.since.getTime()).to.equal(since);
    expect(stale[0]?.err).to.equal(silent);
    expect(fresh, 'not fresh while the restart is in flight').to.equal(0);
    release();
    await until('fresh', () => fresh === 1);
    expect(stale).to.have.lengthOf(1);
    controller.abort();
    await done;
  });

  it('reports a watch that keeps failing past staleAfterMs as stale (the API server down), not one back sooner', async () => {
    const refused = new Error('connect ECONNREFUSED 127.0.0.1:6443');
    scripts.push({ kind: 'ok' }, { kind: 'fail', error: refused }, { kind: 'ok' });
    for (let i = 0; i < 100; i++) scripts.push({ kind: 'fail', error: refused });
    scripts.push({ kind: 'ok' });
    const stale: Date[] = [];
    let fresh = 0;
    const { handlers, seen } = recorder({ stale: (since) => stale.push(since), fresh: () => (fresh += 1) });
    const done = watcher(5000, 200).watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    const informer = informers[0] as FakeInformer;
    // One failure, back within a few ms: never stale.
    informer.die(refused);
    await until('the third start', () => informer.starts === 3 && informer.watchOpen);
    expect(stale).to.deep.equal([]);
    // A hundred failures in a row, up to 4 ms apart: stale past 200 ms, fresh once it is back.
    const diedAt = Date.now();
    informer.die(refused);
    await until('fresh', () => fresh === 1, 10_000);
    expect(stale).to.have.lengthOf(1);
    expect(stale[0]?.getTime()).to.be.within(diedAt, diedAt + 100);
    controller.abort();
    await done;
  });

  it('takes a rejected start() for a failure too', async () => {
    scripts.push({ kind: 'reject', error: new Error('No currently active cluster') });
    const { handlers, seen } = recorder();
    const done = watcher().watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    expect(seen.retries.map((r) => String(r.err))).to.deep.equal(['Error: No currently active cluster']);
    controller.abort();
    await done;
  });

  it('ignores the AbortError of a start on a running informer', async () => {
    const { handlers, seen } = recorder();
    const done = watcher().watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    const informer = informers[0] as FakeInformer;
    informer.emit('error', abortError());
    controller.abort();
    await done;
    expect(seen.retries).to.deep.equal([]);
    expect(informer.starts).to.equal(1);
  });

  it('closes the watch that a start still in flight opens after the stop', async () => {
    let release: () => void = () => undefined;
    scripts.push({ kind: 'hold', release: new Promise<void>((r) => (release = r)), objects: [obj('a')] });
    const { handlers, seen } = recorder();
    let resolved = false;
    const done = watcher()
      .watch(TARGET, handlers, controller.signal)
      .then(() => {
        resolved = true;
      });
    await until('the start', () => informers[0]?.starts === 1);
    const informer = informers[0] as FakeInformer;
    controller.abort();
    await until('the first stop', () => informer.stops === 1);
    expect(resolved).to.equal(false);
    release(); // the late watch opens now…
    await done;
    // …and is closed again before watch() resolves.
    expect(informer.watchOpen).to.equal(false);
    expect(informer.stops).to.equal(2);
    expect(seen.listed).to.equal(0);
    expect(seen.retries).to.deep.equal([]);
  });

  it('does not wait forever for a start that never ends: it closes the watch when it does', async () => {
    let release: () => void = () => undefined;
    scripts.push({ kind: 'hold', release: new Promise<void>((r) => (release = r)) });
    const { handlers } = recorder();
    const done = watcher(5).watch(TARGET, handlers, controller.signal);
    await until('the start', () => informers[0]?.starts === 1);
    const informer = informers[0] as FakeInformer;
    controller.abort();
    await done;
    expect(informer.stops).to.equal(1);
    release();
    await until('the late stop', () => informer.stops === 2 && !informer.watchOpen);
  });

  it('rejects with the error a handler throws, and stops the informer', async () => {
    scripts.push({ kind: 'ok', objects: [obj('a')] });
    const bug = new TypeError("Cannot read properties of undefined (reading 'labels')");
    const { handlers, seen } = recorder({
      update: () => {
        throw bug;
      },
    });
    const done = watcher().watch(TARGET, handlers, controller.signal);
    await until('listed', () => seen.listed === 1);
    const informer = informers[0] as FakeInformer;
    informer.emit('update', obj('a'));
    informer.emit('update', obj('a')); // a second event after the throw goes nowhere
    let thrown: unknown;
    await done.catch((err: unknown) => {
      thrown = err;
    });
    expect(thrown).to.equal(bug);
    expect(informer.watchOpen).to.equal(false);
    expect(informer.listeners()).to.equal(0);
    expect(controller.signal.aborted).to.equal(false);
  });

  it('rejects when a handler throws during the initial list, once the start has ended', async () => {
    let release: () => void = () => undefined;
    scripts.push({ kind: 'hold', release: new Promise<void>((r) => (release = r)), objects: [obj('a')] });
    const bug = new RangeError('Invalid string length');
    const { handlers, seen } = recorder({
      add: () => {
        throw bug;
      },
    });
    let thrown: unknown;
    const done = watcher()
      .watch(TARGET, handlers, controller.signal)
      .catch((err: unknown) => {
        thrown = err;
      });
    const informer = await until('the start', () => informers[0]);
    await until('the stop', () => informer.stops === 1);
    release();
    await done;
    expect(thrown).to.equal(bug);
    expect(informer.watchOpen).to.equal(false);
    expect(seen.listed).to.equal(0);
  });

  it('returns at once for a signal aborted before the start', async () => {
    controller.abort();
    await watcher().watch(TARGET, recorder().handlers, controller.signal);
    expect(informers).to.deep.equal([]);
  });
});
