// The web page's server side without a browser: the snapshot (OPA's errors with row:col and the
// offending line, drift first in the fleet), the filters, the escaping of hostile names, and the routes
// (first render as HTML, assets, the live event stream, the token wall with its HttpOnly cookie).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import request from 'supertest';
import { Fleet, type FleetInstance } from '../../src/bundles/fleet.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { createBundleApp } from '../../src/bundles/server.js';
import { TokenFile } from '../../src/bundles/tokens.js';
import { Metrics } from '../../src/http/metrics.js';
import { createOpsApp } from '../../src/http/ops-server.js';
import { DesiredState } from '../../src/model/desired-state.js';
import type { ConfigMapOrigin } from '../../src/model/origin.js';
import { OutcomeBook } from '../../src/ui/outcome-book.js';
import { applyFilter, renderSections } from '../../src/ui/render-sections.js';
import { errorViews, takeSnapshot, type UiSources } from '../../src/ui/snapshot.js';
import { UI_COOKIE } from '../../src/ui/ui-auth.js';
import { createUiRoute } from '../../src/ui/ui-route.js';
import { silentLogger } from '../../src/util/logger.js';

const origin = (namespace: string, name: string): ConfigMapOrigin => ({
  kind: 'configmap',
  role: 'policy',
  namespace,
  name,
});

const BROKEN = 'package broken\n\nallow if {\n  input.x ==\n}\n';
const OPA_ERROR = {
  code: 'invalid_parameter',
  message: 'error(s) occurred while compiling module(s)',
  errors: [
    {
      code: 'rego_parse_error',
      message: 'unexpected } token',
      location: { file: 'team-a/broken/main.rego', row: 5, col: 1 },
    },
  ],
};

function fixture(): { sources: UiSources; state: DesiredState; book: OutcomeBook } {
  const state = new DesiredState();
  const book = new OutcomeBook(state);
  state.set({
    origin: origin('team-a', 'broken'),
    modules: [{ id: 'team-a/broken/main.rego', text: BROKEN }],
    documents: [],
    problems: [],
  });
  state.set({
    origin: origin('team-b', 'fine'),
    modules: [{ id: 'team-b/fine/main.rego', text: 'package fine\n' }],
    documents: [],
    problems: [],
  });
  book.report('opa', { origin: origin('team-a', 'broken'), errors: [OPA_ERROR] });
  book.report('opa', { origin: origin('team-b', 'fine'), errors: [] });
  const instance = (id: string, rev: string): FleetInstance => ({
    id,
    labels: { id, version: '1.22.3', region: 'eu' },
    partition: undefined,
    lastSeen: '2026-12-01T10:00:00.000Z',
    bundles: [
      {
        name: 'policies',
        activeRevision: rev,
        lastSuccessfulActivation: undefined,
        errors: undefined,
        code: undefined,
        message: undefined,
        httpCode: undefined,
      },
    ],
  });
  const sources: UiSources = {
    state,
    book,
    health: () => ({ healthy: true, parts: { ops: { phase: 'running', restarts: 0 } } }),
    bundles: {
      snapshot: () => ({
        lastBuildAt: '2026-12-01T10:00:00.000Z',
        lastBuildMs: 12.5,
        bundles: [
          {
            name: 'policies',
            revision: 'new-revision',
            bytes: 1532,
            roots: ['fine'],
            signed: false,
            lastRefused: undefined,
          },
        ],
      }),
    },
    fleet: { list: () => [instance('a-current', 'new-revision'), instance('z-old', 'old-revision')] },
  };
  return { sources, state, book };
}

