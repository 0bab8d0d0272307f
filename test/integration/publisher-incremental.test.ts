// The publisher's incremental rebuilds end to end (real opa compiler): random sequences of policy and
// data edits go into the desired state of a running BundlePublisher, and after each one the bundle it
// serves is byte for byte `buildBundle` from scratch of the same state (every module, with the roots of
// the packages `checkModules` reads from scratch, and every document) — fast-check. Also: with
// regoVersion 0 the modules are compiled as v0 (a v1-only edit is refused with OPA's parse error, its
// last good version kept), and the work folder is gone once run() ends.
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import fc from 'fast-check';
import { requireTool } from '../../scripts/tools.js';
import { buildBundle, deriveRoots } from '../../src/bundles/build.js';
import { BundlePublisher } from '../../src/bundles/publisher.js';
import { BundleRegistry } from '../../src/bundles/registry.js';
import { checkModules } from '../../src/bundles/validate.js';
import { DesiredState, type OriginState } from '../../src/model/desired-state.js';
import { silentLogger } from '../../src/util/logger.js';
import { runPart } from '../harness/parts.js';
import { waitFor } from '../harness/wait.js';

/** Policies that compile together in any combination: packages apart, above and below each other. */
const POLICIES: Record<string, readonly string[]> = {
  'teams/a.rego': ['package teams.a\n\nallow := true\n', 'package teams.a\n\nallow := false\n'],
  'teams/a-sub.rego': ['package teams.a.sub\n\nx := 1\n', 'package teams.a.sub\n\nx := data.teams.a.allow\n'],
  'teams/b.rego': [
    'package teams.b\n\nimport data.teams.a\n\ny := a.allow\n',
    'package other["b-c"]\n\ny := 2\n',
  ],
  'lib/lib.rego': ['package lib\n\nf(x) := x + 1\n', 'package lib\n\nf(x) := x * 2\n'],
  'app/app.rego': ['package app\n\nz := data.lib\n', 'package app\n\nz := 3\n'],
};
const DATA: Record<string, readonly unknown[]> = {
  'cfg/data.json': [{ limit: 3 }, { limit: 4, names: ['é', '\u{1F600}'] }],
  'big/data.json': [{ s: 'x'.repeat(200_000) }, { s: 'y'.repeat(70_000), n: [1, 2, 3] }],
};

type Edit =
  | { kind: 'policy'; file: string; variant: number }
  | { kind: 'data'; file: string; variant: number }
  | { kind: 'remove'; file: string };

const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc
    .record({ file: fc.constantFrom(...Object.keys(POLICIES)), variant: fc.nat() })
    .map((e): Edit => ({ kind: 'policy', ...e })),
  fc
    .record({ file: fc.constantFrom(...Object.keys(DATA)), variant: fc.nat() })
    .map((e): Edit => ({ kind: 'data', ...e })),
  fc
    .constantFrom(...Object.keys(POLICIES), ...Object.keys(DATA))
    .map((file): Edit => ({ kind: 'remove', file })),
);

function originOf(file: string): OriginState['origin'] {
  return { kind: 'file', role: file.endsWith('.rego') ? 'policy' : 'data', path: file };
}

