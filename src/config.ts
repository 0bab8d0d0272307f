// opa-sync's one typed configuration: parses the command line (pflag syntax, as kube-mgmt's cobra
// does) against the flag table in config-flags.ts, validates every value, and reports every problem
// at once in a single ConfigError. It reads argv only, never the environment.
import {
  defaultFlagValues,
  flagEntries,
  flagSpec,
  mapLegacyFlags,
  refusedFlag,
  suggestFlags,
  type FlagName,
  type FlagSpec,
  type FlagValues,
  type LegacyMapping,
} from './config-flags.js';
import { ConfigError } from './util/errors.js';
import { SIGNING_ALGS, type SigningAlg } from './bundles/signing-key.js';
import { parseOciTargets, tagProblem, type OciTargets } from './oci/reference.js';
import { bundleNameErrors } from './util/safe-names.js';
import type { LogFormat, LogLevel } from './util/logger.js';

/** A Kubernetes resource to replicate; all lower-cased, `group` '' = the core group. */
export interface ResourceRef {
  group: string;
  version: string;
  /** The plural resource name (`services`, `networkpolicies`), not the kind. */
  resource: string;
}

/** `v1/services`, `networking.k8s.io/v1/networkpolicies`: the flag syntax, as kube-mgmt prints it. */
export function formatResource(ref: ResourceRef): string {
  return ref.group === '' ? `${ref.version}/${ref.resource}` : `${ref.group}/${ref.version}/${ref.resource}`;
}

/**
 * How to reach OPA, as `OpaClient` takes it. `parseArgs` is the one place that checks these rules
 * (every broken one listed in one ConfigError); the client trusts them, and only reads the files.
 */
export interface OpaConnection {
  /** http(s) with a host, no credentials, query, fragment or trailing '/': `http://127.0.0.1:8181/v1`. */
  url: string;
  /** Bound on every call, from sending the request to the last byte of the answer: > 0, ≤ 2^31-1 ms. */
  timeoutMs: number;
  /** Bearer token: trimmed, never blank; never together with `tokenFile`. */
  token?: string | undefined;
  /** Bearer token file: first line, trimmed; read again when the file changes (token rotation). */
  tokenFile?: string | undefined;
  /** PEM CA certificate(s) trusted in addition to Node's root certificates; never with `allowInsecure`. */
  caFile?: string | undefined;
  /** Skip TLS verification of OPA's certificate. */
  allowInsecure?: boolean | undefined;
  /** Client certificate and key (PEM) for mutual TLS: both or neither. */
  clientCertFile?: string | undefined;
  clientKeyFile?: string | undefined;
}

export interface Config {
  kubeconfig: string | undefined;
  /** --kube-watch-idle-timeout: a watch silent this long is taken for dead (at least 2 s). */
  kubeWatchIdleTimeoutMs: number;
  /** Server-side bound of each watch request (`timeoutSeconds`), in whole seconds. */
  watchTimeoutSeconds: number;
  /** The connection fields are `OpaConnection`'s, with its rules; its token fields are `authToken*` here. */
  opa: {
    url: string;
    authToken: string | undefined;
    authTokenFile: string | undefined;
    caFile: string | undefined;
    allowInsecure: boolean;
    clientCertFile: string | undefined;
    clientKeyFile: string | undefined;
    timeoutMs: number;
    /** How often OPA is checked for a restart. */
    resyncIntervalMs: number;
    /**
     * Whether opa-sync pushes into the OPA at `url` (sidecar mode). False only with --bundle-addr and
     * no explicit --opa-url: opa-sync is then a pure bundle server. An explicit --opa-url always pushes.
     */
    push: boolean;
  };
  log: { level: LogLevel; format: LogFormat };
  /** `requireLabel` is false only for seed-era `--policies` (every ConfigMap there is a policy). */
  policies: { enabled: boolean; label: string; value: string; requireLabel: boolean };
  data: { enabled: boolean; label: string; value: string };
  /** `all` for '*'; otherwise `names`, sorted and without duplicates. */
  namespaces: { all: boolean; names: string[] };
  statusAnnotations: string[];
  healthEndpoint: { host: string; port: number } | undefined;
  /** --policies-dir: the local policies folder (also the default when no source flag is given). */
  folder: string | undefined;
  /** Whether the ConfigMap source runs (policies or data enabled, and not folder-only). */
  configmaps: boolean;
  replication: {
    /** --replicate: listed per namespace (all but `ignoreNamespaces`); de-duplicated, in order. */
    namespaced: ResourceRef[];
    /** --replicate-cluster: listed at cluster scope; de-duplicated, in order. */
    cluster: ResourceRef[];
    /** --replicate-path split on '/', empty segments dropped: `[]` is the data root. */
    path: string[];
    /** --replicate-ignore-namespaces, applied to `namespaced` only. */
    ignoreNamespaces: string[];
    /** Seed-era layout: `cluster` objects keyed by name only, even namespaced ones. */
    clusterByName: boolean;
    /** False: metadata.managedFields is dropped from replicated objects. */
    keepManagedFields: boolean;
    /** Without it, core `v1/secrets` cannot be replicated. */
    allowSecrets: boolean;
  };
  bundles: {
    /** --bundle-addr: where the bundle server listens; undefined = no bundle server. */
    addr: { host: string; port: number } | undefined;
    /** --bundle-name: the name of the bundle built from the policy ConfigMaps. */
    defaultName: string;
    /** --bundles-dir: built bundles are also written to `<dir>/<name>.tar.gz`; allowed without `addr`. */
    dir: string | undefined;
    /** --bundle-token-file: the Bearer token bundle clients must send (only with `addr`). */
    tokenFile: string | undefined;
    /** --bundle-tls-cert-file and --bundle-tls-key-file: both or neither (only with `addr`). */
    tlsCertFile: string | undefined;
    tlsKeyFile: string | undefined;
    /** --bundle-signing-key: bundles are unsigned without it. */
    signingKeyFile: string | undefined;
    /** --bundle-signing-alg; given explicitly only with `signingKeyFile`. */
    signingAlg: BundleSigningAlg;
    /** --bundle-signing-keyid; only with `signingKeyFile`. */
    signingKeyId: string | undefined;
    /** --bundle-rego-version, written to the manifest; undefined = not written. */
    regoVersion: 0 | 1 | undefined;
    /** --opa-bin: the opa binary that validates bundles; undefined = found on PATH at run time. */
    opaBin: string | undefined;
    /** --bundle-replicated: the name of the data bundle of the replicated collections; undefined = none. */
    replicated: string | undefined;
    /** --bundle-deltas: the replicated bundle offers delta bundles (only with `replicated`, unsigned). */
    deltas: boolean;
  };
  /** The validating admission webhook for policy and data ConfigMaps. */
  admission: {
    /** --admission-addr; undefined = no webhook. */
    addr: { host: string; port: number } | undefined;
    /** --admission-tls-cert-file and --admission-tls-key-file: both, with `addr`. */
    tlsCertFile: string | undefined;
    tlsKeyFile: string | undefined;
    /** --admission-mode: `warn` turns every refusal into a warning. */
    mode: 'deny' | 'warn';
    /** --admission-protect-dependents: refuse changes that break other ConfigMaps. */
    protectDependents: boolean;
    /**
     * --admission-rego-version, else --bundle-rego-version's, else `opa`: the pushed OPA's (asked at
     * run time), else 1 (no OPA pushed to).
     */
    regoVersion: 0 | 1 | 'opa';
  };
  /** Publishing the built bundles to OCI registries; undefined without --oci-repository. */
  oci: OciConfig | undefined;
}

