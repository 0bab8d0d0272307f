// Bundle signing: loads a signing key, writes OPA's `.signatures.json` (one compact JWS whose payload
// lists every other file of the bundle with its SHA-256 digest), and holds OPA's canonical JSON form,
// which both the signature digests and the builder's data.json files use.
//
// Everything here follows OPA v1.22.3 (v1/bundle/sign.go, verify.go, hash.go): structured files
// (base name data.json, data.yaml, data.yml, .manifest) are hashed as canonical JSON, everything else as
// raw bytes. Signing uses node:crypto directly: JWS compact serialisation is a few lines, and the
// ECDSA signature must be in the JWS form (r‖s), which `dsaEncoding: 'ieee-p1363'` gives.
//
// Determinism: the header carries no `iat`, the payload lists files in a fixed order, and RS*/HS*
// signatures are deterministic. PS* and ES* signatures are randomised by the algorithms themselves, so a
// bundle signed with them differs in its `.signatures.json` bytes between builds (the revision does not).
import {
  constants,
  createHash,
  createHmac,
  createPrivateKey,
  createSecretKey,
  sign as cryptoSign,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { InvalidInputError, messageOf } from '../util/errors.js';
import { compareUtf8 } from '../util/utf8.js';

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

/** A structured bundle file (data.json, .manifest…) whose content is not the JSON OPA would accept. */
export class InvalidJsonError extends InvalidInputError {
  constructor(message: string, cause?: unknown) {
    super('invalid_json', message, cause === undefined ? {} : { cause });
  }
}

type HashName = 'sha256' | 'sha384' | 'sha512';

function hashOf(alg: SigningAlg): HashName {
  return alg.endsWith('256') ? 'sha256' : alg.endsWith('384') ? 'sha384' : 'sha512';
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

// ---------------------------------------------------------------------------------------------------
// Canonical JSON, as OPA hashes structured files (v1/bundle/hash.go `walk`): objects with keys sorted
// by their UTF-8 bytes (Go's string order), no whitespace, strings as Go's encoding/json writes them
// with HTML escaping off, numbers as their literal text (OPA decodes with UseNumber).

const MAX_DEPTH = 1000;

// Go decodes a lone surrogate (raw or \u-escaped) as U+FFFD; doing the same before sorting and encoding
// keeps key order and bytes identical to what OPA computes.
function wellFormed(s: string): string {
  return s.replace(/\p{Surrogate}/gu, '\uFFFD');
}

/** A JSON string literal exactly as Go's encoding/json writes it with SetEscapeHTML(false). */
export function goJsonString(value: string): string {
  let out = '"';
  for (const ch of wellFormed(value)) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (code < 0x20) {
      // Go ≥ 1.22 uses the short escapes for \b and \f too; other controls as lowercase \u00xx.
      const short: Record<number, string> = { 8: '\\b', 9: '\\t', 10: '\\n', 12: '\\f', 13: '\\r' };
      out += short[code] ?? `\\u00${code.toString(16).padStart(2, '0')}`;
    } else if (code === 0x2028 || code === 0x2029) out += `\\u${code.toString(16)}`;
    else out += ch;
  }
  return `${out}"`;
}

// Go's string order lives in util/utf8.ts; re-exported for the bundle modules that import it from here.
export { compareUtf8 };

/** `{…}` from already-canonical member values, sorted by key bytes; keys already well-formed. */
function canonicalObject(members: Map<string, string>): string {
  const keys = [...members.keys()].sort(compareUtf8);
  return `{${keys.map((k) => `${goJsonString(k)}:${members.get(k) ?? 'null'}`).join(',')}}`;
}

/**
 * The canonical JSON text of a JavaScript value, the form OPA hashes: what `buildBundle` writes into
 * data.json so that the file's bytes and its signature digest agree. Numbers are written as
 * `JSON.stringify` writes them; NaN, Infinity, functions, symbols, Maps, Sets, cycles and `undefined`
 * (except as an object member, which is left out as JSON.stringify does) are refused.
 */
export function canonicalJson(value: unknown, what = 'value'): string {
  const ancestors = new Set<object>();
  const encode = (v: unknown, at: string, depth: number): string => {
    if (depth > MAX_DEPTH)
      throw new InvalidJsonError(`${what} is nested deeper than ${MAX_DEPTH} levels (at ${at})`);
    if (v === null) return 'null';
    switch (typeof v) {
      case 'boolean':
        return v ? 'true' : 'false';
      case 'number':
        if (!Number.isFinite(v))
          throw new InvalidJsonError(`${what} holds ${String(v)} at ${at}, which JSON cannot hold`);
        return JSON.stringify(v);
      case 'bigint':
        return v.toString();
      case 'string':
        return goJsonString(v);
      case 'object':
        break;
      default:
        throw new InvalidJsonError(`${what} holds a ${typeof v} at ${at}, which JSON cannot hold`);
    }
    if (ancestors.has(v)) throw new InvalidJsonError(`${what} holds a cycle at ${at}`);
    if (v instanceof Map || v instanceof Set) {
      throw new InvalidJsonError(
        `${what} holds a ${v.constructor.name} at ${at}; use a plain object or array`,
      );
    }
    const withToJson = v as { toJSON?: unknown };
    if (typeof withToJson.toJSON === 'function') {
      return encode((withToJson.toJSON as () => unknown).call(v), at, depth + 1);
    }
    ancestors.add(v);
    try {
      if (Array.isArray(v)) {
        return `[${v
          .map((e: unknown, i) => {
            if (e === undefined) throw new InvalidJsonError(`${what} holds undefined at ${at}[${i}]`);
            return encode(e, `${at}[${i}]`, depth + 1);
          })
          .join(',')}]`;
      }
      const members = new Map<string, string>();
      for (const [k, member] of Object.entries(v)) {
        if (member === undefined) continue;
        const key = wellFormed(k);
        if (members.has(key)) {
          throw new InvalidJsonError(
            `${what} has two keys at ${at} that are the same once lone surrogates become U+FFFD`,
          );
        }
        members.set(key, encode(member, `${at}.${JSON.stringify(k)}`, depth + 1));
      }
      return canonicalObject(members);
    } finally {
      ancestors.delete(v);
    }
  };
  return encode(value, '$', 0);
}

const JSON_NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * The canonical JSON text of JSON source, preserving number literals verbatim (`1.0` stays `1.0`) as
 * OPA's UseNumber decoding does: the form OPA hashes a structured file in. Strict JSON only (OPA falls
 * back to YAML for data.yaml files; we never write YAML). A leading UTF-8 BOM is ignored, as OPA does;
 * duplicate keys keep the last value, as Go's decoder does. Invalid UTF-8 is refused rather than guessed
 * at, since Go and JavaScript replace broken sequences differently.
 */
