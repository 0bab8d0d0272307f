// Constant-time comparisons of secrets: the one comparison function (util/secret-compare.ts:
// timingSafeEqual over SHA-256 digests) and the bearer check built on it, with secrets of different
// lengths and secrets that are prefixes of each other; and a scan of src/ that finds every comparison
// involving a token, secret or password by name, so that a new `===` on a secret cannot slip in.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import fc from 'fast-check';
import { bearerMatches } from '../../src/bundles/tokens.js';
import { matchesAnySecret, secretDigest } from '../../src/util/secret-compare.js';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');

describe('security: constant-time comparison of secrets', function () {
  const known = (...secrets: string[]): Buffer[] => secrets.map(secretDigest);

  it('digests have one length whatever the secret, so timingSafeEqual never sees two lengths', function () {
    for (const s of ['', 'a', 'x'.repeat(10_000), 'é☃𝄞']) expect(secretDigest(s)).to.have.lengthOf(32);
  });

  it('accepts exactly the known secrets: not a prefix, an extension, a one-character change or another case', function () {
    const tokens = known('abcdef', 'token-2');
    expect(matchesAnySecret('abcdef', tokens)).to.equal(true);
    expect(matchesAnySecret('token-2', tokens)).to.equal(true);
    for (const wrong of [
      '',
      'a',
      'abcde',
      'abcdefg',
      'abcdeF',
      'ABCDEF',
      'bcdef',
      'token-',
      'token-22',
      ' abcdef',
    ]) {
      expect(matchesAnySecret(wrong, tokens), JSON.stringify(wrong)).to.equal(false);
    }
    expect(matchesAnySecret('abcdef', [])).to.equal(false);
  });

  it('finds a match whatever its place among the known secrets (every one is compared)', function () {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1 }), { minLength: 1, maxLength: 6 }),
        fc.nat(),
        (secrets, i) => {
          const digests = known(...secrets);
          const chosen = secrets[i % secrets.length]!;
          expect(matchesAnySecret(chosen, digests)).to.equal(true);
          expect(matchesAnySecret(`${chosen}x`, digests)).to.equal(secrets.includes(`${chosen}x`));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('the bearer check: prefixes and extensions of a token, and tokens that are prefixes of each other', function () {
    const tokens = known('tok', 'token');
    expect(bearerMatches('Bearer tok', tokens)).to.equal(true);
    expect(bearerMatches('Bearer token', tokens)).to.equal(true);
    expect(bearerMatches('bearer  token ', tokens)).to.equal(true);
    for (const header of [
      'Bearer to',
      'Bearer toke',
      'Bearer tokenx',
      'Bearer tok en',
      'Basic tok',
      'Bearer',
      'tok',
    ]) {
      expect(bearerMatches(header, tokens), header).to.equal(false);
    }
  });

  // -------------------------------------------------------------------------------------------------
  // Where secrets are compared

  /** Every .ts file of src/. */
  function sources(dir = src): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory()
        ? sources(path.join(dir, e.name))
        : e.name.endsWith('.ts')
          ? [path.join(dir, e.name)]
          : [],
    );
  }

  const SECRET_NAME = /token|secret|password|passwd|credential|bearer/i;
  // A side that is a literal, or a property that is never secret itself (its length, kind, type, code).
  const HARMLESS =
    /^(?:undefined|null|true|false|-?\d[\w.]*|'[^']*'|"[^"]*"|`[^`$]*`)$|\.(?:length|kind|type|code|size|status)$/;
  const OPERAND = String.raw`[\w$.\[\]'"\`-]+`;
  const COMPARISON = new RegExp(`(${OPERAND})\\s*(===|!==|==|!=)\\s*(${OPERAND})`, 'g');
  const STRING_COMPARE =
    /([\w$.]+)\.(startsWith|endsWith|includes|indexOf|localeCompare|equals)\(([^)]*)\)|Buffer\.compare\(/g;

  /** `file:line: text` for every comparison in src/ of a value named like a secret with a non-literal. */
  function comparisonSites(): string[] {
    const sites: string[] = [];
    for (const file of sources()) {
      const lines = readFileSync(file, 'utf8').split('\n');
      lines.forEach((raw, i) => {
        const line = raw.replace(/\/\/.*$/, '').trim();
        if (line.startsWith('*') || line.startsWith('/*')) return;
        const where = `${path.relative(src, file)}:${i + 1}: ${line}`;
        for (const m of line.matchAll(COMPARISON)) {
          const [a, b] = [m[1]!, m[3]!];
          if (HARMLESS.test(a) || HARMLESS.test(b)) continue;
          if (SECRET_NAME.test(a) || SECRET_NAME.test(b)) sites.push(where);
        }
        for (const m of line.matchAll(STRING_COMPARE)) {
          if (
            m[0].startsWith('Buffer.compare') ||
            SECRET_NAME.test(m[1] ?? '') ||
            SECRET_NAME.test(m[3] ?? '')
          ) {
            if (!HARMLESS.test((m[3] ?? '').trim())) sites.push(where);
          }
        }
      });
    }
    return [...new Set(sites)];
  }

  // Each comparison of a secret-named value with another value that is not a literal, and why it is not
  // a comparison of something presented by a client with a secret of opa-sync's.
  const REVIEWED: Record<string, string> = {
    'opa/client.ts: if (fresh !== token) {':
      "two reads of opa-sync's own token file (after OPA's 401): nothing a client sent is compared",
    "util/utf8.ts: return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));":
      "Go's string order of names and paths (bundle roots, entries): no secret",
  };

  it('src/ compares a presented secret only through matchesAnySecret; every other comparison site is reviewed', function () {
    const found = comparisonSites().map((site) => site.replace(/:\d+: /, ': '));
    expect(
      found.filter((site) => !(site in REVIEWED)),
      'unreviewed comparisons of secrets',
    ).to.deep.equal([]);
    expect(
      Object.keys(REVIEWED).filter((site) => !found.includes(site)),
      'reviewed sites that are gone',
    ).to.deep.equal([]);
    // timingSafeEqual lives in one module, and the bearer check goes through it.
    const users = sources().filter((f) => /import[^;]*\btimingSafeEqual\b/.test(readFileSync(f, 'utf8')));
    expect(users.map((f) => path.relative(src, f))).to.deep.equal([path.join('util', 'secret-compare.ts')]);
    expect(readFileSync(path.join(src, 'bundles/tokens.ts'), 'utf8')).to.include('matchesAnySecret(');
  });

  it('the scan finds a comparison of a secret with a presented value (the scan itself can fail)', function () {
    const line = 'if (presented === token) return true;';
    expect([...line.matchAll(COMPARISON)].map((m) => [m[1], m[3]])).to.deep.equal([['presented', 'token']]);
    expect(HARMLESS.test("''")).to.equal(true);
    expect(HARMLESS.test('token')).to.equal(false);
    expect(HARMLESS.test('tokens.length')).to.equal(true);
  });
});
