// The bundle server without OPA: the registry's waits, the HTTP answers OPA's downloader relies on
// (exact Content-Type, ETag/If-None-Match, held long polls), hostile bundle paths, bearer tokens from a
// rotating file, status reports into the fleet view, and the metrics of all of it.
import { createHash } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { expect } from 'chai';
import fc from 'fast-check';
import { HOSTILE_BUNDLE_NAMES } from './hostile-names.js';
import request from 'supertest';
import { Fleet } from '../../src/bundles/fleet.js';
import { BundleRegistry, type PublishedBundle } from '../../src/bundles/registry.js';
import {
  BUNDLE_CONTENT_TYPE,
  createBundleApp,
  etagMatches,
  holdMilliseconds,
  listenBundleServer,
  parsePreferWait,
  type RunningServer,
} from '../../src/bundles/server.js';
import { TokenFile, bearerMatches, parseTokens } from '../../src/bundles/tokens.js';
import { secretDigest } from '../../src/util/secret-compare.js';
import { Metrics } from '../../src/http/metrics.js';
import { InvalidInputError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/logger.js';
import { createServingCert } from '../harness/certs.js';
import { testCa, waitFor } from '../harness/index.js';
import { metricValue } from '../harness/metrics.js';

function bundleOf(name: string, content: string): PublishedBundle {
  const bytes = Buffer.from(content);
  const hash = createHash('sha256').update(bytes).digest('hex');
  return { name, bytes, etag: `"sha256-${hash}"`, revision: hash.slice(0, 12) };
}

interface Setup {
  registry: BundleRegistry;
  metrics: Metrics;
  fleet: Fleet;
  app: ReturnType<typeof createBundleApp>;
}

const FIXED_NOW = new Date('2026-01-02T03:04:05.000Z');

function setup(options: { tokens?: TokenFile; maxWaitSeconds?: number; built?: boolean } = {}): Setup {
  const registry = new BundleRegistry();
  const metrics = new Metrics({ processMetrics: false });
  const fleet = new Fleet(
    metrics,
    (name) => registry.get(name)?.revision,
    () => FIXED_NOW,
  );
  const app = createBundleApp({
    registry,
    fleet,
    tokens: options.tokens,
    metrics,
    logger: silentLogger(),
    ...(options.maxWaitSeconds === undefined ? {} : { maxWaitSeconds: options.maxWaitSeconds }),
  });
  if (options.built !== false) registry.markBuilt();
  return { registry, metrics, fleet, app };
}

const binary = (res: request.Response, done: (err: Error | null, body: Buffer) => void): void => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => done(null, Buffer.concat(chunks)));
};

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A request whose path goes on the wire exactly as written (supertest would normalise `..`). */
function raw(
  port: number,
  pathOnWire: string,
  headers: Record<string, string> = {},
  onRequest?: (req: http.ClientRequest) => void,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathOnWire, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on('error', reject);
    onRequest?.(req);
    req.end();
  });
}

function errorBody(body: unknown): { code: string; message: string } {
  expect(body).to.be.an('object');
  const b = body as { code: unknown; message: unknown };
  expect(b.code).to.be.a('string');
  expect(b.message).to.be.a('string').and.not.equal('');
  return b as { code: string; message: string };
}

describe('bundle registry', () => {
  it('publishes, replaces and lists bundles by name', () => {
    const registry = new BundleRegistry();
    expect(registry.isBuilt()).to.equal(false);
    registry.publish(bundleOf('b', 'one'));
    registry.publish(bundleOf('a/x', 'two'));
    registry.publish(bundleOf('b', 'three'));
    expect(registry.names()).to.deep.equal(['a/x', 'b']);
    expect(registry.get('b')?.bytes.toString()).to.equal('three');
    expect(registry.get('nope')).to.equal(undefined);
    registry.markBuilt();
    expect(registry.isBuilt()).to.equal(true);
  });

  it('refuses names the bundle-name rule refuses, and unquoted ETags', () => {
    const registry = new BundleRegistry();
    for (const name of HOSTILE_BUNDLE_NAMES) {
      expect(() => registry.publish(bundleOf(name, 'x')), name)
        .to.throw(InvalidInputError)
        .with.property('code', 'invalid_bundle_name');
    }
    expect(() => registry.publish({ ...bundleOf('ok', 'x'), etag: 'sha256-abc' })).to.throw(
      InvalidInputError,
    );
    registry.publish(bundleOf('authz/bundle.tar.gz', 'x'));
  });

  it('waitForChange: at once when the ETag already differs, on publish of a new ETag, never on the same one', async () => {
    const registry = new BundleRegistry();
    const first = bundleOf('b', 'one');
    registry.publish(first);
    const signal = new AbortController().signal;
    expect(await registry.waitForChange('b', '"old"', 10_000, signal)).to.equal(first);

    const waiting = registry.waitForChange('b', first.etag, 10_000, signal);
    expect(registry.waiterCount('b')).to.equal(1);
    registry.publish({ ...first, bytes: Buffer.from('same etag') });
    expect(registry.waiterCount('b')).to.equal(1);
    const second = bundleOf('b', 'two');
    registry.publish(second);
    expect(await waiting).to.equal(second);
    expect(registry.waiterCount()).to.equal(0);
  });

  it('waitForChange: undefined after the timeout or on abort, and the waiter is gone', async () => {
    const registry = new BundleRegistry();
    const b = bundleOf('b', 'one');
    registry.publish(b);
    const started = Date.now();
    expect(await registry.waitForChange('b', b.etag, 100, new AbortController().signal)).to.equal(undefined);
    expect(Date.now() - started).to.be.within(80, 1000);

    const controller = new AbortController();
    const waiting = registry.waitForChange('b', b.etag, 60_000, controller.signal);
    expect(registry.waiterCount()).to.equal(1);
    controller.abort();
    expect(await waiting).to.equal(undefined);
    expect(registry.waiterCount()).to.equal(0);

    expect(await registry.waitForChange('b', b.etag, 60_000, AbortSignal.abort())).to.equal(undefined);
    // A bundle that does not exist yet can be waited for: the first publish wakes the wait.
    const later = registry.waitForChange('new', '"none"', 60_000, new AbortController().signal);
    const created = bundleOf('new', 'x');
    registry.publish(created);
    expect(await later).to.equal(created);
  });
});

