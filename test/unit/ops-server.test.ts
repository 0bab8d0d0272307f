// The operations endpoint's answers (plain node:http, no framework): /health and /ready with 200 or 503
// and their JSON, /metrics in Prometheus' text format, HEAD as GET without a body, 404 for anything
// else, and a view that throws answered with 500 and logged.
import { expect } from 'chai';
import request from 'supertest';
import { Metrics } from '../../src/http/metrics.js';
import { createOpsApp, type OpsViews } from '../../src/http/ops-server.js';
import { silentLogger } from '../../src/util/logger.js';

function app(views: Partial<OpsViews> = {}) {
  const metrics = new Metrics({ processMetrics: false });
  return createOpsApp(
    metrics,
    {
      readiness: () => ({ ready: true, checks: { opa: true } }),
      health: () => ({ healthy: true, parts: {} }),
      ...views,
    },
    silentLogger(),
  );
}

describe('operations endpoint', () => {
  it('answers /health and /ready with their JSON, 200 or 503', async () => {
    await request(app())
      .get('/health')
      .expect(200)
      .expect('content-type', /application\/json/)
      .expect({ status: 'ok', parts: {} });
    await request(app())
      .get('/ready')
      .expect(200, { ready: true, checks: { opa: true } });
    const down = app({
      readiness: () => ({ ready: false, checks: { opa: false } }),
      health: () => ({ healthy: false, parts: {} }),
    });
    await request(down)
      .get('/ready')
      .expect(503, { ready: false, checks: { opa: false } });
    await request(down).get('/health/').expect(503, { status: 'failing', parts: {} });
    const stale = app({
      readiness: () => ({
        ready: false,
        checks: { configmaps: false },
        reasons: { configmaps: ['the watch of data ConfigMaps of opa has heard nothing …'] },
      }),
      health: () => ({ healthy: true, parts: {} }),
    });
    await request(stale)
      .get('/ready')
      .expect(503, {
        ready: false,
        checks: { configmaps: false },
        reasons: { configmaps: ['the watch of data ConfigMaps of opa has heard nothing …'] },
      });
  });

  it('serves /metrics as Prometheus text; HEAD has no body; anything else is 404', async () => {
    const res = await request(app()).get('/metrics?x=1').expect(200);
    expect(res.headers['content-type']).to.match(/^text\/plain/);
    expect(res.text).to.include('opa_sync_');
    const head = await request(app()).head('/ready').expect(200);
    expect(head.text ?? '').to.equal('');
    await request(app()).get('/nope').expect(404);
    await request(app()).post('/health').expect(404);
  });

  it('a view that throws is a 500 with a fixed body', async () => {
    const broken = app({
      health: () => {
        throw new Error('boom');
      },
    });
    await request(broken).get('/health').expect(500, { code: 'internal_error', message: 'internal error' });
  });
});
