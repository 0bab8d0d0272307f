// The one way opa-sync compares a secret someone presents (a bearer token) with the secrets it knows:
// crypto.timingSafeEqual over SHA-256 digests. Digests have the same length whatever the secrets' lengths,
// so the comparison takes a time that says nothing about a known secret's content or length, and every
// known secret is compared (no early exit on a match). The known secrets are digested once, when they
// are loaded; a check digests only what was presented.
import { hash, timingSafeEqual } from 'node:crypto';

/** The SHA-256 digest of a secret's UTF-8 bytes: what `matchesAnySecret` compares. */
export function secretDigest(secret: string): Buffer {
  return hash('sha256', secret, 'buffer');
}

/**
 * Whether `presented` is one of the secrets whose digests are `known`, in constant time for a given
 * number of known secrets.
 *
 * @example
 * const known = tokens.map(secretDigest); // once, when the token file is read
 * matchesAnySecret(presentedToken, known); // on every request
 */
export function matchesAnySecret(presented: string, known: readonly Buffer[]): boolean {
  const digest = secretDigest(presented);
  let found = false;
  // `||` with the comparison first: every known digest is compared, whatever matched before.
  for (const k of known) found = timingSafeEqual(digest, k) || found;
  return found;
}