export interface OciConfig {
  /** --oci-repository, parsed: the repository of each bundle, and the `{bundle}` template. */
  targets: OciTargets;
  /** --oci-tag: the moving tag, beside the revision tag. */
  movingTag: string;
  dockerConfig: string | undefined;
  /** --oci-username and --oci-password-file: both or neither. */
  username: string | undefined;
  passwordFile: string | undefined;
  tokenFile: string | undefined;
  caFile: string | undefined;
  plainHttp: boolean;
}

/** The signing algorithms of `opa build --signing-alg` (one list, the signer's). */
export const BUNDLE_SIGNING_ALGS: readonly BundleSigningAlg[] = SIGNING_ALGS;
export type BundleSigningAlg = SigningAlg;

/** `warnings` of help and version are the unknown flags of the line: named there too, never lost. */
export type ParseResult =
  | { kind: 'help'; warnings: string[] }
  | { kind: 'version'; warnings: string[] }
  | { kind: 'run'; config: Config; warnings: string[] };

/**
 * Parses and validates the command line (without the program name). `--help` and `--version` are
 * answered even when the rest of the line is wrong. Throws a ConfigError listing every problem.
 * `localDefault` (the command line's choice) turns a line without any source flag into the local-folder
 * default.
 */
export function parseArgs(
  argv: readonly string[],
  { localDefault = false }: { localDefault?: boolean } = {},
): ParseResult {
  const scan = scanArgs(argv);
  if (scan.values.help) return { kind: 'help', warnings: scan.warnings };
  if (scan.values.version) return { kind: 'version', warnings: scan.warnings };

  if (localDefault) applyLocalDefault(scan.values, scan.given);
  const legacy = mapLegacyFlags(scan.values, scan.given);
  const problems = [...scan.problems];
  const warnings = [...scan.warnings, ...legacy.warnings];
  const config = buildConfig(scan.values, scan.given, legacy, problems, warnings);
  if (problems.length > 0) throw new ConfigError(problems);
  return { kind: 'run', config, warnings };
}

/**
 * With no source flag at all (see `source` in the flag table), opa-sync needs no cluster: it serves
 * ./policies as the bundle `policies` on 127.0.0.1:8282, writes ./bundles and logs text — the table's
 * `localDefault` values, each unless its flag is given. This is the one place that decides it.
 */
