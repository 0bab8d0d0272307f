// Pure path helpers, one home for each (DESIGN.md habit 9 and "one home per rule"):
// - containment of a file system path in a folder, always by `path.relative`: a string prefix lets
//   `/x/dir2` (or `/x/dir-evil`) pass as inside `/x/dir`;
// - the order and the prefix test of segment lists (data paths, manifest roots), by whole segments, so
//   that `['a']` is a prefix of `['a', 'b']` but not of `['ab']`, and a path sorts right before the
//   paths below it.
// What a name from outside may be (bundle names, entries, data path segments) is in ./safe-names.ts.
import path from 'node:path';
import { compareUtf8 } from './utf8.js';

/**
 * `target` relative to `root`, '/'-separated whatever the platform; '' when `target` is `root` itself;
 * undefined when `target` is outside `root`. Both are resolved first; symlinks are not followed (pass
 * real paths to judge where a link leads).
 *
 * @example
 * relativeInside('/x/dir', '/x/dir/a/b.rego'); // 'a/b.rego'
 * relativeInside('/x/dir', '/x/dir');          // ''
 * relativeInside('/x/dir', '/x/dir2/a');       // undefined
 */
export function relativeInside(root: string, target: string): string | undefined {
  const rel = path.relative(root, target);
  // An absolute result: another drive on Windows. A name that merely starts with '..' (`..a`) is inside.
  if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return undefined;
  return path.sep === '/' ? rel : rel.split(path.sep).join('/');
}

/**
 * Whether `target` is `root` or below it.
 *
 * @example
 * isInside('/x/dir', '/x/dir/a'); // true
 * isInside('/x/dir', '/x/dir2');  // false
 */
export function isInside(root: string, target: string): boolean {
  return relativeInside(root, target) !== undefined;
}

/**
 * Segment-wise order of two segment lists, each segment by its UTF-8 bytes (Go's order, as OPA sorts):
 * a path sorts right before the paths below it, so after sorting, a path and the paths inside it are
 * neighbours.
 *
 * @example
 * [['a', 'b'], ['ab'], ['a']].sort(comparePaths); // [['a'], ['a', 'b'], ['ab']]
 */
export function comparePaths(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i += 1) {
    const c = compareUtf8(a[i] ?? '', b[i] ?? '');
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

/**
 * Whether `prefix` is `of` or above it, by whole segments (`[]`, the root, is a prefix of everything).
 *
 * @example
 * isPathPrefix(['a'], ['a', 'b']); // true
 * isPathPrefix(['a'], ['ab']);     // false
 */
export function isPathPrefix(prefix: readonly string[], of: readonly string[]): boolean {
  return prefix.length <= of.length && prefix.every((s, i) => of[i] === s);
}
