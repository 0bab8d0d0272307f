// Signing keys for bundles: the JWS algorithms OPA verifies bundles with (SIGNING_ALGS), loading a key
// file for one of them, and the checks that a key fits its algorithm the way OPA needs it (secret or
// private key, RSA size, EC curve), so that a wrong key is refused at start-up with a message naming the
// file, instead of producing bundles that every OPA refuses.
import { createPrivateKey, createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { InvalidInputError, messageOf } from '../util/errors.js';

export type SigningAlg =
  | 'RS256'
  | 'RS384'
  | 'RS512'
  | 'PS256'
  | 'PS384'
  | 'PS512'
  | 'ES256'
  | 'ES384'
  | 'ES512'
  | 'HS256'
  | 'HS384'
  | 'HS512';

export const SIGNING_ALGS: readonly SigningAlg[] = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'HS256',
  'HS384',
  'HS512',
];

export interface SigningOptions {
  alg: SigningAlg;
  /** A private key for RS*, PS* and ES*; a secret key for HS*. */
  key: KeyObject;
  /** Written as the JWS header `kid`; OPA picks its verification key by it unless its config names one. */
  keyId?: string | undefined;
}

/** A signing key that cannot be used: unreadable, of the wrong kind for the algorithm, or unparseable. */
export class SigningKeyError extends InvalidInputError {
  constructor(message: string, cause?: unknown) {
    super('invalid_signing_key', message, cause === undefined ? {} : { cause });
  }
}

// JWS (RFC 7518 §3.4) ties each ES algorithm to one curve; Node reports curves by their OpenSSL names.
const ES_CURVES: Readonly<Record<string, { curve: string; label: string }>> = {
  ES256: { curve: 'prime256v1', label: 'P-256' },
  ES384: { curve: 'secp384r1', label: 'P-384' },
  ES512: { curve: 'secp521r1', label: 'P-521' },
};

// Go (1.24 and later, which OPA is built with) refuses RSA keys under 1024 bits in every operation:
// OPA would reject every bundle signed with one.
const MIN_RSA_BITS = 1024;

function isSigningAlg(alg: string): alg is SigningAlg {
  return (SIGNING_ALGS as readonly string[]).includes(alg);
}

function describeKey(key: KeyObject): string {
  if (key.type === 'secret') return 'a secret (HMAC) key';
  if (key.type === 'public') return 'a public key';
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return `an ${key.asymmetricKeyType.toUpperCase()} private key (${details?.modulusLength ?? '?'} bits)`;
    case 'ec': {
      const curve = Object.values(ES_CURVES).find((c) => c.curve === details?.namedCurve);
      return `an EC private key (${curve?.label ?? details?.namedCurve ?? 'unknown curve'})`;
    }
    default:
      return `a private key of type ${key.asymmetricKeyType ?? 'unknown'}`;
  }
}

/** Why `key` cannot sign with `alg`, or undefined. */
function keyProblem(key: KeyObject, alg: SigningAlg): string | undefined {
  const family = alg.slice(0, 2);
  if (family === 'HS') {
    return key.type === 'secret' ? undefined : `${alg} needs a shared secret, not ${describeKey(key)}`;
  }
  if (key.type !== 'private') return `${alg} needs a private key, not ${describeKey(key)}`;
  const type = key.asymmetricKeyType;
  if (family === 'RS' || family === 'PS') {
    // An 'rsa-pss' key can only make PSS signatures; a plain 'rsa' key can make both.
    const fits = type === 'rsa' || (family === 'PS' && type === 'rsa-pss');
    if (!fits) return `${alg} needs an RSA private key, not ${describeKey(key)}`;
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) {
      return `${alg} needs an RSA key of at least ${MIN_RSA_BITS} bits (OPA refuses smaller ones), not ${bits} bits`;
    }
    return undefined;
  }
  const want = ES_CURVES[alg];
  if (type !== 'ec' || want === undefined || key.asymmetricKeyDetails?.namedCurve !== want.curve) {
    return `${alg} needs an EC private key on curve ${want?.label ?? '?'}, not ${describeKey(key)}`;
  }
  return undefined;
}

/**
 * Throws `SigningKeyError` unless `options` can sign a bundle OPA accepts: a known algorithm, a key that
 * fits it, and no empty key id (OPA refuses an empty `kid`).
 */
export function checkSigningOptions(options: SigningOptions): void {
  if (!isSigningAlg(options.alg)) {
    throw new SigningKeyError(
      `signing algorithm ${JSON.stringify(options.alg)} is not one of ${SIGNING_ALGS.join(', ')}`,
    );
  }
  const problem = keyProblem(options.key, options.alg);
  if (problem !== undefined) throw new SigningKeyError(`cannot sign the bundle: ${problem}`);
  if (options.keyId === '')
    throw new SigningKeyError('cannot sign the bundle: the key id is empty (OPA refuses an empty kid)');
}

/**
 * Loads the key for signing bundles with `alg`: a PEM private key (PKCS#1, PKCS#8 or SEC1, unencrypted)
 * for RS*, PS* and ES*; for HS* the raw bytes of the file are the shared secret (a trailing newline is
 * part of the secret, as OPA would see it in a `keys[k].key` read from the same file).
 * Throws `SigningKeyError` naming the file and the mismatch.
 */
export function loadSigningKey(file: string, alg: SigningAlg, keyId?: string): SigningOptions {
  const name = JSON.stringify(file);
  if (!isSigningAlg(alg)) {
    throw new SigningKeyError(
      `signing algorithm ${JSON.stringify(alg)} is not one of ${SIGNING_ALGS.join(', ')}`,
    );
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new SigningKeyError(`cannot read the signing key file ${name}: ${messageOf(err)}`, err);
  }
  const text = bytes.toString('utf8');
  const looksPem = /-----BEGIN [A-Z0-9 ]+-----/.test(text);
  const withId = (key: KeyObject): SigningOptions => ({
    alg,
    key,
    ...(keyId === undefined ? {} : { keyId }),
  });

  if (alg.startsWith('HS')) {
    if (bytes.length === 0)
      throw new SigningKeyError(`the signing key file ${name} is empty (${alg} needs a secret)`);
    if (looksPem) {
      throw new SigningKeyError(
        `the signing key file ${name} holds a PEM key, but ${alg} signs with a shared secret ` +
          '(the raw bytes of the file); use RS*, PS* or ES* for a PEM key',
      );
    }
    return withId(createSecretKey(bytes));
  }

  if (!looksPem) {
    throw new SigningKeyError(`the signing key file ${name} is not PEM; ${alg} needs a PEM private key`);
  }
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
    throw new SigningKeyError(
      `the signing key file ${name} holds an encrypted private key; give an unencrypted one`,
    );
  }
  if (!/-----BEGIN (?:RSA |EC )?PRIVATE KEY-----/.test(text)) {
    throw new SigningKeyError(
      `the signing key file ${name} holds no private key (a public key or certificate?); ${alg} needs the private key`,
    );
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new SigningKeyError(`cannot parse the private key in ${name}: ${messageOf(err)}`, err);
  }
  const problem = keyProblem(key, alg);
  if (problem !== undefined) {
    throw new SigningKeyError(`the signing key file ${name} holds ${describeKey(key)}, but ${problem}`);
  }
  return withId(key);
}
