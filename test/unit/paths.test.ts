// The path helpers of src/util/paths.ts: containment by `path.relative` (never a string prefix) and
// the segment-wise order and prefix test that the folder source and the bundle builder share.
import { expect } from 'chai';
import fc from 'fast-check';
import { comparePaths, isInside, isPathPrefix, relativeInside } from '../../src/util/paths.js';
import { compareUtf8 } from '../../src/util/utf8.js';

describe('paths', () => {
  it('checks containment by path segments, not by string prefix', () => {
    expect(isInside('/x/dir', '/x/dir')).to.equal(true);
    expect(isInside('/x/dir', '/x/dir/a/b')).to.equal(true);
    expect(isInside('/x/dir', '/x/dir/..a')).to.equal(true);
    expect(isInside('/x/dir', '/x/dir2')).to.equal(false);
    expect(isInside('/x/dir', '/x/dir2/a')).to.equal(false);
    expect(isInside('/x/dir', '/x')).to.equal(false);
    expect(isInside('/x/dir', '/x/dir/a/../../dir2')).to.equal(false);
  });

  it('gives the relative path inside a folder, and nothing outside it', () => {
    expect(relativeInside('/x/dir', '/x/dir')).to.equal('');
    expect(relativeInside('/x/dir', '/x/dir/a/b.rego')).to.equal('a/b.rego');
    expect(relativeInside('/x/dir', '/x/dir/..a/b')).to.equal('..a/b');
    expect(relativeInside('/x/dir', '/x/dir2/a')).to.equal(undefined);
    expect(relativeInside('/x/dir', '/x')).to.equal(undefined);
    expect(relativeInside('/x/dir', '/elsewhere')).to.equal(undefined);
  });

  it('orders segment lists by whole segments and UTF-8 bytes, a path right before those below it', () => {
    const sorted = [['ab'], ['a', 'b'], ['b'], ['a'], [], ['\u{1F600}'], ['\uFF61']].sort(comparePaths);
    expect(sorted).to.deep.equal([[], ['a'], ['a', 'b'], ['ab'], ['b'], ['\uFF61'], ['\u{1F600}']]);
    expect(comparePaths(['a', 'b'], ['a', 'b'])).to.equal(0);
    expect(compareUtf8('\uFF61', '\u{1F600}')).to.be.below(0);
    // JavaScript's own order disagrees, which is why there is a helper.
    expect('\uFF61' < '\u{1F600}').to.equal(false);
  });

  it('compares strings as their UTF-8 bytes, lone surrogates included (fast-check)', () => {
    const unit = fc.oneof(
      fc.constantFrom('a', 'b', '\u007f', '\u0080', '\uD7FF', '\uE000', '\uFF61', '\uFFFD', '\uFFFF'),
      fc.constantFrom('\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\u{1F600}', '\u{10000}', '\u{10FFFF}'),
    );
    const text = fc.array(unit, { maxLength: 6 }).map((units) => units.join(''));
    const sign = (n: number): number => Math.sign(n);
    fc.assert(
      fc.property(text, text, (a, b) => {
        expect(sign(compareUtf8(a, b)), JSON.stringify([a, b])).to.equal(
          sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))),
        );
      }),
      { numRuns: 20_000 },
    );
  });

  it('tests prefixes by whole segments', () => {
    expect(isPathPrefix([], ['a'])).to.equal(true);
    expect(isPathPrefix(['a'], ['a'])).to.equal(true);
    expect(isPathPrefix(['a'], ['a', 'b'])).to.equal(true);
    expect(isPathPrefix(['a'], ['ab'])).to.equal(false);
    expect(isPathPrefix(['a', 'b'], ['a'])).to.equal(false);
  });
});