describe('bundle server: helpers', () => {
  it('parses wait from Prefer without splitting on commas', () => {
    expect(parsePreferWait('modes=snapshot,delta;wait=30')).to.equal(30);
    expect(parsePreferWait('modes=snapshot,delta; wait=5')).to.equal(5);
    expect(parsePreferWait('wait=7')).to.equal(7);
    expect(parsePreferWait('respond-async, wait=12')).to.equal(12);
    expect(parsePreferWait('WAIT="3"')).to.equal(3);
    expect(parsePreferWait('modes=snapshot,delta')).to.equal(undefined);
    expect(parsePreferWait('await=5')).to.equal(undefined);
    expect(parsePreferWait('wait=abc')).to.equal(undefined);
    expect(parsePreferWait('wait=-3')).to.equal(undefined);
    expect(parsePreferWait('wait=5x')).to.equal(undefined);
    expect(parsePreferWait('')).to.equal(undefined);
    expect(parsePreferWait(undefined)).to.equal(undefined);
  });

  it('holds a little under the wait', () => {
    expect(holdMilliseconds(1)).to.equal(900);
    expect(holdMilliseconds(2)).to.equal(1800);
    expect(holdMilliseconds(30)).to.equal(29_000);
    expect(holdMilliseconds(120)).to.equal(119_000);
  });

  it('matches If-None-Match with W/, lists and *', () => {
    const etag = '"sha256-abc"';
    expect(etagMatches('"sha256-abc"', etag)).to.equal(true);
    expect(etagMatches('W/"sha256-abc"', etag)).to.equal(true);
    expect(etagMatches('"x", "sha256-abc"', etag)).to.equal(true);
    expect(etagMatches('"x",W/"sha256-abc"', etag)).to.equal(true);
    expect(etagMatches('"a,b", "sha256-abc"', etag)).to.equal(true);
    expect(etagMatches('*', etag)).to.equal(true);
    expect(etagMatches('"sha256-ab"', etag)).to.equal(false);
    expect(etagMatches('"x", "y"', etag)).to.equal(false);
    expect(etagMatches('', etag)).to.equal(false);
  });
});

