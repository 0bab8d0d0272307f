// Bundle roots: the minimal roots of a bundle's packages and data paths (`deriveRoots`), and when two
// lists of roots overlap (`rootsOverlap`: equal, above or below by whole segments, as OPA judges it).
// The manifest check is in build.ts; the rule across bundles in overlaps.ts.
import { InvalidInputError } from '../util/errors.js';
import { isPathPrefix as isPrefix } from '../util/paths.js';
import { compareUtf8 } from '../util/utf8.js';

/** Root string → segments; '' (and '/') is the whole data tree, `[]`. OPA trims leading/trailing '/'. */
export function rootSegments(root: string): string[] {
  const trimmed = root.replace(/^\/+|\/+$/g, '');
  return trimmed === '' ? [] : trimmed.split('/');
}

/** The values, each once, sorted by UTF-8 bytes. */
export function sortedUnique(values: Iterable<string>): string[] {
  return [...new Set(values)].sort(compareUtf8);
}

const REF_IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
const REF_STRING = /\[\s*("(?:[^"\\]|\\.)*"|`[^`]*`)\s*\]/y;

/**
 * A package path's segments: `kubernetes/admission` (slash form), `kubernetes.admission` (dotted) or a
 * Rego ref with string brackets as `opa inspect` prints it (`a["b-c"].d`).
 */
export function packageSegments(pkg: string): string[] {
  const fail = (why: string): never => {
    throw new InvalidInputError('invalid_package', `package path ${JSON.stringify(pkg)} is refused: ${why}`);
  };
  if (!pkg.includes('[')) {
    const segments = pkg.includes('/') ? rootSegments(pkg) : pkg.split('.');
    if (segments.length === 0 || segments.includes('')) fail('it has an empty segment');
    return segments;
  }
  const segments: string[] = [];
  let pos = 0;
  const ident = (): void => {
    REF_IDENT.lastIndex = pos;
    const m = REF_IDENT.exec(pkg);
    if (m === null) return fail(`expected a name at offset ${pos}`);
    segments.push(m[0]);
    pos += m[0].length;
  };
  ident();
  while (pos < pkg.length) {
    if (pkg[pos] === '.') {
      pos += 1;
      ident();
      continue;
    }
    REF_STRING.lastIndex = pos;
    const m = REF_STRING.exec(pkg);
    const literal = m?.[1];
    if (m === null || literal === undefined) return fail(`expected "." or a ["string"] at offset ${pos}`);
    segments.push(literal.startsWith('`') ? literal.slice(1, -1) : (JSON.parse(literal) as string));
    pos += m[0].length;
  }
  return segments;
}

/**
 * Minimal non-overlapping roots for the given package paths (`kubernetes.admission`,
 * `kubernetes/admission`, `a["b-c"].d`, or segments as OPA's parser gives them) and data paths
 * (segments): a root below another is dropped (`['a/b', 'a']` → `['a']`), duplicates too; sorted. An
 * empty data path gives the root '' (everything).
 * A segment that itself holds '/' cannot be written in a root, so the root stops above it (still covering it).
 */
export function deriveRoots(
  packages: readonly (string | readonly string[])[],
  dataPaths: readonly (readonly string[])[],
): string[] {
  for (const p of dataPaths) {
    if (p.includes('')) {
      throw new InvalidInputError('invalid_data_path', `data path ${JSON.stringify(p)} has an empty segment`);
    }
  }
  const packagePaths = packages.map((p) => (typeof p === 'string' ? packageSegments(p) : p));
  const candidates = [...packagePaths, ...dataPaths].map((segments) => {
    const cut = segments.findIndex((s) => s.includes('/') || s === '');
    return cut === -1 ? [...segments] : segments.slice(0, cut);
  });
  const all = new Set(candidates.map((s) => s.join('/')));
  const kept = [...all].filter((root) => {
    const segments = rootSegments(root);
    // Dropped when any proper prefix (including '', the whole tree) is a root too.
    for (let n = 0; n < segments.length; n += 1) if (all.has(segments.slice(0, n).join('/'))) return false;
    return true;
  });
  return sortedUnique(kept);
}

/** Whether two root lists overlap: a root equal to, above or below another by whole segments ('' overlaps all). */
export function rootsOverlap(a: readonly string[], b: readonly string[]): boolean {
  const bs = b.map(rootSegments);
  return a.map(rootSegments).some((x) => bs.some((y) => isPrefix(x, y) || isPrefix(y, x)));
}
