// How far apart two words are, for "did you mean …?" hints (unknown flags). The optimal string
// alignment distance: insertions, deletions, substitutions and swaps of two neighbouring letters each
// count 1, so the typing slip `ulr` is one step from `url`, as a person sees it.

/**
 * The optimal string alignment distance between `a` and `b` (Levenshtein plus adjacent swaps).
 *
 * @example
 * editDistance('opa-ulr', 'opa-url'); // 1 (two letters swapped)
 * editDistance('bundle-adr', 'bundle-addr'); // 1 (one letter missing)
 */
export function editDistance(a: string, b: string): number {
  // Rows i-2, i-1 and i of the (a.length+1) x (b.length+1) table.
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, (before[j - 2] ?? 0) + 1);
      }
      current.push(best);
    }
    before = previous;
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/**
 * The candidates nearest to `word`, if they are near enough to be a slip rather than another word:
 * at most 2 edits, or a quarter of the word's length for long words. Ties are all returned, in the
 * candidates' order.
 *
 * @example
 * nearest('opa-ulr', ['opa-url', 'opa-timeout']); // ['opa-url']
 * nearest('foo', ['opa-url']); // []
 */
export function nearest<T extends string>(word: string, candidates: Iterable<T>): T[] {
  const limit = Math.max(2, Math.floor(word.length / 4));
  let best = limit + 1;
  let found: T[] = [];
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate);
    if (distance < best) {
      best = distance;
      found = [candidate];
    } else if (distance === best) {
      found.push(candidate);
    }
  }
  return found;
}
