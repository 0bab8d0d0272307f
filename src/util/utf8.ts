// Go's string order, the one home for it: OPA sorts names, keys and paths by their UTF-8 bytes, and
// every artifact that must match what OPA (or another replica) computes sorts the same way.

/**
 * Compares two strings by their UTF-8 bytes, as Go compares strings. JavaScript's default sort compares
 * UTF-16 code units, which orders characters above U+FFFF before U+E000–U+FFFF; Go does the opposite.
 *
 * @example
 * ['\uFF61', '\u{1F600}'].sort(compareUtf8); // ['\uFF61', '\u{1F600}'] (the default sort swaps them)
 */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