describe('web page: snapshot and rendering', () => {
  it("shows OPA's error with row:col and the offending line of the module", () => {
    const { sources } = fixture();
    const snap = takeSnapshot(sources);
    const broken = snap.policies.find((p) => p.name === 'team-a/broken');
    expect(broken?.hasErrors).to.equal(true);
    expect(broken?.sinks[0]?.errors[0]).to.deep.include({
      code: 'rego_parse_error',
      row: 5,
      col: 1,
      line: '}',
    });
    const html = renderSections(snap, { namespace: '', errorsOnly: false });
    expect(html).to.include('team-a/broken/main.rego:5:1');
    expect(html).to.include('unexpected } token');
  });

  it('keeps an error without OPA details as it is', () => {
    expect(errorViews([{ code: 'invalid_json', message: 'bad' }], () => undefined)).to.deep.equal([
      { code: 'invalid_json', message: 'bad' },
    ]);
  });

  it('filters by namespace and by errors only', () => {
    const { policies } = takeSnapshot(fixture().sources);
    expect(applyFilter(policies, { namespace: '', errorsOnly: true }).map((p) => p.name)).to.deep.equal([
      'team-a/broken',
    ]);
    expect(
      applyFilter(policies, { namespace: 'team-b', errorsOnly: false }).map((p) => p.name),
    ).to.deep.equal(['team-b/fine']);
    expect(applyFilter(policies, { namespace: 'team-b', errorsOnly: true })).to.deep.equal([]);
  });

  it('puts the OPAs that are not on the current revision first, marked as drifted', () => {
    const { fleet } = takeSnapshot(fixture().sources);
    expect(fleet?.map((f) => [f.id, f.drifted])).to.deep.equal([
      ['z-old', true],
      ['a-current', false],
    ]);
  });

  it('escapes names and messages from outside', () => {
    const { sources, state, book } = fixture();
    const evil = origin('ns', '<script>alert(1)</script>');
    state.set({ origin: evil, modules: [], documents: [], problems: [] });
    book.report('opa', { origin: evil, errors: [{ code: 'x', message: '<img src=x onerror=alert(1)>' }] });
    const html = renderSections(takeSnapshot(sources), { namespace: '', errorsOnly: false });
    expect(html).not.to.include('<script>alert');
    expect(html).not.to.include('<img src=x');
    expect(html).to.include('&lt;script&gt;alert(1)&lt;/script&gt;');
  });

  it('forgets an origin that goes away, and records when an origin changed', () => {
    const { state, book } = fixture();
    const key = 'configmap:policy:team-a/broken';
    expect(book.get(key)?.changedAt).to.be.a('string');
    state.delete(origin('team-a', 'broken'));
    expect(book.get(key)).to.equal(undefined);
    book.report('opa', { origin: origin('team-a', 'broken'), errors: [] });
    expect(book.get(key)).to.equal(undefined);
  });
});

