// The incremental Rego checker against the real OPA: after any sequence of module edits (modules that
// call, import, clash with, recurse into and shadow each other; typos; annotation errors; dynamic refs),
// its answer is exactly `checkModules`' from scratch — the same errors per module, the same packages
// (fast-check, v1 and v0) — and an edit of one of many independent modules compiles that module alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import fc from 'fast-check';
import { requireTool } from '../../scripts/tools.js';
import { deriveRoots } from '../../src/bundles/build.js';
import { RegoChecker } from '../../src/bundles/rego-checker.js';
import { checkModules, type CandidateModule, type CheckResult } from '../../src/bundles/validate.js';

/** For each module path, the texts it may hold: each a way to meet (or miss) the others. */
const VARIANTS: Record<string, readonly string[]> = {
  '/lib/lib.rego': [
    'package lib\n\nf(x) := x + 1\n',
    'package lib\n\nf(x) := concat("", [x])\n', // returns a string: app's `+ 1` is a type error
    'package lib\n\ng := 1\n', // f gone: app calls an undefined function
    'package lib\n\nf(x) := {\n', // does not parse
    'package lib\n\nf(x, y) := x + y\n', // another arity
  ],
  '/app/app.rego': [
    'package app\n\nimport data.lib\n\ny := lib.f(1) + 1\n',
    'package app\n\ny := data.lib.f(2)\n',
    'package app\n\ny := 1\n',
  ],
  '/lib/f.rego': ['package lib.f\n\nq := 1\n', 'package lib.other\n\nq := 1\n'], // clashes with rule lib.f
  '/rec/a.rego': ['package rec.a\n\np if data.rec.b.q\n', 'package rec.a\n\np := true\n'],
  '/rec/b.rego': ['package rec.b\n\nq if data.rec.a.p\n', 'package rec.b\n\nq := true\n'],
  '/dup/one.rego': ['package dup\n\nx := 1\n'],
  '/dup/two.rego': ['package dup\n\nx := 2\n', 'package dup\n\nz := 2\n'],
  '/solo/s.rego': [
    'package solo.s\n\nv := 1\n',
    'package solo.s\n\nv := \n',
    'package solo["s-t"]\n\nv := 1\n',
  ],
  '/dyn/d.rego': ['package dyn\n\nz := data[input.k]\n', 'package dyn\n\nz := data.lib\n'],
  '/ann/a.rego': ['# METADATA\n# scope: bogus\npackage ann\n\nx := 1\n', 'package ann\n\nx := 1\n'],
  '/old/o.rego': ['package old\n\nallow { true }\n', 'package old\n\nallow if { true }\n'],
};
const PATHS = Object.keys(VARIANTS);

/** Set a module's text, remove a module, or remove those that failed (as the publisher leaves them out). */
type Edit = { path: string; variant: number } | { path: string; remove: true } | { dropFailed: true };

const edit: fc.Arbitrary<Edit> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .record({ path: fc.constantFrom(...PATHS), variant: fc.nat() })
      .map((e) => ({ path: e.path, variant: e.variant % (VARIANTS[e.path]?.length ?? 1) })),
  },
  {
    weight: 1,
    arbitrary: fc.record({ path: fc.constantFrom(...PATHS), remove: fc.constant(true as const) }),
  },
);

/** A result with its packages as the roots they give, comparable whatever form a package came in. */
function comparable(result: CheckResult): unknown {
  const byPath = ([a]: [string, unknown], [b]: [string, unknown]): number => (a < b ? -1 : a > b ? 1 : 0);
  return {
    errors: [...result.errors].sort(byPath),
    roots: [...result.packages]
      .map(([p, pkg]): [string, string[]] => [p, deriveRoots([pkg], [])])
      .sort(byPath),
  };
}

describe('incremental Rego checker (real opa)', function () {
  this.timeout(300_000);
  const opaBin = requireTool('opa');
  let work: string;

  before(() => {
    work = mkdtempSync(path.join(tmpdir(), 'opa-sync-checker-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  for (const v0 of [false, true]) {
    it(`answers as a from-scratch check after every edit (fast-check, ${v0 ? 'v0' : 'v1'})`, async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(edit, { minLength: 1, maxLength: 12 }), async (edits) => {
          const checker = new RegoChecker({ opaBin, v0 });
          const dir = path.join(work, `run-${(run += 1)}`);
          const state = new Map<string, string>();
          let failed: string[] = [];
          for (const e of edits) {
            if ('dropFailed' in e) for (const p of failed) state.delete(p);
            else if ('remove' in e) state.delete(e.path);
            else state.set(e.path, VARIANTS[e.path]?.[e.variant] ?? '');
            const modules: CandidateModule[] = [...state].map(([p, text]) => ({ path: p, text }));
            const incremental = await checker.check(modules, dir);
            const scratch = await checkModules(opaBin, modules, { v0 });
            expect(comparable(incremental), JSON.stringify([...state.keys()])).to.deep.equal(
              comparable(scratch),
            );
            failed = [...scratch.errors.keys()];
          }
        }),
        { numRuns: v0 ? 5 : 30 },
      );
    });
  }

  it('compiles only the edited module of 300 independent ones, and a typo without compiling', async () => {
    const checker = new RegoChecker({ opaBin });
    const dir = path.join(work, 'many');
    const modules = Array.from({ length: 300 }, (_, i) => ({
      path: `/team${i % 10}/svc${i}/policy.rego`,
      text: `package team${i % 10}.svc${i}\n\nallow if input.user in data.users\n\nv := ${i}\n`,
    }));
    const first = await checker.check(modules, dir);
    expect(first.errors.size).to.equal(0);
    expect(checker.lastCheck).to.include({ checked: 300, whole: true, parsed: 300 });
    expect(first.packages.get('/team3/svc13/policy.rego')).to.deep.equal(['team3', 'svc13']);

    const edited = modules.map((m, i) =>
      i === 13 ? { ...m, text: m.text.replace('v := 13', 'v := 14') } : m,
    );
    const second = await checker.check(edited, dir);
    expect(second.errors.size).to.equal(0);
    expect(checker.lastCheck).to.include({ changed: 1, checked: 1, whole: false, parsed: 1 });

    const typo = edited.map((m, i) => (i === 13 ? { ...m, text: `${m.text}\nbroken := {\n` } : m));
    const third = await checker.check(typo, dir);
    expect([...third.errors.keys()]).to.deep.equal(['/team3/svc13/policy.rego']);
    expect(checker.lastCheck).to.include({ checked: 1, whole: false });
    // Back to the version that compiled: nothing to run.
    const fourth = await checker.check(edited, dir);
    expect(fourth.errors.size).to.equal(0);
    expect(checker.lastCheck).to.include({ changed: 0, checked: 0 });
  });
});