export function canonicalizeJson(source: Buffer | string, what = 'JSON'): string {
  let text: string;
  if (typeof source === 'string') text = source;
  else {
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(source);
    } catch (err) {
      throw new InvalidJsonError(`${what} is not valid UTF-8`, err);
    }
  }
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  let pos = 0;
  const fail = (reason: string): never => {
    throw new InvalidJsonError(`${what} is not valid JSON: ${reason} at offset ${pos}`);
  };
  const skipSpace = (): void => {
    while (pos < text.length && ' \t\n\r'.includes(text[pos] ?? '')) pos += 1;
  };
  const parseString = (): string => {
    pos += 1; // opening quote
    let out = '';
    for (;;) {
      const ch = text[pos];
      if (ch === undefined) return fail('unterminated string');
      if (ch === '"') {
        pos += 1;
        return out;
      }
      if (ch < ' ') return fail('control character in string');
      if (ch !== '\\') {
        out += ch;
        pos += 1;
        continue;
      }
      const esc = text[pos + 1];
      const simple: Record<string, string> = {
        '"': '"',
        '\\': '\\',
        '/': '/',
        b: '\b',
        f: '\f',
        n: '\n',
        r: '\r',
        t: '\t',
      };
      if (esc !== undefined && simple[esc] !== undefined) {
        out += simple[esc];
        pos += 2;
      } else if (esc === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(pos + 2, pos + 6))) {
        // Surrogate pairs join naturally in a JS string; lone halves become U+FFFD in wellFormed().
        out += String.fromCharCode(parseInt(text.slice(pos + 2, pos + 6), 16));
        pos += 6;
      } else return fail('bad escape in string');
    }
  };
  const parseValue = (depth: number): string => {
    if (depth > MAX_DEPTH) return fail(`nested deeper than ${MAX_DEPTH} levels`);
    skipSpace();
    const ch = text[pos];
    if (ch === '{') {
      pos += 1;
      const members = new Map<string, string>();
      skipSpace();
      if (text[pos] === '}') {
        pos += 1;
        return '{}';
      }
      for (;;) {
        skipSpace();
        if (text[pos] !== '"') return fail('expected a string key');
        const key = wellFormed(parseString());
        skipSpace();
        if (text[pos] !== ':') return fail('expected ":"');
        pos += 1;
        members.delete(key); // the last duplicate wins, as with Go's map decoding
        members.set(key, parseValue(depth + 1));
        skipSpace();
        if (text[pos] === ',') pos += 1;
        else if (text[pos] === '}') {
          pos += 1;
          return canonicalObject(members);
        } else return fail('expected "," or "}"');
      }
    }
    if (ch === '[') {
      pos += 1;
      const elements: string[] = [];
      skipSpace();
      if (text[pos] === ']') {
        pos += 1;
        return '[]';
      }
      for (;;) {
        elements.push(parseValue(depth + 1));
        skipSpace();
        if (text[pos] === ',') pos += 1;
        else if (text[pos] === ']') {
          pos += 1;
          return `[${elements.join(',')}]`;
        } else return fail('expected "," or "]"');
      }
    }
    if (ch === '"') return goJsonString(parseString());
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, pos)) {
        pos += literal.length;
        return literal;
      }
    }
    JSON_NUMBER.lastIndex = pos;
    const number = JSON_NUMBER.exec(text);
    if (number !== null) {
      pos += number[0].length;
      return number[0];
    }
    return fail('unexpected character');
  };
  const result = parseValue(0);
  skipSpace();
  if (pos !== text.length) fail('content after the top-level value');
  return result;
}

