// The nesting check of util/json-depth.ts: the level of the deepest value, without recursion (so far
// deeper than the stack would allow).
import { expect } from 'chai';
import { MAX_JSON_DEPTH, nestedDeeperThan } from '../../src/util/json-depth.js';

const nested = (depth: number): unknown => JSON.parse(`${'['.repeat(depth)}1${']'.repeat(depth)}`);

describe('nestedDeeperThan', () => {
  it('counts the top as level 0 and each object or array below it as one more', () => {
    expect(nestedDeeperThan(1, 0)).to.equal(false);
    expect(nestedDeeperThan({}, 0)).to.equal(false);
    expect(nestedDeeperThan({ a: 1 }, 0)).to.equal(true);
    expect(nestedDeeperThan({ a: 1 }, 1)).to.equal(false);
    expect(nestedDeeperThan({ a: [{}] }, 1)).to.equal(true);
    expect(nestedDeeperThan({ a: [{}] }, 2)).to.equal(false);
  });

  it('has the limit of the bundle builder by default, and never overflows the stack', () => {
    expect(MAX_JSON_DEPTH).to.equal(1000);
    expect(nestedDeeperThan(nested(MAX_JSON_DEPTH))).to.equal(false);
    expect(nestedDeeperThan(nested(MAX_JSON_DEPTH + 1))).to.equal(true);
    expect(nestedDeeperThan(nested(200_000))).to.equal(true);
  });
});
