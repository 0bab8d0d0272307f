// Property: whatever the order and timing of changes to the desired state, a real OPA ends up holding
// exactly the model (same module ids and texts, same data), and modules that depend on one another
// all load once their dependency exists, whichever arrived first.
import { expect } from 'chai';
import fc from 'fast-check';
import { DesiredState, type OriginState } from '../../src/model/desired-state.js';
import type { Outcome } from '../../src/model/outcome.js';
import { originKey } from '../../src/model/origin.js';
import { OpaClient } from '../../src/opa/client.js';
import { OpaPusher } from '../../src/opa/pusher.js';
import { silentLogger } from '../../src/util/logger.js';
import { extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import { sortKeys } from '../harness/json.js';

const NAMES = ['p1', 'p2', 'p3'] as const;

type Op =
  | { kind: 'policy'; name: string; keys: string[]; values: number[]; dependent: boolean[] }
  | { kind: 'data'; name: string; keys: string[]; values: number[] }
  | { kind: 'delete'; role: 'policy' | 'data'; name: string }
  | { kind: 'pause'; ms: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('policy' as const),
    name: fc.constantFrom(...NAMES),
    keys: fc.subarray(['a.rego', 'b.rego']),
    values: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 2, maxLength: 2 }),
    dependent: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  }),
  fc.record({
    kind: fc.constant('data' as const),
    name: fc.constantFrom(...NAMES),
    keys: fc.subarray(['c.json', 'd.json']),
    values: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 2, maxLength: 2 }),
  }),
  fc.record({
    kind: fc.constant('delete' as const),
    role: fc.constantFrom('policy' as const, 'data' as const),
    name: fc.constantFrom(...NAMES),
  }),
  fc.record({ kind: fc.constant('pause' as const), ms: fc.integer({ min: 0, max: 30 }) }),
);

describe('OPA pusher against a real OPA (property)', function () {
  this.timeout(300_000);
  let opa: OpaServer;
  let run = 0;

  before(async () => {
    opa = await extraOpa();
  });
  after(async () => {
    await opa?.stop();
  });

  it('OPA equals the model after any sequence of changes, dependencies included', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 12 }), async (ops) => {
        run += 1;
        const ns = `prop-${run}`;
        const pkg = `prop${run}`;
        const state = new DesiredState();
        const outcomes = new Map<string, Outcome>();
        const client = new OpaClient({ url: `${opa.url}/v1`, timeoutMs: 5000, logger: silentLogger() });
        const pusher = new OpaPusher({
          client,
          state,
          logger: silentLogger(),
          onOutcome: (o) => outcomes.set(originKey(o.origin), o),
          resyncIntervalMs: 500,
          retryBackoff: { minMs: 50, maxMs: 200 },
        });
        const controller = new AbortController();
        const running = pusher.run(controller.signal);

        const base = (): OriginState => ({
          origin: { kind: 'configmap', role: 'policy', namespace: ns, name: 'base' },
          modules: [{ id: `${ns}/base/base.rego`, text: `package ${pkg}.base\n\nv := 42\n` }],
          documents: [],
          problems: [],
        });
        try {
          for (const op of ops) {
            if (op.kind === 'pause') {
              await new Promise((resolve) => setTimeout(resolve, op.ms));
            } else if (op.kind === 'delete') {
              state.delete({ kind: 'configmap', role: op.role, namespace: ns, name: op.name });
            } else if (op.kind === 'policy') {
              state.set({
                origin: { kind: 'configmap', role: 'policy', namespace: ns, name: op.name },
                modules: op.keys.map((key, i) => ({
                  id: `${ns}/${op.name}/${key}`,
                  // A dependent module needs the base module, which may arrive before or after it.
                  text: op.dependent[i]
                    ? `package ${pkg}.${op.name}.k${i}\n\nimport data.${pkg}.base\n\nx := base.v + ${op.values[i] ?? 0}\n`
                    : `package ${pkg}.${op.name}.k${i}\n\nx := ${op.values[i] ?? 0}\n`,
                })),
                documents: [],
                problems: [],
              });
            } else {
              state.set({
                origin: { kind: 'configmap', role: 'data', namespace: ns, name: op.name },
                modules: [],
                documents: op.keys.map((key, i) => ({
                  path: [ns, op.name, key],
                  value: { n: op.values[i] ?? 0 },
                })),
                dataRoot: [ns, op.name],
                problems: [],
              });
            }
          }
          // The dependency arrives last (or was never needed).
          state.set(base());

          const wantModules = new Map<string, string>();
          const wantData: Record<string, Record<string, unknown>> = {};
          for (const key of state.keys()) {
            const s = state.get(key);
            for (const m of s?.modules ?? []) wantModules.set(m.id, m.text);
            for (const d of s?.documents ?? []) {
              const [, name, docKey] = d.path;
              (wantData[name as string] ??= {})[docKey as string] = d.value;
            }
          }
          await waitFor(
            'OPA to equal the model',
            async () => {
              const policies = JSON.parse((await opa.request('/v1/policies')).body) as {
                result: { id: string; raw: string }[];
              };
              const got = new Map(
                policies.result.filter((p) => p.id.startsWith(`${ns}/`)).map((p) => [p.id, p.raw]),
              );
              const data = JSON.parse((await opa.request(`/v1/data/${ns}`)).body) as {
                result?: Record<string, Record<string, unknown>>;
              };
              const gotData = Object.fromEntries(
                Object.entries(data.result ?? {}).filter(([, v]) => Object.keys(v).length > 0),
              );
              const equal =
                JSON.stringify([...got].sort()) === JSON.stringify([...wantModules].sort()) &&
                JSON.stringify(sortKeys(gotData)) === JSON.stringify(sortKeys(wantData));
              return equal ? true : undefined;
            },
            { timeoutMs: 15_000, intervalMs: 50 },
          );
          // Every origin still wanted ends ok: dependent modules included.
          await waitFor('every outcome to be ok', () =>
            state.keys().every((k) => {
              const s = state.get(k);
              return s !== undefined && outcomes.get(originKey(s.origin))?.errors.length === 0;
            })
              ? true
              : undefined,
          );
        } finally {
          controller.abort();
          await running;
          client.close();
        }
      }),
      { numRuns: 15 },
    );
    expect(run).to.equal(15);
  });
});