describe('bundle server: serving bundles', () => {
  it('answers 503 before the first build, even for names that will exist', async () => {
    const { app, registry, metrics } = setup({ built: false });
    registry.publish(bundleOf('b', 'x'));
    const res = await request(app).get('/bundles/b').expect(503);
    expect(errorBody(res.body).code).to.equal('bundles_not_ready');
    expect(await metricValue(metrics, 'opa_sync_bundle_requests_total', { result: '503' })).to.equal(1);
  });

  it('answers 200 with the exact headers OPA needs and the bytes as published', async () => {
    const { app, registry, metrics } = setup();
    const b = bundleOf('b', 'tarball bytes');
    registry.publish(b);
    const res = await request(app)
      .get('/bundles/b')
      .set('Accept-Encoding', 'gzip, deflate')
      .buffer(true)
      .parse(binary)
      .expect(200);
    expect(res.headers['content-type']).to.equal(BUNDLE_CONTENT_TYPE);
    expect(res.headers['content-type']).to.equal('application/vnd.openpolicyagent.bundles');
    expect(res.headers.etag).to.equal(b.etag);
    expect(res.headers['content-length']).to.equal(String(b.bytes.length));
    expect(res.headers['cache-control']).to.equal('no-cache');
    expect(res.headers['content-encoding']).to.equal(undefined);
    expect(res.headers['x-powered-by']).to.equal(undefined);
    expect(Buffer.compare(res.body as Buffer, b.bytes)).to.equal(0);
    expect(
      await metricValue(metrics, 'opa_sync_bundle_requests_total', { bundle: 'b', result: '200' }),
    ).to.equal(1);
  });

  it('serves names with "/" and the .tar.gz form; HEAD has the headers and no body', async () => {
    const { app, registry } = setup();
    const nested = bundleOf('team/authz', 'nested');
    const dotted = bundleOf('authz/bundle.tar.gz', 'dotted');
    registry.publish(nested);
    registry.publish(dotted);
    const a = await request(app).get('/bundles/team/authz').buffer(true).parse(binary).expect(200);
    expect((a.body as Buffer).toString()).to.equal('nested');
    const b = await request(app).get('/bundles/team/authz.tar.gz').buffer(true).parse(binary).expect(200);
    expect((b.body as Buffer).toString()).to.equal('nested');
    // A published name that ends in .tar.gz is found as it is.
    const c = await request(app).get('/bundles/authz/bundle.tar.gz').buffer(true).parse(binary).expect(200);
    expect((c.body as Buffer).toString()).to.equal('dotted');
    const head = await request(app).head('/bundles/team/authz').expect(200);
    expect(head.headers['content-type']).to.equal(BUNDLE_CONTENT_TYPE);
    expect(head.headers['content-length']).to.equal(String(nested.bytes.length));
    expect(head.headers.etag).to.equal(nested.etag);
    expect(head.text ?? '').to.equal('');
  });

  it('serves every name it can publish, the longest too, in both forms; longer names are refused unread', async () => {
    const { app, registry } = setup();
    const longest = `${'a'.repeat(62)}/${'b'.repeat(62)}/${'c'.repeat(63)}/${'d'.repeat(63)}`;
    expect(longest).to.have.length(253);
    registry.publish(bundleOf(longest, 'longest'));
    for (const p of [`/bundles/${longest}`, `/bundles/${longest}.tar.gz`]) {
      const res = await request(app).get(p).buffer(true).parse(binary).expect(200);
      expect((res.body as Buffer).toString()).to.equal('longest');
    }
    const tooLong = await request(app).get(`/bundles/${longest}e`).expect(400);
    expect(errorBody(tooLong.body).code).to.equal('invalid_bundle_name');
    expect(errorBody(tooLong.body).message).to.include('no more than 253 characters');
    const upper = await request(app).get('/bundles/Authz').expect(400);
    expect(errorBody(upper.body).code).to.equal('invalid_bundle_name');
  });

  it('answers 404 as JSON for an unknown bundle and counts it without the name', async () => {
    const { app, registry, metrics } = setup();
    registry.publish(bundleOf('b', 'x'));
    const res = await request(app).get('/bundles/nope').expect(404);
    expect(res.headers['content-type']).to.match(/^application\/json/);
    expect(errorBody(res.body).code).to.equal('bundle_not_found');
    expect(
      await metricValue(metrics, 'opa_sync_bundle_requests_total', { bundle: '', result: '404' }),
    ).to.equal(1);
    const other = await request(app).post('/bundles/b').expect(404);
    expect(errorBody(other.body).code).to.equal('not_found');
  });

  describe('hostile paths', () => {
    let setupResult: Setup;
    let server: RunningServer;
    let lookups: string[];
    before(async () => {
      setupResult = setup();
      lookups = [];
      const { registry } = setupResult;
      registry.publish(bundleOf('x', 'x'));
      registry.publish(bundleOf('a', 'a'));
      const get = registry.get.bind(registry);
      registry.get = (name: string) => {
        lookups.push(name);
        return get(name);
      };
      server = await listenBundleServer(setupResult.app, '127.0.0.1', 0);
    });
    after(async () => {
      await server.close();
    });

    const cases = [
      '/bundles/a/../x',
      '/bundles/../bundles/x',
      '/bundles/..',
      '/bundles/a/..',
      '/bundles/a%2f..%2fx',
      '/bundles/a%2F..%2Fx',
      '/bundles/%2e%2e/x',
      '/bundles/a%2fx',
      '/bundles/a%00x',
      '/bundles/a%5cx',
      '/bundles/a\\..\\x',
      '/bundles/a//x',
      '/bundles//x',
      '/bundles/x/',
      '/bundles/./x',
      '/bundles/%zz',
      '/bundles/',
    ];
    for (const p of cases) {
      it(`refuses ${p} without looking it up`, async () => {
        lookups.length = 0;
        const res = await raw(server.port, p);
        expect(res.status, p).to.be.oneOf([400, 404]);
        const body = JSON.parse(res.body.toString()) as unknown;
        errorBody(body);
        expect(lookups, p).to.deep.equal([]);
      });
    }

    it('still serves the plain names', async () => {
      expect((await raw(server.port, '/bundles/x')).status).to.equal(200);
      expect((await raw(server.port, '/bundles/%78')).status).to.equal(200);
    });
  });

  it('answers 304 with the ETag and no body when If-None-Match names the current ETag (also W/ and lists)', async () => {
    const { app, registry, metrics } = setup();
    const b = bundleOf('b', 'x');
    registry.publish(b);
    for (const inm of [b.etag, `W/${b.etag}`, `"other", ${b.etag}`, `W/"other",W/${b.etag}`]) {
      const res = await request(app).get('/bundles/b').set('If-None-Match', inm).expect(304);
      expect(res.headers.etag, inm).to.equal(b.etag);
      expect(res.headers['cache-control']).to.equal('no-cache');
      expect(res.headers['content-length']).to.equal(undefined);
      expect(res.text ?? '').to.equal('');
    }
    expect(
      await metricValue(metrics, 'opa_sync_bundle_requests_total', { bundle: 'b', result: '304' }),
    ).to.equal(4);
    const changed = await request(app).get('/bundles/b').set('If-None-Match', '"stale"').expect(200);
    expect(changed.headers.etag).to.equal(b.etag);
  });
});

