// Go's string order, the one home for it: OPA sorts names, keys and paths by their UTF-8 bytes, and
// every artifact that must match what OPA (or another replica) computes sorts the same way.

/** Whether a UTF-16 code unit is half of a surrogate pair (or a lone half). */
function isSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdfff;
}

/**
 * Compares two strings by their UTF-8 bytes, as Go compares strings. JavaScript's default sort compares
 * UTF-16 code units, which orders characters above U+FFFF before U+E000–U+FFFF; Go does the opposite.
 * (A lone surrogate counts as U+FFFD, as Node encodes it.)
 *
 * @example
 * ['\uFF61', '\u{1F600}'].sort(compareUtf8); // ['\uFF61', '\u{1F600}'] (the default sort swaps them)
 */
export function compareUtf8(a: string, b: string): number {
  // Up to the first unit that differs the bytes are the same; if neither unit there is a surrogate,
  // both are whole characters and their code points order their bytes (and a surrogate just before
  // them is lone in both strings alike). Only surrogates need the bytes themselves.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i += 1) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (!isSurrogate(x) && !isSurrogate(y)) return x < y ? -1 : 1;
    return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
  }
  // One is a prefix of the other in code units; a high surrogate ending the shorter one is lone there
  // (U+FFFD, EF BF BD) and sorts before whatever the longer one has (a pair starts with F0–F4).
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}
