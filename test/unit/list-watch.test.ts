// The streaming list-watch informer against a scripted fake of its own seam (ListWatchApi: list pages
// and watch streams), for what a real API server does not do on demand: an expired continue token, an
// ERROR 410 event, a watch ended by the server, a line split across chunks, a silent connection.
// test/e2e/list-watch.test.ts runs it against the real API server.
import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import type { KubernetesObject } from '@kubernetes/client-node';
import { KubeApiError } from '../../src/kube/errors.js';
import {
  StreamingListWatch,
  WatchSilentError,
  watchDeadlineSeconds,
  type ListWatchApi,
} from '../../src/kube/list-watch.js';
import { until } from './kube-fakes.js';

type Query = Readonly<Record<string, string | undefined>>;

const obj = (name: string, rv: string, namespace = 'ns'): KubernetesObject => ({
  metadata: { name, namespace, resourceVersion: rv },
});

/** A watch response: lines are pushed by the test; `end()` is the server ending it cleanly. */
class FakeWatch extends PassThrough {
  complete = false;
  send(...events: unknown[]): void {
    this.write(events.map((e) => `${JSON.stringify(e)}\n`).join(''));
  }
  finish(): void {
    this.complete = true;
    this.end();
  }
}

interface Page {
  items: KubernetesObject[];
  rv?: string;
  continue?: string;
}

class FakeApi implements ListWatchApi {
  readonly lists: Query[] = [];
  readonly watches: Query[] = [];
  readonly streams: FakeWatch[] = [];
  /** What each list call answers, in order: a page, or an error to throw. */
  readonly pages: (Page | Error)[] = [];

  getJson<T>(_path: string, options: { query?: Query; signal?: AbortSignal }): Promise<T> {
    this.lists.push(options.query ?? {});
    const next = this.pages.shift();
    if (next === undefined) return Promise.reject(new Error('no page scripted'));
    if (next instanceof Error) return Promise.reject(next);
    return Promise.resolve({
      metadata: { resourceVersion: next.rv ?? '', ...(next.continue ? { continue: next.continue } : {}) },
      items: next.items,
    } as T);
  }

  stream(_path: string, options: { query?: Query; signal: AbortSignal }): Promise<IncomingMessage> {
    this.watches.push(options.query ?? {});
    const s = new FakeWatch();
    this.streams.push(s);
    return Promise.resolve(s as unknown as IncomingMessage);
  }
}

interface Seen {
  events: string[];
  errors: unknown[];
}

function record(informer: StreamingListWatch<KubernetesObject>): Seen {
  const seen: Seen = { events: [], errors: [] };
  const name = (o: KubernetesObject): string => `${o.metadata?.name}@${o.metadata?.resourceVersion ?? ''}`;
  informer.on('add', (o: KubernetesObject) => seen.events.push(`add ${name(o)}`));
  informer.on('update', (o: KubernetesObject) => seen.events.push(`update ${name(o)}`));
  informer.on('delete', (o: KubernetesObject) => seen.events.push(`delete ${name(o)}`));
  informer.on('error', (e: unknown) => seen.errors.push(e));
  return seen;
}

const target = { path: '/api/v1/configmaps', labelSelector: 'a=b' };