describe('bundle server: the fast path', () => {
  it('ignores the query string, and checks the name of every spelling of a path', async () => {
    const { app, registry, metrics } = setup();
    registry.publish(bundleOf('b', 'x'));
    await request(app).get('/bundles/b?x=1').expect(200);
    await request(app).get('/bundles/%62').expect(200);
    await request(app).get('/bundles/%62?x=1').expect(200);
    const refused = await request(app).get('/bundles/b%2f..?x').expect(400);
    expect(errorBody(refused.body).code).to.equal('invalid_bundle_name');
    expect(
      await metricValue(metrics, 'opa_sync_bundle_requests_total', { bundle: 'b', result: '200' }),
    ).to.equal(3);
  });

  it('finds a name ending in .tar.gz published after its file form was asked for', async () => {
    const { app, registry } = setup();
    registry.publish(bundleOf('a', 'plain'));
    const first = await request(app).get('/bundles/a.tar.gz').buffer(true).parse(binary).expect(200);
    expect((first.body as Buffer).toString()).to.equal('plain');
    registry.publish(bundleOf('a.tar.gz', 'dotted'));
    const second = await request(app).get('/bundles/a.tar.gz').buffer(true).parse(binary).expect(200);
    expect((second.body as Buffer).toString()).to.equal('dotted');
  });

  it('leaves every other method and path to express', async () => {
    const { app, registry } = setup();
    registry.publish(bundleOf('b', 'x'));
    for (const [method, p] of [
      ['post', '/bundles/b'],
      ['put', '/bundles/b'],
      ['get', '/bundles'],
      ['get', '/Bundles/b'],
    ] as const) {
      const res = await request(app)[method](p).expect(404);
      expect(errorBody(res.body).code, `${method} ${p}`).to.equal('not_found');
    }
  });
});

