// The bundle-name rule and the URL-name rule of src/util/safe-names.ts, the one home that
// --bundle-name, the bundle label, the registry and the HTTP server all call. (The entry and data
// path rules are tested with the bundle builder, in bundle-build.test.ts.)
import { expect } from 'chai';
import { HOSTILE_BUNDLE_NAMES, HOSTILE_PATH_NAMES } from './hostile-names.js';
import fc from 'fast-check';
import {
  BUNDLE_NAME_MAX_LENGTH,
  bundleNameErrors,
  bundleNameProblem,
  pathNameProblem,
  requestedBundleNameProblem,
} from '../../src/util/safe-names.js';

const ALPHANUMERIC = [...'abcdefghijklmnopqrstuvwxyz0123456789'];
const INNER = [...ALPHANUMERIC, '-', '_', '.'];

/** Names the rule accepts: segments of the alphabet, without '..', of any length up to the maximums. */
const bundleName = fc
  .array(
    fc
      .tuple(
        fc.constantFrom(...ALPHANUMERIC),
        fc.array(fc.constantFrom(...INNER), { maxLength: 61 }),
        fc.constantFrom(...ALPHANUMERIC),
      )
      .map(([first, inner, last]) => `${first}${inner.join('')}${last}`)
      .filter((s) => !s.includes('..')),
    { minLength: 1, maxLength: 5 },
  )
  .map((segments) => segments.join('/'))
  .filter((name) => name.length <= BUNDLE_NAME_MAX_LENGTH);

describe('safe names: bundle names', () => {
  it('lists every part of the rule a name breaks, in the wording --bundle-name reports', () => {
    const SEGMENT_RULE =
      "each '/'-separated segment must consist of lower case alphanumeric characters, '-', '_' or '.', " +
      "and must start and end with an alphanumeric character (e.g. 'policies' or 'team-a/authz')";
    expect(bundleNameErrors('team-a/authz_v1.2')).to.deep.equal([]);
    expect(bundleNameErrors('a..b')).to.deep.equal(["must not contain '..'"]);
    expect(bundleNameErrors('a/../b')).to.deep.equal(["must not contain '..'", SEGMENT_RULE]);
    expect(bundleNameErrors(`${'a/'.repeat(127)}a`)).to.deep.equal(['must be no more than 253 characters']);
    expect(bundleNameErrors('a'.repeat(63))).to.deep.equal([]);
    expect(bundleNameErrors('a'.repeat(64))).to.deep.equal([
      "each '/'-separated segment must be no more than 63 characters",
    ]);
    for (const name of ['', '/a', 'a/', 'a//b', 'A', 'a b', 'a\\b', 'a\0b', 'ä', '-a', 'a.']) {
      expect(bundleNameErrors(name), JSON.stringify(name)).to.deep.equal([SEGMENT_RULE]);
    }
  });

  it('names the refused name in the problem', () => {
    expect(bundleNameProblem('policies')).to.equal(undefined);
    expect(bundleNameProblem('a/../b')).to.equal(
      `bundle name "a/../b" is refused: must not contain '..'; ${bundleNameErrors('a/../b')[1] ?? ''}`,
    );
    expect(bundleNameProblem('a\u0007')).to.include('"a\\u0007"');
  });

  it('property: every name that can be published can be asked for, as it is and as <name>.tar.gz', () => {
    fc.assert(
      fc.property(bundleName, (name) => {
        expect(bundleNameProblem(name)).to.equal(undefined);
        expect(requestedBundleNameProblem(name)).to.equal(undefined);
        expect(requestedBundleNameProblem(`${name}.tar.gz`)).to.equal(undefined);
      }),
    );
    const longest = `${'a'.repeat(62)}/${'b'.repeat(62)}/${'c'.repeat(63)}/${'d'.repeat(63)}`;
    expect(longest).to.have.length(BUNDLE_NAME_MAX_LENGTH);
    expect(requestedBundleNameProblem(`${longest}.tar.gz`)).to.equal(undefined);
  });

  it('refuses in requests what it refuses to publish', () => {
    for (const name of HOSTILE_BUNDLE_NAMES) {
      expect(requestedBundleNameProblem(name), JSON.stringify(name)).to.equal(bundleNameProblem(name));
      expect(requestedBundleNameProblem(`${name}.tar.gz`), JSON.stringify(name)).to.be.a('string');
    }
    expect(requestedBundleNameProblem('.tar.gz')).to.be.a('string');
  });
});

describe('safe names: other names from a URL path', () => {
  it('accepts free-text names with "/" between segments', () => {
    for (const name of ['edge/eu', 'EU-West', 'a b', 'a.b', '..a', 'ä']) {
      expect(pathNameProblem(name, 'partition name'), name).to.equal(undefined);
    }
  });

  it('refuses empty, "." and ".." segments, control characters, backslashes and very long names', () => {
    for (const name of [...HOSTILE_PATH_NAMES, 'a\u007fb', 'a\u0085b']) {
      const problem = pathNameProblem(name, 'partition name');
      expect(problem, JSON.stringify(name)).to.be.a('string');
      expect(problem).to.include(`partition name ${JSON.stringify(name)} is refused`);
    }
    expect(pathNameProblem('a'.repeat(512), 'partition name')).to.equal(undefined);
    expect(pathNameProblem('a'.repeat(513), 'partition name')).to.include('longer than 512');
  });
});