describe('StreamingListWatch: paginated list, streamed watch', () => {
  it('lists page by page (limit, continue) and watches from the first page’s resourceVersion', async () => {
    const api = new FakeApi();
    api.pages.push(
      { items: [obj('a', '1'), obj('b', '2')], rv: '10', continue: 'c1' },
      { items: [obj('c', '3')], rv: '10' },
    );
    const informer = new StreamingListWatch(api, target, { pageSize: 2 });
    const seen = record(informer);
    await informer.start();
    expect(api.lists).to.deep.equal([
      { labelSelector: 'a=b', fieldSelector: undefined, limit: '2', continue: undefined },
      { labelSelector: 'a=b', fieldSelector: undefined, limit: '2', continue: 'c1' },
    ]);
    expect(api.watches[0]).to.include({ watch: 'true', resourceVersion: '10', allowWatchBookmarks: 'true' });
    expect(api.watches[0]?.labelSelector).to.equal('a=b');
    api.streams[0]?.send(
      { type: 'MODIFIED', object: obj('a', '11') },
      { type: 'MODIFIED', object: obj('a', '11') }, // the same version again: nothing
      { type: 'ADDED', object: obj('d', '12') },
      { type: 'DELETED', object: obj('b', '13') },
      { type: 'DELETED', object: obj('zzz', '14') }, // never seen: nothing
    );
    await until('seen.events.length === 6', () => seen.events.length === 6);
    expect(seen.events).to.deep.equal([
      'add a@1',
      'add b@2',
      'add c@3',
      'update a@11',
      'add d@12',
      'delete b@13',
    ]);
    await informer.stop();
    expect(seen.errors).to.deep.equal([]);
  });

  it('starts the list over when the continue token expired (410) mid-way', async () => {
    const api = new FakeApi();
    api.pages.push(
      { items: [obj('a', '1')], rv: '10', continue: 'c1' },
      new KubeApiError('kube_http_error', 'continue too old', { status: 410 }),
      { items: [obj('a', '1')], rv: '20', continue: 'c2' },
      { items: [obj('b', '2')], rv: '20' },
    );
    const informer = new StreamingListWatch(api, target, { pageSize: 1 });
    const seen = record(informer);
    await informer.start();
    expect(api.lists.map((q) => q.continue)).to.deep.equal([undefined, 'c1', undefined, 'c2']);
    expect(seen.events).to.deep.equal(['add a@1', 'add b@2']);
    expect(api.watches[0]?.resourceVersion).to.equal('20');
    await informer.stop();

    // Expired again and again: after a few fresh starts it is an error like any other.
    const always = new FakeApi();
    const gone = (): Error => new KubeApiError('kube_http_error', 'continue too old', { status: 410 });
    for (let i = 0; i < 10; i++) always.pages.push({ items: [], rv: '1', continue: 'c' }, gone());
    const stuck = new StreamingListWatch(always, target);
    const stuckSeen = record(stuck);
    await stuck.start();
    expect(always.lists).to.have.length(8);
    expect(stuckSeen.errors).to.have.length(1);
    expect(always.watches).to.have.length(0);
  });

  it('after an ERROR 410 event and the server’s close, lists again and reports what is gone', async () => {
    const api = new FakeApi();
    api.pages.push({ items: [obj('a', '1'), obj('b', '2'), obj('c', '3')], rv: '10' });
    const informer = new StreamingListWatch(api, target);
    const seen = record(informer);
    await informer.start();
    api.pages.push({ items: [obj('a', '1'), obj('c', '30'), obj('d', '31')], rv: '40' });
    api.streams[0]?.send({ type: 'ERROR', object: { kind: 'Status', code: 410 } });
    api.streams[0]?.finish();
    await until('api.watches.length === 2', () => api.watches.length === 2);
    expect(api.lists).to.have.length(2);
    expect(api.watches[1]?.resourceVersion).to.equal('40');
    expect(seen.events.slice(3)).to.deep.equal(['update c@30', 'add d@31', 'delete b@2']);
    expect(seen.errors).to.deep.equal([]);
    await informer.stop();
  });

  it('opens the watch again from the last resourceVersion (a bookmark’s too) when the server ends it', async () => {
    const api = new FakeApi();
    api.pages.push({ items: [obj('a', '1')], rv: '10' });
    const informer = new StreamingListWatch(api, target);
    const seen = record(informer);
    await informer.start();
    api.streams[0]?.send({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '55' } } });
    api.streams[0]?.finish();
    await until('api.watches.length === 2', () => api.watches.length === 2);
    expect(api.lists).to.have.length(1);
    expect(api.watches[1]?.resourceVersion).to.equal('55');
    expect(seen.events).to.deep.equal(['add a@1']);
    await informer.stop();
  });

  it('reassembles lines split across chunks, a multi-byte character included; skips blank lines', async () => {
    const api = new FakeApi();
    api.pages.push({ items: [], rv: '10' });
    const informer = new StreamingListWatch(api, target);
    const names: string[] = [];
    informer.on('add', (o: KubernetesObject) => names.push(o.metadata?.name ?? ''));
    await informer.start();
    const bytes = Buffer.from(
      `${JSON.stringify({ type: 'ADDED', object: obj('grüße-ü', '11') })}\n\n${JSON.stringify({ type: 'ADDED', object: obj('b', '12') })}\n`,
    );
    const cut = bytes.indexOf(Buffer.from('ü')) + 1; // inside the two bytes of ü
    api.streams[0]?.write(bytes.subarray(0, cut));
    api.streams[0]?.write(bytes.subarray(cut, cut + 5));
    api.streams[0]?.write(bytes.subarray(cut + 5));
    await until('names.length === 2', () => names.length === 2);
    expect(names).to.deep.equal(['grüße-ü', 'b']);
    await informer.stop();
  });

  it('a line that is not JSON, a connection cut mid-stream and a silent watch are errors: it stops', async () => {
    for (const fault of ['garbage', 'cut', 'silent'] as const) {
      const api = new FakeApi();
      api.pages.push({ items: [], rv: '10' });
      const informer = new StreamingListWatch(api, target, { idleTimeoutMs: 50 });
      const seen = record(informer);
      await informer.start();
      const stream = api.streams[0] as FakeWatch;
      if (fault === 'garbage') stream.write('{"type": "ADDED", "obj\n');
      if (fault === 'cut') stream.destroy();
      await until('seen.errors.length === 1', () => seen.errors.length === 1);
      await new Promise((r) => setTimeout(r, 80));
      expect(seen.errors, fault).to.have.length(1);
      expect(api.watches, fault).to.have.length(1);
      await informer.stop();
    }
  });

  it('a silent watch says since when it heard nothing, and drops the idle kept-alive connections', async () => {
    const api = new FakeApi();
    let dropped = 0;
    const dropping = Object.assign(api, { dropIdleConnections: () => (dropped += 1) });
    api.pages.push({ items: [], rv: '10' });
    const informer = new StreamingListWatch(dropping, target, { idleTimeoutMs: 60 });
    const seen = record(informer);
    await informer.start();
    api.streams[0]?.send({ type: 'BOOKMARK', object: obj('', '11') });
    const heard = informer.lastHeardAt() ?? 0;
    await until('seen.errors.length === 1', () => seen.errors.length === 1);
    const err = seen.errors[0];
    expect(err).to.be.instanceOf(WatchSilentError);
    expect((err as WatchSilentError).silentSince).to.equal(heard);
    expect((err as WatchSilentError).code).to.equal('kube_timeout');
    expect(dropped).to.equal(1);
    await informer.stop();
  });

  it('asks the server to end each watch within half the idle timeout (5 minutes at most)', async () => {
    expect(watchDeadlineSeconds(300, 60_000)).to.equal(30);
    expect(watchDeadlineSeconds(300, 3_600_000)).to.equal(300);
    expect(watchDeadlineSeconds(10, 60_000)).to.equal(10);
    expect(watchDeadlineSeconds(300, 2000)).to.equal(1);
    const api = new FakeApi();
    api.pages.push({ items: [], rv: '10' });
    const informer = new StreamingListWatch(api, target, { idleTimeoutMs: 8000 });
    await informer.start();
    expect(api.watches[0]?.timeoutSeconds).to.equal('4');
    expect(api.watches[0]?.allowWatchBookmarks).to.equal('true');
    await informer.stop();
  });

  it('a handler that throws ends the watch with that error', async () => {
    const api = new FakeApi();
    api.pages.push({ items: [], rv: '10' });
    const informer = new StreamingListWatch(api, target);
    const bug = new RangeError('bug');
    const errors: unknown[] = [];
    informer.on('add', () => {
      throw bug;
    });
    informer.on('error', (e: unknown) => errors.push(e));
    await informer.start();
    api.streams[0]?.send({ type: 'ADDED', object: obj('a', '11') });
    await until('errors.length === 1', () => errors.length === 1);
    expect(errors[0]).to.equal(bug);
    expect(api.streams[0]?.destroyed).to.equal(true);
  });

  it('a failed list reaches the error callbacks and start() resolves; stop() during a list reports nothing', async () => {
    const api = new FakeApi();
    const failure = new Error('connection refused');
    api.pages.push(failure);
    const informer = new StreamingListWatch(api, target);
    const seen = record(informer);
    await informer.start();
    expect(seen.errors).to.deep.equal([failure]);
    expect(api.watches).to.have.length(0);

    let release: (() => void) | undefined;
    const slow: ListWatchApi = {
      getJson: <T>() =>
        new Promise<T>((resolve) => {
          release = () => resolve({ metadata: { resourceVersion: '1' }, items: [obj('a', '1')] } as T);
        }),
      stream: (p, o) => api.stream(p, o),
    };
    const other = new StreamingListWatch(slow, target);
    const otherSeen = record(other);
    const starting = other.start();
    await until('release !== undefined', () => release !== undefined);
    await other.stop();
    release?.();
    await starting;
    expect(otherSeen).to.deep.equal({ events: [], errors: [] });
    expect(api.watches).to.have.length(0);
  });
});