describe('bundle server: long polling', () => {
  const PREFER_1 = 'modes=snapshot,delta;wait=1';

  it('holds a matching request until just under the wait, then 304', async () => {
    const { app, registry, metrics } = setup();
    const b = bundleOf('b', 'x');
    registry.publish(b);
    const started = Date.now();
    const res = await request(app)
      .get('/bundles/b')
      .set('If-None-Match', b.etag)
      .set('Prefer', PREFER_1)
      .expect(304);
    const took = Date.now() - started;
    expect(took).to.be.within(850, 1500);
    expect(res.headers.etag).to.equal(b.etag);

    const started2 = Date.now();
    await request(app)
      .get('/bundles/b')
      .set('If-None-Match', b.etag)
      .set('Prefer', 'modes=snapshot,delta;wait=2')
      .expect(304);
    expect(Date.now() - started2).to.be.within(1700, 2600);
    expect(await metricValue(metrics, 'opa_sync_bundle_long_polls_held')).to.equal(0);
  });

  it('refuses a maxWaitSeconds below 1', () => {
    for (const maxWaitSeconds of [0, -1, 0.5, Number.NaN]) {
      expect(() => setup({ maxWaitSeconds }), String(maxWaitSeconds)).to.throw(InvalidInputError);
    }
  });

  it('caps the wait at maxWaitSeconds', async () => {
    const { app, registry } = setup({ maxWaitSeconds: 1 });
    const b = bundleOf('b', 'x');
    registry.publish(b);
    const started = Date.now();
    await request(app)
      .get('/bundles/b')
      .set('If-None-Match', b.etag)
      .set('Prefer', 'modes=snapshot,delta;wait=30')
      .expect(304);
    expect(Date.now() - started).to.be.within(850, 1500);
  });

  it('answers 200 at once when If-None-Match is absent or stale, and 304 at once without a wait', async () => {
    const { app, registry } = setup();
    const b = bundleOf('b', 'x');
    registry.publish(b);
    for (const inm of [undefined, '"stale"']) {
      const started = Date.now();
      const req = request(app).get('/bundles/b').set('Prefer', 'modes=snapshot,delta;wait=10');
      if (inm !== undefined) void req.set('If-None-Match', inm);
      await req.expect(200);
      expect(Date.now() - started).to.be.below(500);
    }
    const started = Date.now();
    await request(app)
      .get('/bundles/b')
      .set('If-None-Match', b.etag)
      .set('Prefer', 'modes=snapshot,delta')
      .expect(304);
    expect(Date.now() - started).to.be.below(500);
  });

  it('wakes a held request with the new bundle when a new ETag is published, not on the same ETag', async () => {
    const { app, registry, metrics } = setup();
    const first = bundleOf('b', 'one');
    registry.publish(first);
    const started = Date.now();
    const pending = request(app)
      .get('/bundles/b')
      .set('If-None-Match', first.etag)
      .set('Prefer', 'modes=snapshot,delta;wait=20')
      .buffer(true)
      .parse(binary)
      .then((r) => r);
    await waitFor('the poll to be held', async () =>
      (await metricValue(metrics, 'opa_sync_bundle_long_polls_held')) === 1 ? true : undefined,
    );
    registry.publish({ ...first, revision: 'same bytes again' });
    // A publish wakes its waiters synchronously: one turn of the event loop shows that this one did not.
    await new Promise((r) => setImmediate(r));
    expect(await metricValue(metrics, 'opa_sync_bundle_long_polls_held')).to.equal(1);
    const second = bundleOf('b', 'two');
    registry.publish(second);
    const res = await pending;
    expect(res.status).to.equal(200);
    expect(Date.now() - started).to.be.below(3000);
    expect(res.headers.etag).to.equal(second.etag);
    expect(res.headers['content-type']).to.equal(BUNDLE_CONTENT_TYPE);
    expect((res.body as Buffer).toString()).to.equal('two');
    expect(await metricValue(metrics, 'opa_sync_bundle_long_polls_held')).to.equal(0);
    expect(registry.waiterCount()).to.equal(0);
  });

  it('frees the waiter at once when the client disconnects', async () => {
    const { app, registry, metrics } = setup();
    const b = bundleOf('b', 'x');
    registry.publish(b);
    const server = await listenBundleServer(app, '127.0.0.1', 0);
    try {
      let clientReq: http.ClientRequest | undefined;
      const pending = raw(server.port, '/bundles/b', { 'If-None-Match': b.etag, Prefer: 'wait=60' }, (r) => {
        clientReq = r;
      }).catch((err: unknown) => err);
      await waitFor('the poll to be held', async () =>
        (await metricValue(metrics, 'opa_sync_bundle_long_polls_held')) === 1 ? true : undefined,
      );
      expect(registry.waiterCount('b')).to.equal(1);
      clientReq?.destroy();
      expect(await pending).to.be.instanceOf(Error);
      const freed = Date.now();
      await waitFor(
        'the waiter to be freed',
        async () =>
          (await metricValue(metrics, 'opa_sync_bundle_long_polls_held')) === 0 &&
          registry.waiterCount() === 0
            ? true
            : undefined,
        { timeoutMs: 2000, intervalMs: 10 },
      );
      expect(Date.now() - freed).to.be.below(1000);
    } finally {
      await server.close();
    }
  });

  it('close() answers hundreds of held polls at once, each with Connection: close', async () => {
    const { app, registry, metrics } = setup();
    const b = bundleOf('b', 'x');
    registry.publish(b);
    const server = await listenBundleServer(app, '127.0.0.1', 0);
    const pending = Array.from({ length: 300 }, (_, i) =>
      raw(server.port, '/bundles/b', { 'If-None-Match': b.etag, Prefer: `wait=${30 + (i % 3) * 30}` }),
    );
    await waitFor('the polls to be held', async () =>
      (await metricValue(metrics, 'opa_sync_bundle_long_polls_held')) === 300 ? true : undefined,
    );
    const started = Date.now();
    await server.close();
    const answers = await Promise.all(pending);
    expect(Date.now() - started).to.be.below(1500);
    expect(answers.every((r) => r.status === 304 && r.headers.connection === 'close')).to.equal(true);
    expect(registry.waiterCount()).to.equal(0);
    expect(await metricValue(metrics, 'opa_sync_bundle_long_polls_held')).to.equal(0);
  });

  it('close() answers held polls at once and stops the server', async () => {
    const { app, registry, metrics } = setup();
    const b = bundleOf('b', 'x');
    registry.publish(b);
    const server = await listenBundleServer(app, '127.0.0.1', 0);
    const pending = raw(server.port, '/bundles/b', { 'If-None-Match': b.etag, Prefer: 'wait=60' });
    await waitFor('the poll to be held', async () =>
      (await metricValue(metrics, 'opa_sync_bundle_long_polls_held')) === 1 ? true : undefined,
    );
    const started = Date.now();
    await server.close();
    const res = await pending;
    expect(Date.now() - started).to.be.below(1500);
    expect(res.status).to.equal(304);
    expect(res.headers.connection).to.equal('close');
    expect(await metricValue(metrics, 'opa_sync_bundle_long_polls_held')).to.equal(0);
    const refused = await raw(server.port, '/bundles/b').catch((err: unknown) => err);
    expect(refused).to.be.instanceOf(Error);
  });
});

