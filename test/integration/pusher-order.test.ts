// The OPA pusher against a real OPA: data before the policies that may read it. On the first load a
// policy waits until the sources have listed and the replicated collection is in OPA, and a data origin
// goes first; after OPA restarted (killed while the pusher was idle, so no call failed), a changed
// policy does not go into the empty OPA alone: the marker is read on the new connection first, and
// everything is pushed again, the collection and the data before the policies.
import { expect } from 'chai';
import { extraOpa, type OpaServer } from '../harness/index.js';
import { runPart, type RunningPart } from '../harness/parts.js';
import { waitFor } from '../harness/wait.js';
import { DesiredState, type OriginState } from '../../src/model/desired-state.js';
import { OpaClient } from '../../src/opa/client.js';
import { OpaPusher, type OpaApi } from '../../src/opa/pusher.js';
import { silentLogger } from '../../src/util/logger.js';

const COLLECTION = 'networking.k8s.io/v1/networkpolicies';

const policy = (rev: number): OriginState => ({
  origin: { kind: 'configmap', role: 'policy', namespace: 'opa', name: 'guard' },
  modules: [
    {
      id: 'opa/guard/guard.rego',
      text: `package order.guard\n\nrev := ${rev}\n\nhas_data if {\n  count(data.kubernetes.networkpolicies.team) > 0\n  data.opa.facts["f.json"].ok\n}\n`,
    },
  ],
  documents: [],
  problems: [],
});

const facts: OriginState = {
  origin: { kind: 'configmap', role: 'data', namespace: 'opa', name: 'facts' },
  modules: [],
  documents: [{ path: ['opa', 'facts', 'f.json'], value: { ok: true } }],
  problems: [],
};

/** The real client, with each write recorded as `put <what>` in order. */
function recording(client: OpaClient): OpaApi & { writes: string[] } {
  const writes: string[] = [];
  return {
    writes,
    putPolicy: async (id, text, signal, guard) => {
      await client.putPolicy(id, text, signal, guard);
      writes.push(`policy ${id}`);
    },
    putData: async (p, value, signal) => {
      await client.putData(p, value, signal);
      writes.push(`data ${p.join('/')}`);
    },
    deletePolicy: (id, signal) => client.deletePolicy(id, signal),
    listPolicyIds: (signal) => client.listPolicyIds(signal),
    removeData: (p, signal) => client.removeData(p, signal),
    getData: (p, signal) => client.getData(p, signal),
    patchData: (p, ops, signal) => client.patchData(p, ops, signal),
    connectionsOpened: () => client.connectionsOpened(),
  };
}

describe('the OPA pusher puts data before the policies that read it (real OPA)', function () {
  this.timeout(60_000);
  let opa: OpaServer;
  let client: OpaClient;
  let running: RunningPart | undefined;

  before(async () => {
    opa = await extraOpa();
    client = new OpaClient({ url: `${opa.url}/v1`, timeoutMs: 5000, logger: silentLogger() });
  });
  after(async () => {
    await running?.stop();
    client.close();
    await opa.stop();
  });

  it('on the first load, and after OPA restarted while the pusher was idle', async () => {
    const state = new DesiredState();
    const listed = state.registerSource('configmaps');
    state.defineCollection(COLLECTION, ['kubernetes', 'networkpolicies']);
    const api = recording(client);
    const pusher = new OpaPusher({
      client: api,
      state,
      logger: silentLogger(),
      onOutcome: () => undefined,
      // Long: the marker check never runs in this test; only the new connection can reveal the restart.
      resyncIntervalMs: 3_600_000,
    });
    running = runPart(pusher);
    state.set(policy(0));
    state.set(facts);
    state.setEntry(COLLECTION, ['team', 'np'], { metadata: { name: 'np', namespace: 'team' } });
    listed();
    await waitFor('the data origin in OPA', () =>
      api.writes.includes('data opa/facts/f.json') ? true : undefined,
    );
    expect(api.writes, 'no policy while the collection is not listed').not.to.include(
      'policy opa/guard/guard.rego',
    );
    state.markCollectionSynced(COLLECTION);
    await running.waitReady();
    await waitFor('the policy in OPA', () =>
      api.writes.includes('policy opa/guard/guard.rego') ? true : undefined,
    );
    expect(api.writes).to.deep.equal([
      'data opa_sync/marker',
      'data opa/facts/f.json',
      'data kubernetes/networkpolicies',
      'policy opa/guard/guard.rego',
    ]);

    // OPA killed and back, empty; no call failed meanwhile. Then the policy changes.
    await opa.restart();
    api.writes.length = 0;
    state.set(policy(1));
    await waitFor('the changed policy in OPA', () =>
      api.writes.includes('policy opa/guard/guard.rego') ? true : undefined,
    );
    expect(api.writes).to.deep.equal([
      'data opa_sync/marker',
      'data kubernetes/networkpolicies',
      'data opa/facts/f.json',
      'policy opa/guard/guard.rego',
    ]);
    const answer = JSON.parse((await opa.request('/v1/data/order/guard')).body) as {
      result: { rev: number; has_data?: boolean };
    };
    expect(answer.result).to.deep.equal({ rev: 1, has_data: true });
  });
});
