// Unit tests of the footprints that decide which modules an edit can affect: what is read from OPA's AST
// (packages, data refs through imports, calls, `with`, comprehensions; `data` alone or a dynamic first
// step as unknown), and the closure over related modules, against a plain pairwise closure (fast-check).
import { expect } from 'chai';
import fc from 'fast-check';
import { affectedBy, footprintOf, type Footprint } from '../../src/bundles/rego-footprint.js';
import { isPathPrefix } from '../../src/util/paths.js';

const v = (value: string): unknown => ({ type: 'var', value });
const s = (value: string): unknown => ({ type: 'string', value });
const ref = (...terms: unknown[]): unknown => ({ type: 'ref', value: terms });

function moduleAst(pkg: string[], body: unknown[], imports: unknown[] = []): unknown {
  return {
    package: { path: [v('data'), ...pkg.map(s)] },
    imports,
    rules: [{ head: { name: 'r', ref: [v('r')], value: { type: 'boolean', value: true } }, body }],
  };
}

describe('Rego footprints', () => {
  it('reads the package and the constant prefixes of data refs, wherever they are', () => {
    const ast = moduleAst(
      ['a', 'b-c'],
      [
        { index: 0, terms: [ref(v('eq')), ref(v('data'), s('e'), s('f'), ref(v('input'), s('k')), s('g'))] },
        {
          index: 1,
          terms: [ref(v('y'), s('w')), { type: 'number', value: 1 }],
          with: [{ target: ref(v('data'), s('h'), s('i')), value: { type: 'number', value: 3 } }],
        },
        {
          index: 2,
          terms: {
            type: 'arraycomprehension',
            value: { term: v('k'), body: [{ terms: ref(v('data'), s('ll'), v('$0')) }] },
          },
        },
      ],
      [{ alias: 'y', path: ref(v('data'), s('lib'), s('x')) }, { path: ref(v('input'), s('z')) }],
    );
    expect(footprintOf(ast)).to.deep.equal({
      pkg: ['a', 'b-c'],
      refs: [['lib', 'x'], ['e', 'f'], ['h', 'i'], ['ll']],
    });
  });

  it('gives no footprint for `data` alone, a dynamic first step, or an AST it does not know', () => {
    expect(footprintOf(moduleAst(['a'], [{ terms: ref(v('data')) }]))).to.equal(undefined);
    expect(footprintOf(moduleAst(['a'], [{ terms: ref(v('data'), ref(v('input'), s('n'))) }]))).to.equal(
      undefined,
    );
    expect(footprintOf(moduleAst(['a'], [{ terms: v('data') }]))).to.equal(undefined);
    expect(footprintOf({ rules: [] })).to.equal(undefined);
    expect(footprintOf(null)).to.equal(undefined);
  });

  it('affects the modules related to an edit, transitively, and no others (fast-check)', () => {
    const segment = fc.constantFrom('a', 'b', 'c');
    const dataPath = fc.array(segment, { minLength: 1, maxLength: 3 });
    const footprint: fc.Arbitrary<Footprint> = fc.record({
      pkg: dataPath,
      refs: fc.array(dataPath, { maxLength: 2 }),
    });
    const onPath = (x: readonly string[], y: readonly string[]): boolean =>
      isPathPrefix(x, y) || isPathPrefix(y, x);
    const related = (x: Footprint, y: Footprint): boolean =>
      onPath(x.pkg, y.pkg) || x.refs.some((r) => onPath(r, y.pkg)) || y.refs.some((r) => onPath(r, x.pkg));
    fc.assert(
      fc.property(
        fc.array(footprint, { maxLength: 12 }),
        fc.array(footprint, { maxLength: 3 }),
        (all, seeds) => {
          const modules = new Map(all.map((f, i) => [`m${i}`, f] as const));
          // The plain closure: everything related to a seed, then to what was found, until nothing is new.
          const expected = new Set<string>();
          const frontier = [...seeds];
          for (let next = frontier.pop(); next !== undefined; next = frontier.pop()) {
            const from = next;
            for (const [id, f] of modules) {
              if (!expected.has(id) && related(from, f)) {
                expected.add(id);
                frontier.push(f);
              }
            }
          }
          expect(affectedBy(modules, seeds)).to.deep.equal(expected);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('affects everything when a footprint on the way is unknown', () => {
    const known: Footprint = { pkg: ['a'], refs: [] };
    expect(affectedBy(new Map([['x', known]]), [undefined])).to.equal('all');
    expect(
      affectedBy(
        new Map([
          ['x', known],
          ['y', undefined],
        ]),
        [known],
      ),
    ).to.equal('all');
    expect(affectedBy(new Map([['x', known]]), [])).to.deep.equal(new Set());
  });
});