describe('bundle server: bearer tokens', () => {
  it('reads the Authorization header as the rule /^\\s*bearer\\s+(\\S+)\\s*$/i and a whole-token match did (property)', () => {
    const old = (header: string, tokens: readonly string[]): boolean => {
      const match = /^\s*bearer\s+(\S+)\s*$/i.exec(header);
      return match?.[1] !== undefined && tokens.includes(match[1]);
    };
    // Header values reach us as latin1 text; spaces of every kind \s knows, near misses of the scheme.
    const piece = fc.constantFrom(
      ' ',
      '\t',
      '\u00a0',
      '\u2003',
      '\ufeff',
      'Bearer',
      'bearer',
      'BEARER',
      'Bearer ',
      'bEaReR\t',
      'Basic ',
      'bearerx',
      'beare',
      'tok',
      'token',
      'é',
      'x',
      '#',
    );
    const text = fc.array(piece, { maxLength: 8 }).map((parts) => parts.join(''));
    const token = fc.constantFrom('tok', 'token', 'x', 'é', 'tokentoken', 'to');
    fc.assert(
      fc.property(text, fc.array(token, { minLength: 1, maxLength: 3 }), (header, tokens) => {
        expect(bearerMatches(header, tokens.map(secretDigest)), JSON.stringify(header)).to.equal(
          old(header, tokens),
        );
      }),
      { numRuns: 5000 },
    );
    for (const tokens of [['tok'], ['token', 'x']]) {
      for (const header of [
        'Bearer tok',
        ' bearer\ttok ',
        'Bearer token',
        'Bearer x',
        'Bearer  tok',
        'Bearer tokx',
      ]) {
        expect(bearerMatches(header, tokens.map(secretDigest)), header).to.equal(old(header, tokens));
      }
    }
  });
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-tokens-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads one token a line, ignoring blank lines and # comments', () => {
    expect(parseTokens('# comment\n\n alpha \r\nbeta\n  # indented comment\n')).to.have.length(2);
    const file = path.join(dir, 'tokens');
    writeFileSync(file, '# comment\n\nalpha\r\nbeta\n');
    const tokens = new TokenFile(file, silentLogger());
    try {
      expect(tokens.count()).to.equal(2);
      expect(tokens.check('Bearer alpha')).to.equal(true);
      expect(tokens.check('bearer beta')).to.equal(true);
      expect(tokens.check('Bearer # comment')).to.equal(false);
      expect(tokens.check('Bearer ')).to.equal(false);
    } finally {
      tokens.close();
    }
  });

  it('compares whole tokens: no prefix, suffix, case or scheme slips through', () => {
    const file = path.join(dir, 'tokens');
    writeFileSync(file, 's3cret-token\nx\n');
    const tokens = new TokenFile(file, silentLogger());
    try {
      expect(tokens.check('Bearer s3cret-token')).to.equal(true);
      expect(tokens.check('Bearer x')).to.equal(true);
      for (const bad of [
        undefined,
        '',
        's3cret-token',
        'Bearer s3cret',
        'Bearer s3cret-token2',
        'Bearer S3CRET-TOKEN',
        'Basic s3cret-token',
        'Bearer s3cret-token extra',
        'Bearer xx',
        `Bearer ${'a'.repeat(10_000)}`,
      ]) {
        expect(tokens.check(bad), String(bad).slice(0, 40)).to.equal(false);
      }
    } finally {
      tokens.close();
    }
  });

  it('fails at start when the file cannot be read', () => {
    expect(() => new TokenFile(path.join(dir, 'missing'), silentLogger())).to.throw(InvalidInputError);
  });

  it('picks up an atomically replaced file, and keeps the last tokens while the file is missing', async () => {
    const file = path.join(dir, 'tokens');
    writeFileSync(file, 'old-token\n');
    const tokens = new TokenFile(file, silentLogger());
    try {
      expect(tokens.check('Bearer old-token')).to.equal(true);
      const next = path.join(dir, '.tokens.tmp');
      writeFileSync(next, 'new-token\n');
      renameSync(next, file);
      await waitFor(
        'the new token to be accepted',
        () => (tokens.check('Bearer new-token') ? true : undefined),
        { timeoutMs: 5000, intervalMs: 50 },
      );
      expect(tokens.check('Bearer old-token')).to.equal(false);

      unlinkSync(file);
      // Proving that nothing changes: the file is looked at again at most once a second, so the wait
      // must outlast one such look (the deleted file keeps the last good tokens).
      await new Promise((r) => setTimeout(r, 1200));
      expect(tokens.check('Bearer new-token')).to.equal(true);
      writeFileSync(file, 'third-token\n');
      await waitFor(
        'the re-created file to be read',
        () => (tokens.check('Bearer third-token') ? true : undefined),
        { timeoutMs: 5000, intervalMs: 50 },
      );
    } finally {
      tokens.close();
    }
  });

  it('guards every route with 401, WWW-Authenticate: Bearer and a JSON error', async () => {
    const file = path.join(dir, 'tokens');
    writeFileSync(file, 'good\n');
    const tokens = new TokenFile(file, silentLogger());
    try {
      const { app, registry, metrics } = setup({ tokens });
      registry.publish(bundleOf('b', 'x'));
      const probes = [
        () => request(app).get('/bundles/b'),
        () => request(app).head('/bundles/b'),
        () => request(app).get('/bundles/nope'),
        () =>
          request(app)
            .post('/status')
            .send({ labels: { id: 'a' } }),
        () =>
          request(app)
            .post('/status/p1')
            .send({ labels: { id: 'a' } }),
        () => request(app).get('/v1/fleet'),
        () => request(app).get('/elsewhere'),
      ];
      for (const [i, probe] of probes.entries()) {
        for (const auth of [undefined, 'Bearer bad', 'good', 'Basic good']) {
          const req = probe();
          if (auth !== undefined) void req.set('Authorization', auth);
          const res = await req.expect(401);
          expect(res.headers['www-authenticate']).to.match(/^Bearer\b/);
          // probes[1] is the HEAD request: no body.
          if (i !== 1) expect(errorBody(res.body).code).to.equal('unauthorized');
        }
      }
      expect(await metricValue(metrics, 'opa_sync_bundle_requests_total', { result: '401' })).to.equal(12);
      await request(app).get('/bundles/b').set('Authorization', 'Bearer good').expect(200);
      await request(app)
        .post('/status')
        .set('Authorization', 'Bearer good')
        .send({ labels: { id: 'a' } })
        .expect(200);
      await request(app).get('/v1/fleet').set('Authorization', 'Bearer good').expect(200);
    } finally {
      tokens.close();
    }
  });
});

