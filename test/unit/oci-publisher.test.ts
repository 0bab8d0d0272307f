// The OCI sink's own state, without a registry: a push to a port where nothing listens fails as
// oci_unreachable, is counted, keeps the part unready (an advisory check) and shows in its read-only
// snapshot (what the web page reads), and is retried with the backoff it was given.
import { expect } from 'chai';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { Metrics } from '../../src/http/metrics.js';
import { OciClient } from '../../src/oci/client.js';
import { Credentials } from '../../src/oci/credentials.js';
import { OciPublisher } from '../../src/oci/oci-publisher.js';
import { parseOciTargets } from '../../src/oci/reference.js';
import { Backoff } from '../../src/util/backoff.js';
import { silentLogger } from '../../src/util/logger.js';
import { metricValue } from '../harness/metrics.js';
import { runPart } from '../harness/parts.js';
import { waitFor } from '../harness/wait.js';

describe('OCI publisher: failures, readiness and its snapshot', () => {
  it('records an unreachable registry, stays unready, and retries', async () => {
    const registry = new BundleRegistry();
    registry.publish({ name: 'policies', bytes: Buffer.from('x'), etag: '"r1"', revision: 'r1' });
    registry.markBuilt();
    const metrics = new Metrics({ processMetrics: false });
    const publisher = new OciPublisher({
      registry,
      // Port 1 on loopback: nothing listens, the connection is refused at once.
      targets: parseOciTargets(['127.0.0.1:1/opa/{bundle}'], 'policies', []),
      clientFor: (host) => new OciClient(host, { credentials: new Credentials({}), plainHttp: true }),
      movingTag: 'latest',
      logger: silentLogger(),
      metrics,
      backoff: new Backoff({ minMs: 5, maxMs: 10, jitter: 0 }),
    });
    expect(publisher.advisory).to.equal(true);
    const running = runPart(publisher);
    try {
      const [state] = await waitFor('two failed attempts', () => {
        const snapshot = publisher.snapshot();
        return (snapshot[0]?.error?.attempts ?? 0) >= 2 ? snapshot : undefined;
      });
      expect(state?.bundle).to.equal('policies');
      expect(state?.repository).to.equal('127.0.0.1:1/opa/policies');
      expect(state?.pushed).to.equal(undefined);
      expect(state?.error?.code).to.equal('oci_unreachable');
      expect(state?.error?.message).to.include('127.0.0.1:1');
      expect(publisher.ready()).to.equal(false);
      expect(
        await metricValue(metrics, 'opa_sync_oci_push_errors_total', { code: 'oci_unreachable' }),
      ).to.be.at.least(2);
      // A copy: changing it changes nothing in the publisher.
      if (state !== undefined) state.bundle = 'changed';
      expect(publisher.snapshot()[0]?.bundle).to.equal('policies');
    } finally {
      await running.stop();
    }
  });
});