describe('web page: routes', () => {
  let dir: string;
  let tokens: TokenFile;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-ui-'));
    writeFileSync(path.join(dir, 'tokens'), 'secret-1\nsecret-2\n');
    tokens = new TokenFile(path.join(dir, 'tokens'), silentLogger());
  });
  after(() => {
    tokens.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const app = (withTokens: boolean) =>
    createOpsApp(
      new Metrics({ processMetrics: false }),
      { readiness: () => ({ ready: true, checks: {} }), health: () => ({ healthy: true, parts: {} }) },
      silentLogger(),
      createUiRoute({ sources: fixture().sources, tokens: withTokens ? tokens : undefined }),
    );

  it('renders the whole page on the server, with its own assets and a strict CSP', async () => {
    const res = await request(app(false))
      .get('/ui')
      .expect(200)
      .expect('content-type', /text\/html/);
    expect(res.text).to.include('<main id="live">');
    expect(res.text).to.include('team-a/broken');
    expect(res.headers['content-security-policy']).to.include("default-src 'none'");
    const css = await request(app(false))
      .get('/ui/app.css')
      .expect(200)
      .expect('content-type', /text\/css/);
    await request(app(false)).get('/ui/app.css').set('if-none-match', String(css.headers.etag)).expect(304);
    await request(app(false))
      .get('/ui/live.js')
      .expect(200)
      .expect('content-type', /javascript/);
    await request(app(false)).get('/ui/nothing').expect(404);
    // The ops routes are still there.
    await request(app(false)).get('/health').expect(200);
  });

  it('filters the first render with the query, as the form without JavaScript sends it', async () => {
    const res = await request(app(false)).get('/ui?errors=1').expect(200);
    expect(res.text).to.include('team-a/broken');
    expect(res.text).not.to.include('data-origin="configmap:policy:team-b/fine"');
  });

  it('keeps an anonymous client out, lets a token in through an HttpOnly cookie, and out again', async () => {
    const ui = app(true);
    const wall = await request(ui).get('/ui').expect(401);
    expect(wall.text).to.include('name="token"');
    expect(wall.text).not.to.include('team-a/broken');
    await request(ui).get('/ui/state.json').expect(401);
    await request(ui).get('/ui/events').expect(401);
    const refused = await request(ui).post('/ui/login').type('form').send({ token: 'guess' }).expect(401);
    expect(refused.text).to.include('not one of the token file');
    const login = await request(ui).post('/ui/login').type('form').send({ token: 'secret-2' }).expect(303);
    const cookie = String(login.headers['set-cookie']);
    expect(cookie).to.match(new RegExp(`^${UI_COOKIE}=secret-2;`));
    expect(cookie).to.include('HttpOnly');
    expect(cookie).to.include('SameSite=Strict');
    expect(cookie).to.include('Path=/ui');
    const page = await request(ui).get('/ui').set('cookie', `${UI_COOKIE}=secret-2`).expect(200);
    expect(page.text).to.include('team-a/broken');
    expect(page.text).to.include('Log out');
    await request(ui).get('/ui/state.json').set('authorization', 'Bearer secret-1').expect(200);
    await request(ui).get('/ui').set('cookie', `${UI_COOKIE}=secret-3`).expect(401);
    const logout = await request(ui).post('/ui/logout').expect(303);
    expect(String(logout.headers['set-cookie'])).to.include('Max-Age=0');
  });

  it('is served on the bundle port too, behind the same tokens, with the bundle routes unchanged', async () => {
    const metrics = new Metrics({ processMetrics: false });
    const registry = new BundleRegistry();
    const bundles = createBundleApp({
      registry,
      fleet: new Fleet(metrics, () => undefined),
      tokens,
      metrics,
      logger: silentLogger(),
      ui: createUiRoute({ sources: fixture().sources, tokens, secure: true }),
    });
    const wall = await request(bundles).get('/ui').expect(401);
    expect(wall.text).to.include('name="token"');
    const login = await request(bundles)
      .post('/ui/login')
      .type('form')
      .send({ token: 'secret-1' })
      .expect(303);
    // Over TLS the cookie is Secure.
    expect(String(login.headers['set-cookie'])).to.include('Secure');
    await request(bundles).get('/ui').set('cookie', `${UI_COOKIE}=secret-1`).expect(200);
    await request(bundles).get('/v1/fleet').expect(401);
    await request(bundles).get('/v1/fleet').set('authorization', 'Bearer secret-1').expect(200);
    await request(bundles).get('/bundles/policies').set('authorization', 'Bearer secret-1').expect(503);
  });

  it('streams the sections at once and again when they change', async () => {
    const { sources, state } = fixture();
    const ops = createOpsApp(
      new Metrics({ processMetrics: false }),
      { readiness: () => ({ ready: true, checks: {} }), health: () => ({ healthy: true, parts: {} }) },
      silentLogger(),
      createUiRoute({ sources }),
    );
    const server = http.createServer(ops);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const events: string[] = [];
    const controller = new AbortController();
    try {
      const res = await fetch(`http://127.0.0.1:${port}/ui/events`, { signal: controller.signal });
      expect(res.headers.get('content-type')).to.match(/text\/event-stream/);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      const nextEvent = async (): Promise<string> => {
        for (;;) {
          const end = buffer.indexOf('\n\n');
          if (end >= 0) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            if (event.startsWith('data: ')) return event.slice(6);
            continue;
          }
          const { value, done } = await reader.read();
          if (done) throw new Error('the stream ended');
          buffer += decoder.decode(value, { stream: true });
        }
      };
      events.push(await nextEvent());
      expect((JSON.parse(events[0] ?? '') as { main: string }).main).not.to.include('team-c/new');
      state.set({ origin: origin('team-c', 'new'), modules: [], documents: [], problems: [] });
      events.push(await nextEvent());
      expect((JSON.parse(events[1] ?? '') as { main: string }).main).to.include('team-c/new');
    } finally {
      controller.abort();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