describe('bundle server: status reports and the fleet', () => {
  function report(
    id: string,
    revision: string,
    extra: Record<string, unknown> = {},
  ): Record<string, unknown> {
    return {
      labels: { id, version: '1.22.3', app: 'demo' },
      bundles: {
        b: {
          name: 'b',
          active_revision: revision,
          last_request: '2026-01-02T03:04:00Z',
          last_successful_activation: '2026-01-02T03:00:00Z',
          type: 'snapshot',
        },
      },
      metrics: { prometheus: {} },
      ...extra,
    };
  }

  it('records reports from /status and /status/<partition> and lists them sorted by id', async () => {
    const { app, registry } = setup();
    registry.publish(bundleOf('b', 'x'));
    await request(app).post('/status').send(report('zz', 'r1')).expect(200, {});
    await request(app).post('/status/edge/eu').send(report('aa', 'r2')).expect(200, {});
    const res = await request(app).get('/v1/fleet').expect(200);
    const body = res.body as { instances: Record<string, unknown>[] };
    expect(body.instances.map((i) => i.id)).to.deep.equal(['aa', 'zz']);
    expect(body.instances[0]).to.deep.equal({
      id: 'aa',
      labels: { id: 'aa', version: '1.22.3', app: 'demo' },
      partition: 'edge/eu',
      lastSeen: FIXED_NOW.toISOString(),
      bundles: [
        {
          name: 'b',
          activeRevision: 'r2',
          lastSuccessfulActivation: '2026-01-02T03:00:00Z',
        },
      ],
    });
    expect(body.instances[1]?.partition).to.equal(undefined);
  });

  it('accepts a gzip body', async () => {
    const { app, fleet } = setup();
    const server = await listenBundleServer(app, '127.0.0.1', 0);
    try {
      const body = gzipSync(Buffer.from(JSON.stringify(report('gz', 'r1'))));
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port: server.port,
            path: '/status',
            method: 'POST',
            agent: false,
            headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end(body);
      });
      expect(status).to.equal(200);
      expect(fleet.list().map((i) => i.id)).to.deep.equal(['gz']);
    } finally {
      await server.close();
    }
  });

  it('refuses bad reports with 400 and a clear message', async () => {
    const { app, fleet, metrics } = setup();
    const cases: [string | Buffer, string, RegExp][] = [
      [JSON.stringify({ bundles: {} }), 'application/json', /labels/],
      [JSON.stringify({ labels: { version: '1' } }), 'application/json', /labels\.id/],
      [JSON.stringify({ labels: { id: 5 } }), 'application/json', /labels\.id/],
      [JSON.stringify({ labels: { id: 'a' }, bundles: [] }), 'application/json', /bundles/],
      ['{"labels": ', 'application/json', /./],
      ['labels=1', 'text/plain', /application\/json/],
    ];
    for (const [body, type, message] of cases) {
      const res = await request(app).post('/status').set('Content-Type', type).send(body).expect(400);
      expect(errorBody(res.body).message, String(body)).to.match(message);
    }
    const partition = await request(app).post('/status/a%2f..').send(report('p', 'r')).expect(400);
    expect(errorBody(partition.body).code).to.equal('invalid_partition_name');
    expect(fleet.list()).to.deep.equal([]);
    expect(await metricValue(metrics, 'opa_sync_status_reports_total', { result: 'invalid' })).to.equal(7);
  });

  it('refuses bodies over the limit with 413', async () => {
    const { app } = setup();
    const big = report('big', 'r', { padding: 'x'.repeat(1_100_000) });
    const res = await request(app).post('/status').send(big).expect(413);
    expect(errorBody(res.body).code).to.equal('request_too_large');
  });

  it('keeps the fleet gauges: instances, and instances on the published revision by bundle', async () => {
    const { app, registry, metrics, fleet } = setup();
    registry.publish({ ...bundleOf('b', 'x'), revision: 'r2' });
    await request(app).post('/status').send(report('one', 'r1')).expect(200);
    await request(app).post('/status').send(report('two', 'r2')).expect(200);
    await request(app)
      .post('/status')
      .send(report('three', 'r2', { bundles: { invented: { active_revision: 'r2' } } }))
      .expect(200);
    expect(await metricValue(metrics, 'opa_sync_fleet_instances')).to.equal(3);
    expect(await metricValue(metrics, 'opa_sync_fleet_instances_current_revision', { bundle: 'b' })).to.equal(
      1,
    );
    // Bundles we do not publish get no series.
    const { values } = await metrics.fleetInstancesCurrent.get();
    expect(values.map((v) => v.labels.bundle)).to.deep.equal(['b']);

    registry.publish({ ...bundleOf('b', 'y'), revision: 'r1' });
    fleet.updateGauges();
    expect(await metricValue(metrics, 'opa_sync_fleet_instances_current_revision', { bundle: 'b' })).to.equal(
      1,
    );
    await request(app).post('/status').send(report('two', 'r1')).expect(200);
    expect(await metricValue(metrics, 'opa_sync_fleet_instances_current_revision', { bundle: 'b' })).to.equal(
      2,
    );
    expect(await metricValue(metrics, 'opa_sync_fleet_instances')).to.equal(3);
  });
});