/** Files OPA hashes as canonical JSON rather than raw bytes (v1/bundle/bundle.go `IsStructuredDoc`). */
export function isStructuredFile(name: string): boolean {
  const base = path.posix.basename(name);
  return base === 'data.json' || base === 'data.yaml' || base === 'data.yml' || base === '.manifest';
}

/** The lowercase hex SHA-256 digest OPA expects for a bundle file in the signature payload. */
export function fileDigest(name: string, content: Buffer): string {
  const hashed = isStructuredFile(name)
    ? Buffer.from(canonicalizeJson(content, `bundle file ${JSON.stringify(name)}`))
    : content;
  return createHash('sha256').update(hashed).digest('hex');
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function jwsSignature(alg: SigningAlg, key: KeyObject, input: Buffer): Buffer {
  const hash = hashOf(alg);
  switch (alg.slice(0, 2)) {
    case 'HS':
      return createHmac(hash, key).update(input).digest();
    case 'RS':
      return cryptoSign(hash, input, { key, padding: constants.RSA_PKCS1_PADDING });
    case 'PS':
      // RFC 7518 §3.5: the salt is as long as the digest.
      return cryptoSign(hash, input, {
        key,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
      });
    default:
      return cryptoSign(hash, input, { key, dsaEncoding: 'ieee-p1363' });
  }
}

/**
 * The bytes of `/.signatures.json` for the given bundle files (every file of the bundle except the
 * signatures file itself; names with or without the leading '/'). The JWT payload lists each file as
 * `{name, hash, algorithm: 'SHA-256'}` (name without the leading '/'), sorted by name; the header is
 * `{alg, kid?}`; there is no `iat`, so the same files and key give the same bytes for RS* and HS*.
 */
export function signaturesFile(
  files: readonly { name: string; content: Buffer }[],
  options: SigningOptions,
): Buffer {
  if (!isSigningAlg(options.alg)) {
    throw new SigningKeyError(
      `signing algorithm ${JSON.stringify(options.alg)} is not one of ${SIGNING_ALGS.join(', ')}`,
    );
  }
  const problem = keyProblem(options.key, options.alg);
  if (problem !== undefined) throw new SigningKeyError(`cannot sign the bundle: ${problem}`);
  if (options.keyId === '')
    throw new SigningKeyError('cannot sign the bundle: the key id is empty (OPA refuses an empty kid)');

  const listed = new Map<string, string>();
  for (const file of files) {
    // OPA compares names after stripping one leading '/' (v1/bundle/bundle.go `Read`).
    const name = file.name.startsWith('/') ? file.name.slice(1) : file.name;
    if (path.posix.basename(name) === '.signatures.json') {
      throw new InvalidInputError(
        'invalid_bundle_entry',
        `cannot sign ${JSON.stringify(file.name)}: it is a signatures file`,
      );
    }
    if (listed.has(name)) {
      throw new InvalidInputError(
        'duplicate_bundle_entry',
        `cannot sign two files named ${JSON.stringify(name)}`,
      );
    }
    listed.set(name, fileDigest(name, file.content));
  }
  const entries = [...listed.keys()].sort(compareUtf8).map((name) => ({
    name,
    hash: listed.get(name) ?? '',
    algorithm: 'SHA-256',
  }));
  const header = JSON.stringify({
    alg: options.alg,
    ...(options.keyId === undefined ? {} : { kid: options.keyId }),
  });
  const payload = JSON.stringify({ files: entries });
  const input = `${base64url(header)}.${base64url(payload)}`;
  const signature = jwsSignature(options.alg, options.key, Buffer.from(input, 'ascii'));
  return Buffer.from(JSON.stringify({ signatures: [`${input}.${base64url(signature)}`] }), 'utf8');
}
