// Bundle signatures: the bytes of OPA's `/.signatures.json`, one compact JWS whose payload lists every
// other file of the bundle with its SHA-256 digest, as OPA v1.22.3 verifies it (v1/bundle/sign.go,
// verify.go). OPA digests structured files (data.json, .manifest) in canonical JSON and other files as
// raw bytes; the builder writes its structured files canonically to begin with (canonical-json.ts), so
// every digest here is that of the bytes as they are and signing needs no JSON parser.
//
// node:crypto signs directly: JWS compact serialisation is a few lines, and the ECDSA signature must be
// in the JWS form (r‖s), which `dsaEncoding: 'ieee-p1363'` gives. Determinism: the header carries no
// `iat`, the payload lists files in a fixed order, and RS*/HS* signatures are deterministic. PS* and ES*
// signatures are randomised by the algorithms themselves, so a bundle signed with them differs in its
// `.signatures.json` bytes between builds (the revision does not).
import { constants, createHash, createHmac, sign as cryptoSign, type KeyObject } from 'node:crypto';
import path from 'node:path';
import { InvalidInputError } from '../util/errors.js';
import { compareUtf8 } from '../util/utf8.js';
import { checkSigningOptions, type SigningAlg, type SigningOptions } from './signing-key.js';

type HashName = 'sha256' | 'sha384' | 'sha512';

function hashOf(alg: SigningAlg): HashName {
  return alg.endsWith('256') ? 'sha256' : alg.endsWith('384') ? 'sha384' : 'sha512';
}

/**
 * The lowercase hex SHA-256 digest OPA expects for a bundle file in the signature payload. OPA hashes
 * structured files (base name data.json, data.yaml, data.yml, .manifest) in canonical JSON and every
 * other file as raw bytes; every structured file opa-sync signs is written in canonical JSON by
 * construction (`canonicalJson`), so for all of them the digest is that of the bytes as they are.
 */
export function fileDigest(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
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
 * signatures file itself; names with or without the leading '/'; `digest`, when given, is taken as the
 * content's `fileDigest`). The JWT payload lists each file as
 * `{name, hash, algorithm: 'SHA-256'}` (name without the leading '/'), sorted by name; the header is
 * `{alg, kid?}`; there is no `iat`, so the same files and key give the same bytes for RS* and HS*.
 */
export function signaturesFile(
  files: readonly { name: string; content: Buffer; digest?: string | undefined }[],
  options: SigningOptions,
): Buffer {
  checkSigningOptions(options);

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
    if (/(?:^|\/)data\.ya?ml$/.test(name)) {
      // OPA would hash the YAML converted to canonical JSON, which is not its bytes; we never write YAML.
      throw new InvalidInputError(
        'invalid_bundle_entry',
        `cannot sign ${JSON.stringify(file.name)}: opa-sync signs only files it writes, and it writes no YAML`,
      );
    }
    if (listed.has(name)) {
      throw new InvalidInputError(
        'duplicate_bundle_entry',
        `cannot sign two files named ${JSON.stringify(name)}`,
      );
    }
    listed.set(name, file.digest ?? fileDigest(file.content));
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