describe('fleet', () => {
  it('keeps what the report says about each bundle: errors, code, http_code; the zero time is "never"', () => {
    const metrics = new Metrics({ processMetrics: false });
    const fleet = new Fleet(
      metrics,
      () => undefined,
      () => FIXED_NOW,
    );
    fleet.record(
      {
        labels: { id: 'x', version: '1.22.3', weird: 5 },
        bundles: {
          b: {
            name: 'b',
            last_successful_activation: '0001-01-01T00:00:00Z',
            code: 'bundle_error',
            message: 'server replied with Unauthorized',
            http_code: 401,
            errors: [{ code: 'x', message: 'y' }],
          },
          broken: 'not an object',
        },
      },
      undefined,
    );
    expect(fleet.list()).to.deep.equal([
      {
        id: 'x',
        labels: { id: 'x', version: '1.22.3' },
        partition: undefined,
        lastSeen: FIXED_NOW.toISOString(),
        bundles: [
          {
            name: 'b',
            activeRevision: undefined,
            lastSuccessfulActivation: undefined,
            errors: [{ code: 'x', message: 'y' }],
            code: 'bundle_error',
            message: 'server replied with Unauthorized',
            httpCode: 401,
          },
        ],
      },
    ]);
  });

  it('throws InvalidInputError without labels.id', () => {
    const fleet = new Fleet(new Metrics({ processMetrics: false }), () => undefined);
    for (const bad of [null, 'x', [], {}, { labels: {} }, { labels: { id: '' } }, { labels: 'id' }]) {
      expect(() => fleet.record(bad, undefined), JSON.stringify(bad)).to.throw(InvalidInputError);
    }
  });

  it('forgets instances that stop reporting, and keeps at most maxInstances', () => {
    let now = FIXED_NOW.getTime();
    const metrics = new Metrics({ processMetrics: false });
    const fleet = new Fleet(
      metrics,
      () => undefined,
      () => new Date(now),
      {
        staleAfterMs: 60_000,
        maxInstances: 3,
      },
    );
    for (const id of ['a', 'b', 'c', 'd']) {
      fleet.record({ labels: { id } }, undefined);
      now += 1000;
    }
    expect(fleet.list().map((i) => i.id)).to.deep.equal(['b', 'c', 'd']);
    now += 58_500;
    fleet.record({ labels: { id: 'b' } }, undefined);
    expect(fleet.list().map((i) => i.id)).to.deep.equal(['b', 'd']);
    fleet.updateGauges();
  });
});

describe('bundle server: TLS', () => {
  it('serves over https with the given certificate and key', async () => {
    const ca = await testCa();
    const cert = await createServingCert(ca, 'bundle-server-unit');
    const { app, registry } = setup();
    registry.publish(bundleOf('b', 'x'));
    const server = await listenBundleServer(app, '127.0.0.1', 0, cert);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        https
          .get(
            { host: '127.0.0.1', port: server.port, path: '/bundles/b', ca: ca.pem, agent: false },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          )
          .on('error', reject);
      });
      expect(status).to.equal(200);
    } finally {
      await server.close();
    }
  });

  it('fails with the file name when the certificate cannot be read', async () => {
    const { app } = setup();
    const missing = path.join(tmpdir(), 'opa-sync-no-such-cert.pem');
    const err = await listenBundleServer(app, '127.0.0.1', 0, { certFile: missing, keyFile: missing }).catch(
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(InvalidInputError);
    expect((err as Error).message).to.include(missing);
  });
});
