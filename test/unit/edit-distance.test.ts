// The edit distance behind "did you mean …?": what a person counts as one slip counts 1.
import { expect } from 'chai';
import fc from 'fast-check';
import { editDistance, nearest } from '../../src/util/edit-distance.js';

describe('edit distance', () => {
  it('counts an insertion, a deletion, a substitution and a swap of neighbours as one edit each', () => {
    expect(editDistance('opa-url', 'opa-url')).to.equal(0);
    expect(editDistance('opa-ulr', 'opa-url')).to.equal(1);
    expect(editDistance('bundle-adr', 'bundle-addr')).to.equal(1);
    expect(editDistance('bundle-adddr', 'bundle-addr')).to.equal(1);
    expect(editDistance('opa-uri', 'opa-url')).to.equal(1);
    expect(editDistance('', 'abc')).to.equal(3);
    expect(editDistance('kitten', 'sitting')).to.equal(3);
  });

  it('is symmetric, zero only for equal words, and at most the longer length', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (a, b) => {
        const d = editDistance(a, b);
        expect(editDistance(b, a)).to.equal(d);
        expect(d === 0).to.equal(a === b);
        expect(d).to.be.at.most(Math.max(a.length, b.length));
      }),
    );
  });

  it('suggests only what is near enough to be a slip, all ties in order', () => {
    expect(nearest('opa-ulr', ['opa-timeout', 'opa-url'])).to.deep.equal(['opa-url']);
    expect(nearest('foo', ['opa-url', 'help'])).to.deep.equal([]);
    expect(nearest('keyi', ['key', 'keyid', 'alg'])).to.deep.equal(['key', 'keyid']);
    // Long words may be further off: a quarter of their length.
    expect(nearest('replicate-clustre-by-nam', ['replicate-cluster-by-name'])).to.deep.equal([
      'replicate-cluster-by-name',
    ]);
  });
});