describe('incremental publisher (real opa)', function () {
  this.timeout(300_000);
  const opaBin = requireTool('opa');

  it('serves, after every edit, the bytes of a from-scratch build of the same state (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(edit, { minLength: 1, maxLength: 7 }), async (edits) => {
        const state = new DesiredState();
        state.registerSource('test')();
        const registry = new BundleRegistry();
        const part = runPart(
          new BundlePublisher({
            state,
            registry,
            logger: silentLogger(),
            opaBin,
            defaultBundle: 'main',
            onOutcome: () => undefined,
          }),
        );
        try {
          for (const e of edits) {
            if (e.kind === 'remove') state.delete(originOf(e.file));
            else if (e.kind === 'policy') {
              const texts = POLICIES[e.file] ?? [];
              const text = texts[e.variant % texts.length] ?? '';
              state.set({
                origin: originOf(e.file),
                modules: [{ id: e.file, text }],
                documents: [],
                problems: [],
              });
            } else {
              const values = DATA[e.file] ?? [];
              const docPath = e.file.split('/').slice(0, -1);
              state.set({
                origin: originOf(e.file),
                modules: [],
                documents: [{ path: docPath, value: values[e.variant % values.length] }],
                problems: [],
                dataRoot: docPath,
              });
            }
            // From scratch: every module and document of the state, the roots of their packages.
            const origins = state
              .keys()
              .map((k) => state.get(k))
              .filter((s): s is OriginState => s !== undefined);
            const modules = origins.flatMap((o) =>
              o.modules.map((m) => ({ path: `/${m.id}`, text: m.text })),
            );
            const documents = origins.flatMap((o) => o.documents);
            const checked = await checkModules(opaBin, modules);
            expect(checked.errors.size, 'the policies compile together').to.equal(0);
            const expected = await buildBundle({
              modules,
              documents,
              roots: deriveRoots(
                [...checked.packages.values()],
                documents.map((d) => d.path),
              ),
            });
            await waitFor('the publisher to serve the from-scratch bundle', () =>
              registry.get('main')?.etag === expected.etag ? true : undefined,
            );
            expect(registry.get('main')?.bytes.equals(expected.bytes)).to.equal(true);
          }
        } finally {
          await part.stop();
        }
      }),
      { numRuns: 12 },
    );
  });

  it('compiles as v0 with --bundle-rego-version=0: v0 Rego goes in, v1-only Rego is refused with the error of OPA', async () => {
    const state = new DesiredState();
    state.registerSource('test')();
    const registry = new BundleRegistry();
    const outcomes = new Map<string, string>();
    const part = runPart(
      new BundlePublisher({
        state,
        registry,
        logger: silentLogger(),
        opaBin,
        defaultBundle: 'main',
        regoVersion: 0,
        onOutcome: (o) =>
          outcomes.set(o.origin.kind === 'file' ? o.origin.path : '', JSON.stringify(o.errors)),
      }),
    );
    const policy = (file: string, text: string): void =>
      state.set({ origin: originOf(file), modules: [{ id: file, text }], documents: [], problems: [] });
    try {
      policy('old/a.rego', 'package old.a\n\nallow { input.x == 1 }\n');
      policy('old/b.rego', 'package old.b\n\ndeny[msg] { msg := "v0" }\n');
      await waitFor('both v0 policies in', () => (outcomes.get('old/b.rego') === '[]' ? true : undefined));
      expect(outcomes.get('old/a.rego')).to.equal('[]');
      policy('old/b.rego', 'package old.b\n\ndeny contains msg if { msg := "v1 only" }\n');
      const refused = await waitFor('the v1-only edit refused', () => {
        const errors = outcomes.get('old/b.rego');
        return errors !== undefined && errors !== '[]' ? errors : undefined;
      });
      expect(refused).to.include('rego_parse_error');
      expect(refused).to.include('"file":"old/b.rego"');
      // Its last good version stays in the bundle, which says rego_version 0.
      const bundle = registry.get('main');
      expect(bundle).to.not.equal(undefined);
      const tar = gunzipSync(bundle?.bytes ?? Buffer.alloc(0)).toString('latin1');
      expect(tar).to.include('deny[msg] { msg := "v0" }');
      expect(tar).to.include('"rego_version":0');
    } finally {
      await part.stop();
    }
  });

  it('leaves no work folder behind once run() ends', async () => {
    const before = new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('opa-sync-bundles-')));
    const state = new DesiredState();
    state.registerSource('test')();
    const registry = new BundleRegistry();
    const part = runPart(
      new BundlePublisher({
        state,
        registry,
        logger: silentLogger(),
        opaBin,
        defaultBundle: 'main',
        onOutcome: () => undefined,
      }),
    );
    state.set({
      origin: originOf('teams/a.rego'),
      modules: [{ id: 'teams/a.rego', text: POLICIES['teams/a.rego']?.[0] ?? '' }],
      documents: [],
      problems: [],
    });
    await waitFor('a bundle', () => (registry.get('main') !== undefined ? true : undefined));
    const made = readdirSync(tmpdir()).filter((n) => n.startsWith('opa-sync-bundles-') && !before.has(n));
    expect(made).to.have.length(1);
    await part.stop();
    expect(existsSync(path.join(tmpdir(), made[0] ?? 'none'))).to.equal(false);
  });
});