function applyLocalDefault(values: FlagValues, given: ReadonlySet<FlagName>): void {
  const entries = flagEntries();
  if (entries.some(([name, spec]) => spec.source === true && given.has(name))) return;
  const store: Record<string, unknown> = values;
  for (const [name, spec] of entries) {
    if (spec.kind === 'string' && spec.localDefault !== undefined && !given.has(name)) {
      store[name] = spec.localDefault;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scanning argv into raw flag values (syntax only; meaning is checked in buildConfig).

interface Scan {
  values: FlagValues;
  /** Flags that appeared on the command line, so a list's first use replaces its default. */
  given: Set<FlagName>;
  problems: string[];
  warnings: string[];
}

function scanArgs(argv: readonly string[]): Scan {
  const scanner = new ArgScanner(argv);
  scanner.run();
  return scanner.scan;
}

/** Go's strconv.ParseBool, which pflag uses for `--flag=value`. */
const BOOL_WORDS: ReadonlyMap<string, boolean> = new Map([
  ...['1', 't', 'T', 'TRUE', 'true', 'True'].map((w): [string, boolean] => [w, true]),
  ...['0', 'f', 'F', 'FALSE', 'false', 'False'].map((w): [string, boolean] => [w, false]),
]);

class ArgScanner {
  readonly scan: Scan = { values: defaultFlagValues(), given: new Set(), problems: [], warnings: [] };
  // The same object as scan.values, seen by name: the parser sets flags chosen at run time.
  private readonly store: Record<string, string | boolean | string[] | undefined> = this.scan.values;
  private readonly unknown = new Set<string>();
  private next = 0;
  private flagsEnded = false;
  /** The bool flag just before, if it had no `=value`: to explain a stray `false` after it. */
  private bareBool: string | undefined;

  constructor(private readonly argv: readonly string[]) {}

  run(): void {
    while (this.next < this.argv.length) {
      const token = this.take();
      const previousBareBool = this.bareBool;
      this.bareBool = undefined;
      if (this.flagsEnded || token === '-' || !token.startsWith('-')) {
        this.positional(token, previousBareBool);
      } else if (token === '--') {
        this.flagsEnded = true; // pflag: everything after `--` is positional
      } else if (token.startsWith('--')) {
        this.long(token);
      } else {
        this.short(token);
      }
    }
  }

  private take(): string {
    const token = this.argv[this.next] ?? '';
    this.next += 1;
    return token;
  }

  /** `--name`, `--name=value`, `--name value`. */
  private long(token: string): void {
    const body = token.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    if (name === '' || name.startsWith('-')) {
      this.scan.problems.push(`bad flag syntax: ${token}`);
      return;
    }
    const spec = flagSpec(name);
    const refusal = refusedFlag(name);
    if (refusal !== undefined) this.refused(`--${name}`, inline, refusal);
    else if (spec === undefined) this.unknownFlag(`--${name}`, inline !== undefined, suggestFlags(name));
    else this.known(name as FlagName, spec, `--${name}`, inline);
  }

  /** A kube-mgmt flag that opa-sync refuses: takes its value as a string flag does; empty = not set. */
  private refused(shown: string, inline: string | undefined, refusal: string): void {
    if (inline === undefined && this.next >= this.argv.length) {
      this.scan.problems.push(`flag needs an argument: ${shown}`);
      return;
    }
    const value = inline ?? this.take();
    if (value !== '' && !this.scan.problems.includes(refusal)) this.scan.problems.push(refusal);
  }

  /** `-h`, `-v`, `-hv`, `-v=false`: every short flag is a bool, as in pflag's shorthand groups. */
  private short(token: string): void {
    const body = token.slice(1);
    const eq = body.indexOf('=');
    const letters = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    const flags = [...letters].map(shortFlag);
    const known = flags.filter((flag) => flag !== undefined);
    if (known.length !== flags.length || (inline !== undefined && letters.length !== 1)) {
      this.unknownFlag(`-${letters}`, inline !== undefined, []);
      return;
    }
    for (const [name, spec] of known) this.known(name, spec, `-${spec.short}`, inline);
  }

  private known(name: FlagName, spec: FlagSpec, shown: string, inline: string | undefined): void {
    if (spec.kind === 'bool') {
      this.setBool(name, shown, inline);
      return;
    }
    // pflag: a value flag without `=` takes the next token, whatever it looks like.
    if (inline === undefined && this.next >= this.argv.length) {
      this.scan.problems.push(`flag needs an argument: ${shown}`);
      return;
    }
    const raw = inline ?? this.take();
    if (spec.kind === 'list') this.appendList(name, raw);
    else this.store[name] = raw;
    this.scan.given.add(name);
  }

  private setBool(name: FlagName, shown: string, inline: string | undefined): void {
    if (inline === undefined) {
      this.store[name] = true;
      this.bareBool = shown;
    } else {
      const value = BOOL_WORDS.get(inline);
      if (value === undefined) {
        this.scan.problems.push(
          `invalid argument ${quote(inline)} for "${shown}" flag: must be true or false`,
        );
        return;
      }
      this.store[name] = value;
    }
    this.scan.given.add(name);
  }

  /** Comma-separated items; the first use replaces the default, later uses append. */
  private appendList(name: FlagName, raw: string): void {
    const items = raw
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
    const current = this.store[name];
    this.store[name] = this.scan.given.has(name) && Array.isArray(current) ? [...current, ...items] : items;
  }

  /**
   * Unknown flags are ignored, as kube-mgmt does, so that the opa-kube-mgmt chart and old manifests
   * still start, but each is named once. Like pflag's unknown-flag whitelist, `--foo bar` takes
   * `bar` as the value of `--foo`. Values are never repeated in the warning: they may be secrets. A
   * near miss of a known flag (a typo) is named with the flag it probably meant.
   */
  private unknownFlag(shown: string, hasInlineValue: boolean, meant: readonly FlagName[]): void {
    const following = this.argv[this.next];
    const swallowsNext = !hasInlineValue && following !== undefined && !following.startsWith('-');
    if (swallowsNext) this.next += 1;
    if (this.unknown.has(shown)) return;
    this.unknown.add(shown);
    const hint = meant.length === 0 ? '' : `: did you mean ${meant.map((f) => `--${f}`).join(' or ')}?`;
    this.scan.warnings.push(
      `unknown flag ${shown} ignored${swallowsNext ? ' (and the value after it)' : ''}${hint}`,
    );
  }

  private positional(token: string, previousBareBool: string | undefined): void {
    const hint =
      previousBareBool !== undefined && BOOL_WORDS.has(token)
        ? ` (a boolean flag takes no separate value: write ${previousBareBool}=${token})`
        : '';
    this.scan.problems.push(`unexpected argument ${quote(token)}: opa-sync takes flags only${hint}`);
  }
}

function shortFlag(letter: string): [FlagName, FlagSpec] | undefined {
  return flagEntries().find(([, spec]) => spec.short === letter);
}

// ---------------------------------------------------------------------------------------------
// Building and validating the Config from the raw values.

function buildConfig(
  values: FlagValues,
  given: ReadonlySet<FlagName>,
  legacy: LegacyMapping,
  problems: string[],
  warnings: string[],
): Config {
  const config: Config = {
    kubeconfig: unlessEmpty(values.kubeconfig),
    kubeWatchIdleTimeoutMs: buildWatchIdleTimeout(values['kube-watch-idle-timeout'], problems),
    watchTimeoutSeconds: Math.ceil(buildDuration('watch-timeout', values['watch-timeout'], problems) / 1000),
    opa: buildOpa(values, given, problems, warnings),
    log: buildLog(values, problems),
    policies: {
      enabled: values['enable-policies'],
      ...buildLabel('policy', values['policy-label'], values['policy-value'], problems),
      requireLabel: legacy.policyRequireLabel,
    },
    data: {
      enabled: values['enable-data'],
      ...buildLabel('data', values['data-label'], values['data-value'], problems),
    },
    namespaces: buildNamespaces(
      legacy.namespaces,
      values['enable-policies'] || values['enable-data'],
      problems,
    ),
    statusAnnotations: buildStatusAnnotations(values['status-annotation'], problems),
    healthEndpoint: buildListenAddress('health-endpoint', values['health-endpoint'], problems),
    replication: buildReplication(values, problems),
    bundles: buildBundles(values, given, problems),
    admission: buildAdmission(values, given, problems),
    oci: buildOci(values, problems),
    folder: unlessEmpty(values['policies-dir']),
    // With a policies folder, ConfigMaps are read only when a Kubernetes flag asks for them.
    configmaps:
      (values['enable-policies'] || values['enable-data']) &&
      (unlessEmpty(values['policies-dir']) === undefined ||
        (['kubeconfig', 'namespaces', 'policies'] as const).some((f) => given.has(f))),
  };
  // The webhook judges ConfigMaps by the watch's rules, against what the watch loaded.
  if (
    config.admission.addr !== undefined &&
    !config.configmaps &&
    (values['enable-policies'] || values['enable-data'])
  ) {
    problems.push(
      '--admission-addr needs the ConfigMap source (--kubeconfig or --namespaces), not a policies folder alone',
    );
  }
  return config;
}

/** kube-mgmt treats an empty string flag as "not set"; so do we (`--opa-auth-token-file=`). */
function unlessEmpty(value: string | undefined): string | undefined {
  return value === '' ? undefined : value;
}

function buildOpa(
  values: FlagValues,
  given: ReadonlySet<FlagName>,
  problems: string[],
  warnings: string[],
): Config['opa'] {
  const opa: Config['opa'] = {
    url: buildOpaUrl(values['opa-url'] ?? '', problems),
    authToken: buildAuthToken(values['opa-auth-token'], problems),
    authTokenFile: unlessEmpty(values['opa-auth-token-file']),
    caFile: unlessEmpty(values['opa-ca-file']),
    allowInsecure: values['opa-allow-insecure'],
    clientCertFile: unlessEmpty(values['opa-client-cert-file']),
    clientKeyFile: unlessEmpty(values['opa-client-key-file']),
    timeoutMs: buildDuration('opa-timeout', values['opa-timeout'], problems),
    resyncIntervalMs: buildDuration('opa-resync-interval', values['opa-resync-interval'], problems),
    // A bundle server alone serves OPAs that pull; --opa-url says there is also one to push into.
    push: unlessEmpty(values['bundle-addr']) === undefined || given.has('opa-url'),
  };
  checkOpaCombinations(opa, problems, warnings);
  return opa;
}

function checkOpaCombinations(opa: Config['opa'], problems: string[], warnings: string[]): void {
  // The first two texts are kube-mgmt's own (cmd/kube-mgmt/main.go).
  if (opa.authToken !== undefined && opa.authTokenFile !== undefined) {
    problems.push('You can not use both --opa-auth-token and --opa-auth-token-file');
  }
  if (opa.allowInsecure && opa.caFile !== undefined) {
    problems.push('You can not use both --opa-allow-insecure and --opa-ca-file');
  }
  if (opa.clientCertFile !== undefined && opa.clientKeyFile === undefined) {
    problems.push('--opa-client-cert-file needs --opa-client-key-file');
  }
  if (opa.clientKeyFile !== undefined && opa.clientCertFile === undefined) {
    problems.push('--opa-client-key-file needs --opa-client-cert-file');
  }
  // Not an error: the opa-kube-mgmt chart always passes --opa-allow-insecure, with http too.
  if (tryParseUrl(opa.url)?.protocol === 'http:') {
    for (const [flag, set] of [
      ['--opa-ca-file', opa.caFile],
      ['--opa-client-cert-file', opa.clientCertFile],
    ] as const) {
      if (set !== undefined) warnings.push(`${flag} has no effect with an http:// --opa-url`);
    }
  }
}

/** --opa-auth-token, trimmed as it is sent; a blank one is a mistake (empty is "not set", as kube-mgmt). */
function buildAuthToken(raw: string | undefined, problems: string[]): string | undefined {
  const token = unlessEmpty(raw)?.trim();
  if (token === '') problems.push('--opa-auth-token is blank: give a token, or leave the flag out');
  return token === '' ? undefined : token;
}

/** An http(s) base URL; trailing '/' trimmed, as kube-mgmt does, so paths can be appended. */
function buildOpaUrl(raw: string, problems: string[]): string {
  const trimmed = raw.replace(/\/+$/, '');
  const url = tryParseUrl(trimmed);
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.host === '') {
    problems.push(`--opa-url: ${quote(raw)} is not an http(s) URL (e.g. http://localhost:8181/v1)`);
  } else if (url.username !== '' || url.password !== '') {
    // Not echoed: the URL holds a secret, and problems are logged.
    problems.push('--opa-url must not hold credentials: use --opa-auth-token-file');
  } else if (url.search !== '' || url.hash !== '') {
    problems.push(
      `--opa-url: ${quote(raw)} must not have a query or fragment (API paths are appended to it)`,
    );
  }
  return trimmed;
}

function tryParseUrl(text: string): URL | null {
  return URL.canParse(text) ? new URL(text) : null;
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const satisfies readonly LogLevel[];
const LOG_FORMATS = ['json', 'text'] as const satisfies readonly LogFormat[];

function buildLog(values: FlagValues, problems: string[]): Config['log'] {
  const level = oneOf(LOG_LEVELS, values['log-level']);
  const format = oneOf(LOG_FORMATS, values['log-format']);
  if (level === undefined) {
    problems.push(
      `--log-level: invalid log level ${quote(values['log-level'] ?? '')} (one of ${LOG_LEVELS.join(', ')})`,
    );
  }
  if (format === undefined) {
    problems.push(
      `--log-format: invalid log format ${quote(values['log-format'] ?? '')} (one of ${LOG_FORMATS.join(', ')})`,
    );
  }
  return { level: level ?? 'info', format: format ?? 'json' };
}

function oneOf<T extends string>(allowed: readonly T[], value: string | undefined): T | undefined {
  return allowed.find((item) => item === value);
}

/** A label key and value, validated as the label requirement `key=value`, as kube-mgmt does. */
function buildLabel(
  kind: 'policy' | 'data',
  rawKey: string | undefined,
  rawValue: string | undefined,
  problems: string[],
): { label: string; value: string } {
  const label = rawKey ?? '';
  const value = rawValue ?? '';
  const errors = labelRequirementErrors(label, value);
  if (errors.length > 0) {
    // kube-mgmt's text: "Invalid --policy-label:K || --policy-value:V, <k8s aggregate error>".
    const aggregate = errors.length === 1 ? errors[0] : `[${errors.join(', ')}]`;
    problems.push(`Invalid --${kind}-label:${label} || --${kind}-value:${value}, ${aggregate}`);
  }
  return { label, value };
}

function buildNamespaces(raw: readonly string[], needed: boolean, problems: string[]): Config['namespaces'] {
  if (raw.includes('*')) return { all: true, names: [] };
  const names = [...new Set(raw)].sort();
  for (const name of names) {
    const errors = dns1123LabelErrors(name);
    if (errors.length > 0) problems.push(fieldInvalid('--namespaces', name, errors));
  }
  // kube-mgmt 8.5.1's empty default watched everything and matched nothing (#242): refuse it.
  if (names.length === 0 && needed) {
    problems.push("--namespaces: no namespace given; name at least one, or '*' for all namespaces");
  }
  return { all: false, names };
}

/** Annotation keys as Kubernetes validates them: a qualified name, compared in lower case. */
function buildStatusAnnotations(raw: readonly string[], problems: string[]): string[] {
  const keys = [...new Set(raw)];
  for (const key of keys) {
    const errors = qualifiedNameErrors(key.toLowerCase());
    if (errors.length > 0) problems.push(fieldInvalid('--status-annotation', key, errors));
  }
  return keys;
}

/** The example port of each listening flag, for its error text. */
const LISTEN_EXAMPLE_PORT = { 'health-endpoint': 8000, 'bundle-addr': 8282, 'admission-addr': 8443 } as const;

/**
 * `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces), port 0 = any free port; empty or unset =
 * not listening.
 */
function buildListenAddress(
  flag: keyof typeof LISTEN_EXAMPLE_PORT,
  raw: string | undefined,
  problems: string[],
): { host: string; port: number } | undefined {
  if (raw === undefined || raw === '') return undefined;
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):([0-9]+)$/.exec(raw);
  if (match === null) {
    const port = LISTEN_EXAMPLE_PORT[flag];
    problems.push(`--${flag}: ${quote(raw)} is not HOST:PORT (e.g. 0.0.0.0:${port} or :${port})`);
    return undefined;
  }
  const [, ipv6, name = '', portText = ''] = match;
  const port = Number(portText);
  if (port > 65535) problems.push(`--${flag}: port ${portText} is not in 0-65535`);
  if (ipv6 !== undefined) {
    if (!isIPv6(ipv6)) problems.push(`--${flag}: ${quote(ipv6)} is not an IPv6 address`);
    return { host: ipv6, port };
  }
  if (name !== '' && !isIPv4(name) && dns1123SubdomainErrors(name.toLowerCase()).length > 0) {
    problems.push(`--${flag}: ${quote(name)} is not an IP address or host name`);
  }
  return { host: name === '' ? '0.0.0.0' : name, port };
}

function buildReplication(values: FlagValues, problems: string[]): Config['replication'] {
  const allowSecrets = values['replicate-allow-secrets'];
  // kube-mgmt's chart passes `--replicate-path=kubernetes`; `--replicate-path=` is the data root.
  const path = (values['replicate-path'] ?? '').split('/').filter((segment) => segment !== '');
  const namespaced = buildResources('replicate', values.replicate, allowSecrets, path, problems);
  const cluster = buildResources(
    'replicate-cluster',
    values['replicate-cluster'],
    allowSecrets,
    path,
    problems,
  );
  // One data path per resource name: --replicate and --replicate-cluster of the same one would collide.
  const seen = new Set<string>();
  for (const ref of [...namespaced, ...cluster]) {
    if (seen.has(ref.resource)) {
      problems.push(
        `resource "${ref.resource}" is replicated twice (--replicate and --replicate-cluster would write the same data path)`,
      );
    }
    seen.add(ref.resource);
  }
  return {
    namespaced,
    cluster,
    path,
    ignoreNamespaces: buildIgnoreNamespaces(values['replicate-ignore-namespaces'], problems),
    clusterByName: values['replicate-cluster-by-name'],
    keepManagedFields: values['replicate-keep-managed-fields'],
    allowSecrets,
  };
}

/** The resources of --replicate or --replicate-cluster: parsed, de-duplicated, in order. */
function buildResources(
  flag: 'replicate' | 'replicate-cluster',
  raw: readonly string[],
  allowSecrets: boolean,
  path: readonly string[],
  problems: string[],
): ResourceRef[] {
  const refs = new Map<string, ResourceRef>();
  for (const value of raw) {
    const ref = parseResource(value);
    if (ref === undefined) {
      problems.push(`--${flag}=${value}: format: [group/]version/resource`);
    } else if (!refs.has(formatResource(ref))) {
      refs.set(formatResource(ref), ref);
    }
  }
  for (const [text, ref] of refs) {
    if (ref.group === '' && ref.resource === 'secrets' && !allowSecrets) {
      const where = ['data', ...path, 'secrets'].join('.');
      problems.push(
        `--${flag}=${text}: replicating Secrets would expose them to every caller of OPA's data API ` +
          `(as ${where}); pass --replicate-allow-secrets to allow it`,
      );
    }
  }
  return [...refs.values()];
}

/**
 * `[group/]version/resource`, as kube-mgmt's cmd/kube-mgmt/flag.go: every part lower-cased; fewer
 * than 2 parts or an empty part is an error. kube-mgmt splits into at most 3 parts, so it took
 * `a/v1/b/c` as resource `b/c`; a '/' cannot be in a resource name, so that is an error here.
 */
function parseResource(value: string): ResourceRef | undefined {
  const parts = value.split('/').map((part) => part.toLowerCase());
  if (parts.length < 2 || parts.length > 3 || parts.includes('')) return undefined;
  const [group, version, resource] = parts.length === 2 ? ['', ...parts] : parts;
  if (group === undefined || version === undefined || resource === undefined) return undefined;
  return { group, version, resource };
}

function buildIgnoreNamespaces(raw: readonly string[], problems: string[]): string[] {
  // Empty items are already dropped: the opa-kube-mgmt chart passes `--replicate-ignore-namespaces=`.
  const names = [...new Set(raw)];
  for (const name of names) {
    const errors = dns1123LabelErrors(name);
    if (errors.length > 0) problems.push(fieldInvalid('--replicate-ignore-namespaces', name, errors));
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// The bundle server and the bundles it builds.

function buildBundles(
  values: FlagValues,
  given: ReadonlySet<FlagName>,
  problems: string[],
): Config['bundles'] {
  const bundles: Config['bundles'] = {
    addr: buildListenAddress('bundle-addr', values['bundle-addr'], problems),
    defaultName: buildBundleName(values['bundle-name'] ?? '', problems),
    dir: unlessEmpty(values['bundles-dir']),
    tokenFile: unlessEmpty(values['bundle-token-file']),
    tlsCertFile: unlessEmpty(values['bundle-tls-cert-file']),
    tlsKeyFile: unlessEmpty(values['bundle-tls-key-file']),
    signingKeyFile: unlessEmpty(values['bundle-signing-key']),
    signingAlg: buildSigningAlg(values['bundle-signing-alg'] ?? '', problems),
    signingKeyId: unlessEmpty(values['bundle-signing-keyid']),
    regoVersion: buildRegoVersion(values['bundle-rego-version'], problems),
    opaBin: unlessEmpty(values['opa-bin']),
    replicated: buildReplicatedBundle(values, problems),
    deltas: values['bundle-deltas'],
  };
  if (bundles.deltas && bundles.replicated === undefined) {
    problems.push('--bundle-deltas needs --bundle-replicated (deltas are of the replicated data bundle)');
  }
  if (bundles.deltas && bundles.signingKeyFile !== undefined) {
    problems.push(
      'You can not use both --bundle-deltas and --bundle-signing-key (delta bundles are sent unsigned)',
    );
  }
  checkBundleCombinations(bundles, values, given, problems);
  return bundles;
}

function checkBundleCombinations(
  bundles: Config['bundles'],
  values: FlagValues,
  given: ReadonlySet<FlagName>,
  problems: string[],
): void {
  if (bundles.tlsCertFile !== undefined && bundles.tlsKeyFile === undefined) {
    problems.push('--bundle-tls-cert-file needs --bundle-tls-key-file');
  }
  if (bundles.tlsKeyFile !== undefined && bundles.tlsCertFile === undefined) {
    problems.push('--bundle-tls-key-file needs --bundle-tls-cert-file');
  }
  // Judged on the flag, not on `addr`: a malformed --bundle-addr is reported once, as itself.
  const serving = unlessEmpty(values['bundle-addr']) !== undefined;
  // Only the bundle server uses these: without it they would silently protect nothing.
  if (!serving) {
    for (const [flag, set] of [
      ['--bundle-token-file', bundles.tokenFile],
      ['--bundle-tls-cert-file', bundles.tlsCertFile],
      ['--bundle-tls-key-file', bundles.tlsKeyFile],
    ] as const) {
      if (set !== undefined) problems.push(`${flag} needs --bundle-addr`);
    }
  }
  // Signing and the manifest apply to every built bundle: served, or written to --bundles-dir.
  if (!serving && bundles.dir === undefined) {
    for (const [flag, set] of [
      ['--bundle-signing-key', bundles.signingKeyFile],
      ['--bundle-rego-version', bundles.regoVersion],
    ] as const) {
      if (set !== undefined) problems.push(`${flag} needs --bundle-addr or --bundles-dir`);
    }
  }
  if (bundles.signingKeyFile === undefined) {
    if (given.has('bundle-signing-alg')) problems.push('--bundle-signing-alg needs --bundle-signing-key');
    if (bundles.signingKeyId !== undefined)
      problems.push('--bundle-signing-keyid needs --bundle-signing-key');
  }
}

/** --bundle-replicated: a bundle name of its own, for replicated resources, built for a server or folder. */
function buildReplicatedBundle(values: FlagValues, problems: string[]): string | undefined {
  const name = unlessEmpty(values['bundle-replicated']);
  if (name === undefined) return undefined;
  const errors = bundleNameErrors(name);
  if (errors.length > 0) problems.push(fieldInvalid('--bundle-replicated', name, errors));
  if (name === values['bundle-name']) {
    problems.push(`--bundle-replicated: ${quote(name)} is already the --bundle-name bundle of the policies`);
  }
  if (values.replicate.length + values['replicate-cluster'].length === 0) {
    problems.push('--bundle-replicated needs --replicate or --replicate-cluster (the resources it holds)');
  }
  if (unlessEmpty(values['bundle-addr']) === undefined && unlessEmpty(values['bundles-dir']) === undefined) {
    problems.push('--bundle-replicated needs --bundle-addr or --bundles-dir');
  }
  return name;
}

/** --oci-*: where built bundles are pushed, and how opa-sync logs in. */
function buildOci(values: FlagValues, problems: string[]): OciConfig | undefined {
  const others = [
    ['--oci-docker-config', unlessEmpty(values['oci-docker-config'])],
    ['--oci-username', unlessEmpty(values['oci-username'])],
    ['--oci-password-file', unlessEmpty(values['oci-password-file'])],
    ['--oci-token-file', unlessEmpty(values['oci-token-file'])],
    ['--oci-ca-file', unlessEmpty(values['oci-ca-file'])],
    ['--oci-plain-http', values['oci-plain-http'] ? 'true' : undefined],
  ] as const;
  const entries = values['oci-repository'].filter((e) => e !== '');
  if (entries.length === 0) {
    for (const [flag, set] of others) if (set !== undefined) problems.push(`${flag} needs --oci-repository`);
    return undefined;
  }
  // Bundles are built only for a bundle server or a bundles folder.
  if (unlessEmpty(values['bundle-addr']) === undefined && unlessEmpty(values['bundles-dir']) === undefined) {
    problems.push(
      '--oci-repository needs --bundle-addr or --bundles-dir (the bundles it pushes are built for them)',
    );
  }
  const movingTag = values['oci-tag'] ?? '';
  const tagError = tagProblem(movingTag);
  if (tagError !== undefined) problems.push(`--oci-tag: ${tagError}`);
  const oci: OciConfig = {
    targets: parseOciTargets(entries, values['bundle-name'] ?? '', problems),
    movingTag,
    dockerConfig: unlessEmpty(values['oci-docker-config']),
    username: unlessEmpty(values['oci-username']),
    passwordFile: unlessEmpty(values['oci-password-file']),
    tokenFile: unlessEmpty(values['oci-token-file']),
    caFile: unlessEmpty(values['oci-ca-file']),
    plainHttp: values['oci-plain-http'],
  };
  if (oci.username !== undefined && oci.passwordFile === undefined) {
    problems.push('--oci-username needs --oci-password-file');
  }
  if (oci.passwordFile !== undefined && oci.username === undefined) {
    problems.push('--oci-password-file needs --oci-username');
  }
  if (oci.tokenFile !== undefined && oci.username !== undefined) {
    problems.push('You can not use both --oci-token-file and --oci-username');
  }
  if (oci.plainHttp && oci.caFile !== undefined) {
    problems.push('You can not use both --oci-plain-http and --oci-ca-file');
  }
  return oci;
}

/** The bundle-name rule is safe-names' (the same for the flag, the label, the registry and requests). */
function buildBundleName(raw: string, problems: string[]): string {
  const errors = bundleNameErrors(raw);
  if (errors.length > 0) problems.push(fieldInvalid('--bundle-name', raw, errors));
  return raw;
}

function buildSigningAlg(raw: string, problems: string[]): BundleSigningAlg {
  const alg = oneOf(BUNDLE_SIGNING_ALGS, raw);
  if (alg === undefined) {
    problems.push(
      `--bundle-signing-alg: invalid algorithm ${quote(raw)} (one of ${BUNDLE_SIGNING_ALGS.join(', ')})`,
    );
  }
  return alg ?? 'RS256';
}

/** `0` or `1`; empty or unset = no rego_version in the manifest. */
function buildRegoVersion(
  raw: string | undefined,
  problems: string[],
  flag = '--bundle-rego-version',
): 0 | 1 | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (raw === '0') return 0;
  if (raw === '1') return 1;
  problems.push(`${flag}: invalid rego version ${quote(raw)} (0 or 1)`);
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The validating admission webhook.

function buildAdmission(
  values: FlagValues,
  given: ReadonlySet<FlagName>,
  problems: string[],
): Config['admission'] {
  const raw = values['admission-addr'];
  const addr = buildListenAddress('admission-addr', raw, problems);
  const tlsCertFile = unlessEmpty(values['admission-tls-cert-file']);
  const tlsKeyFile = unlessEmpty(values['admission-tls-key-file']);
  const modeText = values['admission-mode'] ?? 'deny';
  const mode = modeText === 'warn' ? 'warn' : 'deny';
  if (modeText !== 'deny' && modeText !== 'warn') {
    problems.push(`--admission-mode: invalid mode ${quote(modeText)} (deny or warn)`);
  }
  // The webhook compiles as the sinks do: the bundles' version, or the pushed OPA's, unless told otherwise.
  const regoVersion =
    buildRegoVersion(values['admission-rego-version'], problems, '--admission-rego-version') ??
    buildRegoVersion(values['bundle-rego-version'], [], '--bundle-rego-version') ??
    // As buildOpa decides whether opa-sync pushes: then the pushed OPA's version is the sinks'.
    (unlessEmpty(values['bundle-addr']) === undefined || given.has('opa-url') ? 'opa' : 1);
  // Judged on the flag, not on `addr`: a malformed --admission-addr is reported once, as itself.
  if (unlessEmpty(raw) !== undefined) {
    // The API server calls webhooks over HTTPS only.
    if (tlsCertFile === undefined) problems.push('--admission-addr needs --admission-tls-cert-file');
    if (tlsKeyFile === undefined) problems.push('--admission-addr needs --admission-tls-key-file');
    if (!(values['enable-policies'] || values['enable-data'])) {
      problems.push('--admission-addr needs policy or data ConfigMaps (--enable-policies or --enable-data)');
    }
  } else {
    for (const [flag, set] of [
      ['--admission-tls-cert-file', tlsCertFile],
      ['--admission-tls-key-file', tlsKeyFile],
    ] as const) {
      if (set !== undefined) problems.push(`${flag} needs --admission-addr`);
    }
  }
  return {
    addr,
    tlsCertFile,
    tlsKeyFile,
    mode,
    protectDependents: values['admission-protect-dependents'],
    regoVersion,
  };
}

function isIPv4(text: string): boolean {
  return /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/.test(
    text,
  );
}

function isIPv6(text: string): boolean {
  // The URL parser accepts exactly the IPv6 literals (and rejects zones, which listen() cannot use).
  return text.includes(':') && URL.canParse(`http://[${text}]/`);
}

// ---------------------------------------------------------------------------------------------
// Durations: Go's time.ParseDuration syntax, or a plain number of seconds.

/** setTimeout fires at once for delays above 2^31-1 ms; refuse them instead. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The watch asks the server for a deadline of half the timeout, at least 1 s: so at least 2 s. */
function buildWatchIdleTimeout(raw: string, problems: string[]): number {
  const ms = buildDuration('kube-watch-idle-timeout', raw, problems);
  if (ms > 0 && ms < 2000) problems.push(`--kube-watch-idle-timeout must be at least 2s, got ${quote(raw)}`);
  return ms;
}

function buildDuration(
  name: 'opa-timeout' | 'opa-resync-interval' | 'kube-watch-idle-timeout' | 'watch-timeout',
  raw: string,
  problems: string[],
): number {
  const ms = parseDurationMs(raw);
  if (ms === undefined) {
    problems.push(
      `invalid argument ${quote(raw)} for "--${name}" flag: not a duration (e.g. 500ms, 5s, 1m30s, or a number of seconds)`,
    );
    return 0;
  }
  if (ms <= 0) problems.push(`--${name} must be greater than 0, got ${quote(raw)}`);
  if (ms > MAX_TIMER_MS)
    problems.push(`--${name} must be at most ${MAX_TIMER_MS}ms (about 24 days), got ${quote(raw)}`);
  return ms;
}

const NS_PER_UNIT: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  µs: 1e3, // U+00B5, as Go accepts
  μs: 1e3, // U+03BC
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};
const NUMBER = String.raw`(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)`;
const UNIT = 'ns|us|µs|μs|ms|s|m|h';
const GO_DURATION = new RegExp(`^[-+]?(?:${NUMBER}(?:${UNIT}))+$`);
const GO_DURATION_PART = new RegExp(`(${NUMBER})(${UNIT})`, 'g');
const SECONDS = new RegExp(`^[-+]?${NUMBER}$`);

/** Milliseconds, or undefined when the text is not a duration. Whole nanoseconds, as in Go. */
function parseDurationMs(text: string): number | undefined {
  if (SECONDS.test(text)) return Math.round(Number(text) * 1e9) / 1e6;
  if (!GO_DURATION.test(text)) return undefined;
  let ns = 0;
  for (const [, amount = '', unit = ''] of text.matchAll(GO_DURATION_PART)) {
    ns += Math.round(Number(amount) * (NS_PER_UNIT[unit] ?? Number.NaN));
  }
  return (text.startsWith('-') ? -ns : ns) / 1e6;
}

// ---------------------------------------------------------------------------------------------
// Kubernetes name validation, with the texts of k8s.io/apimachinery (pkg/util/validation), so that
// errors read as they do in kube-mgmt (its cmd/kube-mgmt/flag_test.go pins them).

const QUALIFIED_NAME_FMT = '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]';
const QUALIFIED_NAME_MSG =
  "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT = `(${QUALIFIED_NAME_FMT})?`;
const LABEL_VALUE_MSG =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS1123_LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT = `${DNS1123_LABEL_FMT}(\\.${DNS1123_LABEL_FMT})*`;
const DNS1123_SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

function fullMatch(fmt: string, text: string): boolean {
  return new RegExp(`^(?:${fmt})$`).test(text);
}

/** Go's len(): Kubernetes limits are in bytes. */
function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

function regexError(msg: string, fmt: string, ...examples: string[]): string {
  if (examples.length === 0) return `${msg} (regex used for validation is '${fmt}')`;
  // Kubernetes writes "'a', " + " or " between examples, hence the double spaces.
  return `${msg} (e.g. ${examples.map((e) => `'${e}', `).join(' or ')}regex used for validation is '${fmt}')`;
}

function maxLenError(length: number): string {
  return `must be no more than ${length} characters`;
}

/** k8s field.Invalid(path, value, detail).Error(). */
function fieldInvalid(path: string, value: string, errors: readonly string[]): string {
  return `${path}: Invalid value: ${quote(value)}: ${errors.join('; ')}`;
}

/** Go's %q, near enough for flag values (JSON escapes control characters the same way). */
function quote(text: string): string {
  return JSON.stringify(text);
}

function qualifiedNameErrors(value: string): string[] {
  const errors: string[] = [];
  const parts = value.split('/');
  if (parts.length > 2) {
    return [
      `a qualified name ${regexError(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, 'MyName', 'my.name', '123-abc')}` +
        " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ];
  }
  const name = parts.length === 2 ? (parts[1] ?? '') : value;
  if (parts.length === 2) {
    const prefix = parts[0] ?? '';
    if (prefix === '') errors.push('prefix part must be non-empty');
    else errors.push(...dns1123SubdomainErrors(prefix).map((e) => `prefix part ${e}`));
  }
  if (name === '') errors.push('name part must be non-empty');
  else if (byteLength(name) > 63) errors.push(`name part ${maxLenError(63)}`);
  if (!fullMatch(QUALIFIED_NAME_FMT, name)) {
    errors.push(
      `name part ${regexError(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, 'MyName', 'my.name', '123-abc')}`,
    );
  }
  return errors;
}

function labelValueErrors(value: string): string[] {
  const errors: string[] = [];
  if (byteLength(value) > 63) errors.push(maxLenError(63));
  if (!fullMatch(LABEL_VALUE_FMT, value)) {
    errors.push(regexError(LABEL_VALUE_MSG, LABEL_VALUE_FMT, 'MyValue', 'my_value', '12345'));
  }
  return errors;
}

function dns1123LabelErrors(value: string): string[] {
  const errors: string[] = [];
  if (byteLength(value) > 63) errors.push(maxLenError(63));
  if (!fullMatch(DNS1123_LABEL_FMT, value)) {
    errors.push(regexError(DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, 'my-name', '123-abc'));
  }
  return errors;
}

function dns1123SubdomainErrors(value: string): string[] {
  const errors: string[] = [];
  if (byteLength(value) > 253) errors.push(maxLenError(253));
  if (!fullMatch(DNS1123_SUBDOMAIN_FMT, value)) {
    errors.push(regexError(DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, 'example.com'));
  }
  return errors;
}

/** labels.NewRequirement(key, Equals, [value]): its field errors, key first. */
function labelRequirementErrors(key: string, value: string): string[] {
  const errors: string[] = [];
  const keyErrors = qualifiedNameErrors(key);
  if (keyErrors.length > 0) errors.push(fieldInvalid('key', key, keyErrors));
  const valueErrors = labelValueErrors(value);
  if (valueErrors.length > 0) errors.push(fieldInvalid(`values[0][${key}]`, value, valueErrors));
  return errors;
}
