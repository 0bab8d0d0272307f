// The "skip if unchanged" memo of src/util/unchanged.ts.
import { expect } from 'chai';
import { LastValues } from '../../src/util/unchanged.js';

describe('LastValues (skip if unchanged)', () => {
  it('says a value changed the first time, not when it is the same again, and when it differs', () => {
    const memo = new LastValues<string, string>();
    expect(memo.changed('a', 'x')).to.equal(true);
    expect(memo.changed('a', 'x')).to.equal(false);
    expect(memo.changed('a', 'y')).to.equal(true);
    expect(memo.changed('a', 'x')).to.equal(true);
    // Keys are independent.
    expect(memo.changed('b', 'x')).to.equal(true);
    expect(memo.changed('a', 'x')).to.equal(false);
  });

  it('counts undefined as a value, not as "nothing seen"', () => {
    const memo = new LastValues<string, string | undefined>();
    expect(memo.changed('a', undefined)).to.equal(true);
    expect(memo.changed('a', undefined)).to.equal(false);
  });

  it('after forget (one key) or clear (all), the next value is a change', () => {
    const memo = new LastValues<string, number>();
    memo.changed('a', 1);
    memo.changed('b', 2);
    expect(memo.forget('a')).to.equal(true);
    expect(memo.forget('a')).to.equal(false);
    expect(memo.changed('a', 1)).to.equal(true);
    expect(memo.changed('b', 2)).to.equal(false);
    memo.clear();
    expect(memo.changed('a', 1)).to.equal(true);
    expect(memo.changed('b', 2)).to.equal(true);
  });

  it('compares objects by identity unless told how', () => {
    const byIdentity = new LastValues<string, { n: number }>();
    expect(byIdentity.changed('a', { n: 1 })).to.equal(true);
    expect(byIdentity.changed('a', { n: 1 })).to.equal(true);
    const byContent = new LastValues<string, { n: number }>((x, y) => x.n === y.n);
    expect(byContent.changed('a', { n: 1 })).to.equal(true);
    expect(byContent.changed('a', { n: 1 })).to.equal(false);
    expect(byContent.changed('a', { n: 2 })).to.equal(true);
  });

  it('treats NaN as equal to itself (Object.is), so a NaN fingerprint does not rewrite forever', () => {
    const memo = new LastValues<string, number>();
    memo.changed('a', Number.NaN);
    expect(memo.changed('a', Number.NaN)).to.equal(false);
  });
});
