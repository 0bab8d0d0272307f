// Local mode's first minute: how to point an OPA at the bundle server. The OPA configuration is written
// to <bundles dir>/opa-config.yaml and printed, with a command ready to paste that starts the very opa
// binary opa-sync validates bundles with (full path: it is usually not on PATH) on that file.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

/** Where the printed command makes OPA listen: OPA's own default port, on loopback only. */
export const OPA_ADDR = '127.0.0.1:8181';

/** The name of the configuration file in the bundles folder. */
export const OPA_CONFIG_FILE = 'opa-config.yaml';

/** The URL a local OPA reaches a server on: all interfaces are reached through loopback. */
export function serverUrl(host: string, port: number, tls: boolean): string {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${tls ? 'https' : 'http'}://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
}

/** The environment variable the OPA configuration reads the bearer token from when the file holds several. */
export const TOKEN_ENV = 'OPA_SYNC_BUNDLE_TOKEN';

/**
 * How the OPA authenticates to a bundle server with `--bundle-token-file`: the file itself when it holds
 * one token (OPA reads `token_path` on every request and trims it, so a rotated token is picked up);
 * with several tokens, one of them from an environment variable OPA substitutes (`${…}`) into its
 * configuration. The token is never printed.
 */
export interface BundleCredentials {
  tokenFile: string;
  tokens: number;
}

function credentialLines(credentials: BundleCredentials | undefined): string[] {
  if (credentials === undefined) return [];
  return [
    '    credentials:',
    '      bearer:',
    credentials.tokens === 1
      ? `        token_path: ${JSON.stringify(path.resolve(credentials.tokenFile))}`
      : `        token: "\${${TOKEN_ENV}}"`,
  ];
}

/** The OPA configuration that pulls `bundle` from the bundle server at `url`, long polling. */
export function opaConfigYaml(url: string, bundle: string, credentials?: BundleCredentials): string {
  return [
    'services:',
    '  opa-sync:',
    `    url: ${url}`,
    ...credentialLines(credentials),
    'bundles:',
    `  ${bundle}:`,
    '    service: opa-sync',
    `    resource: bundles/${bundle}`,
    '    polling:',
    '      long_polling_timeout_seconds: 60',
    'status:',
    '  service: opa-sync',
    '',
  ].join('\n');
}

/** A word as a POSIX shell reads it back unchanged: as is when it is plain, single-quoted otherwise. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** `opa run --server --addr=127.0.0.1:8181 --config-file=…`, every word quoted for the shell. */
export function opaRunCommand(opaBin: string, configFile: string, addr = OPA_ADDR): string {
  return [opaBin, 'run', '--server', `--addr=${addr}`, `--config-file=${configFile}`]
    .map(shellWord)
    .join(' ');
}

export interface OpaHowTo {
  /** Where it is printed (people read it). */
  out: NodeJS.WritableStream;
  logger: Logger;
  /** The bundle server's base URL (`serverUrl`). */
  url: string;
  bundle: string;
  opaBin: string;
  /** The bundles folder (--bundles-dir): the configuration is written there; not written without it. */
  dir: string | undefined;
  /** The policies folder, whose edits the OPA gets. */
  folder: string;
  /** With --bundle-token-file: how the OPA sends a token. */
  credentials?: BundleCredentials | undefined;
}

/**
 * Writes the OPA configuration (when there is a bundles folder) and prints it with the bundle's URL and
 * the command that starts an OPA on it.
 *
 * @example
 * showOpaHowTo({ out: process.stdout, logger, url: serverUrl('127.0.0.1', 8282, false), bundle: 'policies', opaBin, dir: 'bundles', folder: 'policies' });
 * // opa-sync serves the bundle "policies" at http://127.0.0.1:8282/bundles/policies
 * // …
 * //   /home/me/.cache/opa-sync/tools/opa-v1.22.3/opa run --server --addr=127.0.0.1:8181 --config-file=/home/me/opa-sync/bundles/opa-config.yaml
 */
export function showOpaHowTo(how: OpaHowTo): void {
  const base = how.url;
  const yaml = opaConfigYaml(base, how.bundle, how.credentials);
  const severalTokens = how.credentials !== undefined && how.credentials.tokens !== 1;
  const file = how.dir === undefined ? undefined : writeConfig(how.dir, yaml, how.logger);
  const indent = (text: string): string =>
    text
      .trimEnd()
      .split('\n')
      .map((line) => `  ${line}`)
      .join('\n');
  how.out.write(
    [
      '',
      `opa-sync serves the bundle "${how.bundle}" at ${base}/bundles/${how.bundle}`,
      file === undefined
        ? `An OPA pulls it with this configuration (save it as ${OPA_CONFIG_FILE}):`
        : `An OPA pulls it with this configuration, written to ${file}:`,
      '',
      indent(yaml),
      '',
      'Start one in another terminal with:',
      '',
      ...(severalTokens
        ? [
            `  # ${how.credentials?.tokenFile ?? ''} holds several tokens: give this OPA one of them`,
            `  export ${TOKEN_ENV}=<a token of that file>`,
          ]
        : []),
      indent(opaRunCommand(path.resolve(how.opaBin), file ?? OPA_CONFIG_FILE)),
      '',
      `Then edit a .rego file under ${path.resolve(how.folder)}: the OPA has it within a second.`,
      '',
      '',
    ].join('\n'),
  );
}

/** The configuration's full path, or undefined (logged) when it cannot be written. */
function writeConfig(dir: string, yaml: string, logger: Logger): string | undefined {
  const file = path.resolve(dir, OPA_CONFIG_FILE);
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    // Written whole or not at all: an OPA started on it never reads half a file.
    const scratch = `${file}.${process.pid}.tmp`;
    writeFileSync(scratch, yaml);
    renameSync(scratch, file);
    return file;
  } catch (err) {
    logger.warn({ file, err: messageOf(err) }, 'could not write the OPA configuration');
    return undefined;
  }
}
