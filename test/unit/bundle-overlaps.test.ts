// Unit tests of the roots-overlap rule across bundles: the trie gives the answer of comparing every pair
// of roots in order (fast-check, with '' and leading/trailing '/' roots), and a thousand origins take
// milliseconds, not the quarter of a second the pairwise comparison took.
import { expect } from 'chai';
import fc from 'fast-check';
import { rootsOverlap } from '../../src/bundles/build.js';
import { overlapRefusals, type RootOwner } from '../../src/bundles/overlaps.js';

/** The rule as the publisher used to apply it: each owner against every accepted one before it. */
function pairwise(owners: readonly RootOwner[]): Map<number, number> {
  const accepted: number[] = [];
  const refused = new Map<number, number>();
  owners.forEach((owner, index) => {
    const clash = accepted.find(
      (a) => owners[a]?.bundle !== owner.bundle && rootsOverlap(owners[a]?.roots ?? [], owner.roots),
    );
    if (clash === undefined) accepted.push(index);
    else refused.set(index, clash);
  });
  return refused;
}

describe('roots overlap across bundles', () => {
  it('refuses exactly the owners the pairwise rule refuses, naming the same clash (fast-check)', () => {
    const root = fc.oneof(
      {
        weight: 8,
        arbitrary: fc
          .array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 })
          .map((s) => s.join('/')),
      },
      { weight: 1, arbitrary: fc.constantFrom('', '/', '/a/', 'a/b/') },
    );
    const owner = fc.record({
      bundle: fc.constantFrom('x', 'y', 'z'),
      roots: fc.array(root, { maxLength: 3 }),
    });
    fc.assert(
      fc.property(fc.array(owner, { maxLength: 14 }), (owners) => {
        expect(overlapRefusals(owners)).to.deep.equal(pairwise(owners));
      }),
      { numRuns: 2000 },
    );
  });

  it('judges a thousand owners in a few milliseconds', () => {
    const owners = Array.from({ length: 1001 }, (_, i) => ({
      bundle: i % 2 === 0 ? 'even' : 'odd',
      roots: [`team${i % 20}/svc${i}`],
    }));
    owners.push({ bundle: 'late', roots: ['team3'] });
    const started = performance.now();
    const refused = overlapRefusals(owners);
    expect(performance.now() - started).to.be.below(100);
    expect([...refused]).to.deep.equal([[1001, 3]]);
  });
});
