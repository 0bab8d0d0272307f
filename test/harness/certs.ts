// Certificates of a test run, made with the openssl command: one CA per run, serving certificates for
// 127.0.0.1/localhost signed by it, and a key pair for service-account tokens.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileAsync('openssl', args, { cwd });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(
        'the openssl binary is needed to make the test certificates and was not found on PATH',
        {
          cause: err,
        },
      );
    }
    throw new Error(`openssl ${args[0] ?? ''} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

export interface CertificateAuthority {
  dir: string;
  certFile: string;
  keyFile: string;
  /** PEM text of the CA certificate. */
  pem: string;
}

export interface ServingCert {
  certFile: string;
  keyFile: string;
}

export async function createCa(dir: string): Promise<CertificateAuthority> {
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '3',
      '-subj',
      '/CN=opa-sync test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  const certFile = path.join(dir, 'ca.crt');
  return { dir, certFile, keyFile: path.join(dir, 'ca.key'), pem: readFileSync(certFile, 'utf8') };
}

/** A certificate for 127.0.0.1 and localhost, for server (and client) authentication. */
export async function createServingCert(ca: CertificateAuthority, name: string): Promise<ServingCert> {
  const dir = ca.dir;
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(
    ext,
    [
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth,clientAuth',
      '',
    ].join('\n'),
  );
  await openssl(
    [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${name}`,
    ],
    dir,
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      ca.certFile,
      '-CAkey',
      ca.keyFile,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '3',
      '-extfile',
      ext,
    ],
    dir,
  );
  return { certFile: path.join(dir, `${name}.crt`), keyFile: path.join(dir, `${name}.key`) };
}

/** An RSA key pair (private key and public key files), e.g. for signing service-account tokens. */
export async function createKeyPair(
  dir: string,
  name: string,
): Promise<{ privateKeyFile: string; publicKeyFile: string }> {
  await openssl(
    ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', `${name}.key`],
    dir,
  );
  await openssl(['pkey', '-in', `${name}.key`, '-pubout', '-out', `${name}.pub`], dir);
  return { privateKeyFile: path.join(dir, `${name}.key`), publicKeyFile: path.join(dir, `${name}.pub`) };
}
