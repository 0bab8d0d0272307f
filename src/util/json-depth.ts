// How deep opa-sync lets JSON data nest, and a check of it that does not recurse. `JSON.parse` accepts
// any depth, but `JSON.stringify`, `structuredClone` and every recursive walk overflow Node's stack a
// few thousand levels down (OPA's own decoder stops at 10,000): data nested deeper than this is refused
// where it enters (a source), with a problem on its origin, so that nothing downstream recurses on it.

/** The deepest a value may sit below the top of a document (the top is level 0). */
export const MAX_JSON_DEPTH = 1000;

/**
 * Whether some value in `value` sits deeper than `limit` levels below it, found without recursion.
 *
 * @example
 * nestedDeeperThan({ a: { b: 1 } }, 1); // true: `1` is at level 2
 * nestedDeeperThan(JSON.parse(text), MAX_JSON_DEPTH);
 */
export function nestedDeeperThan(value: unknown, limit: number = MAX_JSON_DEPTH): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [v, depth] = next;
    if (depth > limit) return true;
    if (v === null || typeof v !== 'object') continue;
    for (const member of Array.isArray(v) ? v : Object.values(v)) stack.push([member, depth + 1]);
  }
  return false;
}
