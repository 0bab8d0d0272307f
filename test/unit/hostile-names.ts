// Names that every name rule refuses (empty, dot segments, empty segments, leading or trailing '/',
// a backslash, NUL), shared by the tests of each rule that must refuse them.
export const HOSTILE_PATH_NAMES: readonly string[] = [
  '',
  '..',
  'a/../b',
  'a//b',
  '/a',
  'a/',
  'a\\b',
  'a\0b',
  './a',
];

/** Refused as bundle names too: upper case and a segment over 63 characters. */
export const HOSTILE_BUNDLE_NAMES: readonly string[] = [...HOSTILE_PATH_NAMES, 'A', 'a'.repeat(254)];
