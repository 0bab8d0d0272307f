// The command-line flags of opa-sync, in one table: name, kind, default and help text of each, and
// the deprecated kube-mgmt seed-era flags with what they still mean. The parser (config.ts) and the
// --help text (usage.ts) are both driven by this table, so a new flag is one entry here plus one
// field in `Config`. The deprecated/legacy mapping lives here and nowhere else.
import { nearest } from './util/edit-distance.js';

/** How a flag takes its value, as pflag does: bool flags never consume the next token. */
export type FlagKind = 'string' | 'bool' | 'list' | 'duration';

interface FlagSpecBase {
  /** One line for --help. */
  readonly help: string;
  /** A one-letter alias (`-h`); only bool flags have one, so `-hv` can be split safely. */
  readonly short?: string;
  /**
   * Set on seed-era kube-mgmt flags: accepted, listed apart in --help, and each use gives a
   * warning; their `help` says what they still do.
   */
  readonly deprecated?: true;
  /**
   * Set on flags that name a source of policies or data. Without any of them on the command line,
   * opa-sync runs the local default: the `localDefault` values below apply.
   */
  readonly source?: true;
}

export interface StringFlagSpec extends FlagSpecBase {
  readonly kind: 'string';
  /** `undefined` = not set; an empty value on the command line also means "not set". */
  readonly default: string | undefined;
  /** The value in the local default (no source flag given), unless the flag itself is given. */
  readonly localDefault?: string;
}

export interface BoolFlagSpec extends FlagSpecBase {
  readonly kind: 'bool';
  readonly default: boolean;
}

export interface ListFlagSpec extends FlagSpecBase {
  readonly kind: 'list';
  readonly default: readonly string[];
}

export interface DurationFlagSpec extends FlagSpecBase {
  readonly kind: 'duration';
  /** Go-style text (`10s`): shown as is in --help and parsed like a command-line value. */
  readonly default: string;
}

export type FlagSpec = StringFlagSpec | BoolFlagSpec | ListFlagSpec | DurationFlagSpec;

/** The flag table. Order here is the order in --help. */
export const FLAGS = {
  help: { kind: 'bool', short: 'h', default: false, help: 'show this help and exit' },
  version: { kind: 'bool', short: 'v', default: false, help: 'print the version and exit' },
  kubeconfig: {
    kind: 'string',
    default: undefined,
    source: true,
    help: 'kubeconfig file; the in-cluster configuration when not set',
  },
  'kube-watch-idle-timeout': {
    kind: 'duration',
    default: '60s',
    help: 'a Kubernetes watch silent this long (no event, bookmark or end) is taken for dead and reopened, /ready 503 meanwhile; watches end within half of it',
  },

  'opa-url': {
    kind: 'string',
    default: 'http://localhost:8181/v1',
    help: "base URL of OPA's REST API; opa-sync pushes into it unless --bundle-addr is given without --opa-url",
  },
  'opa-auth-token': { kind: 'string', default: undefined, help: 'Bearer token sent to OPA' },
  'opa-auth-token-file': {
    kind: 'string',
    default: undefined,
    help: 'file whose first line is the Bearer token sent to OPA',
  },
  'opa-ca-file': { kind: 'string', default: undefined, help: "PEM CA certificates trusted for OPA's HTTPS" },
  'opa-allow-insecure': { kind: 'bool', default: false, help: "do not verify OPA's HTTPS certificate" },
  'opa-client-cert-file': {
    kind: 'string',
    default: undefined,
    help: 'PEM client certificate for OPA (with --opa-client-key-file)',
  },
  'opa-client-key-file': {
    kind: 'string',
    default: undefined,
    help: 'PEM key of the client certificate (with --opa-client-cert-file)',
  },
  'opa-timeout': { kind: 'duration', default: '10s', help: 'time limit of each request to OPA' },
  'opa-resync-interval': {
    kind: 'duration',
    default: '5s',
    help: 'how often to check whether OPA restarted (and then reload it all)',
  },

  'log-level': { kind: 'string', default: 'info', help: 'log level: debug, info, warn or error' },
  // In the local default a person is reading: one readable line per event, unless asked otherwise.
  'log-format': { kind: 'string', default: 'json', localDefault: 'text', help: 'log format: json or text' },

  'enable-policies': { kind: 'bool', default: true, help: 'load policies from labelled ConfigMaps' },
  'policy-label': {
    kind: 'string',
    default: 'openpolicyagent.org/policy',
    help: 'label key of policy ConfigMaps',
  },
  'policy-value': { kind: 'string', default: 'rego', help: 'label value of policy ConfigMaps' },
  'enable-data': { kind: 'bool', default: true, help: 'load JSON data from labelled ConfigMaps' },
  'data-label': { kind: 'string', default: 'openpolicyagent.org/data', help: 'label key of data ConfigMaps' },
  'data-value': { kind: 'string', default: 'opa', help: 'label value of data ConfigMaps' },
  namespaces: {
    kind: 'list',
    default: ['opa'],
    source: true,
    help: "namespaces whose ConfigMaps are watched; '*' for all namespaces",
  },
  'watch-timeout': {
    kind: 'duration',
    default: '5m',
    help: 'server-side time limit of each watch of the API server (whole seconds); the watch then opens again from where it was',
  },
  'status-annotation': {
    kind: 'list',
    default: ['openpolicyagent.org/policy-status'],
    help: 'annotation keys that get the load status of each ConfigMap',
  },
  replicate: {
    kind: 'list',
    default: [],
    source: true,
    help: 'replicate a namespaced resource into OPA, as [group/]version/resource (e.g. v1/services, apps/v1/deployments)',
  },
  'replicate-cluster': {
    kind: 'list',
    default: [],
    source: true,
    help: 'replicate a resource listed at cluster scope, as [group/]version/resource (e.g. v1/namespaces)',
  },
  'replicate-path': {
    kind: 'string',
    default: 'kubernetes',
    help: "data path of replicated resources, '/'-separated; empty for the data root",
  },
  'replicate-ignore-namespaces': {
    kind: 'list',
    default: [],
    help: 'namespaces whose objects --replicate skips (not applied to --replicate-cluster)',
  },
  'replicate-cluster-by-name': {
    kind: 'bool',
    default: false,
    help: 'key --replicate-cluster objects by name only, as kube-mgmt <= 6.0 did (same-named objects collide)',
  },
  'replicate-keep-managed-fields': {
    kind: 'bool',
    default: false,
    help: 'keep metadata.managedFields in replicated objects; otherwise it is dropped',
  },
  'replicate-allow-secrets': {
    kind: 'bool',
    default: false,
    help: "allow replicating v1/secrets (every caller of OPA's data API can then read them)",
  },

  'bundle-addr': {
    kind: 'string',
    default: undefined,
    localDefault: '127.0.0.1:8282',
    help: 'HOST:PORT serving policies as OPA bundles (e.g. 0.0.0.0:8282, :8282); without an explicit --opa-url, opa-sync then pushes into no OPA; off when not set',
  },
  'bundle-name': {
    kind: 'string',
    default: 'policies',
    help: "name of the bundle built from the policy ConfigMaps: '/'-separated segments of [a-z0-9._-]",
  },
  'policies-dir': {
    kind: 'string',
    default: undefined,
    source: true,
    // Not a default of the flag itself: given, it is a source, so no local default applies.
    localDefault: 'policies',
    help: 'local folder whose *.rego and data.json/data.yaml files are served as the bundle (watched live); see "Local default"',
  },
  'bundles-dir': {
    kind: 'string',
    default: undefined,
    localDefault: 'bundles',
    help: 'directory where built bundles are also written, as <dir>/<name>.tar.gz (also without --bundle-addr)',
  },
  'bundle-token-file': {
    kind: 'string',
    default: undefined,
    help: 'file whose first line is the Bearer token bundle clients must send (with --bundle-addr)',
  },
  'bundle-tls-cert-file': {
    kind: 'string',
    default: undefined,
    help: 'PEM certificate for serving bundles over HTTPS (with --bundle-tls-key-file and --bundle-addr)',
  },
  'bundle-tls-key-file': {
    kind: 'string',
    default: undefined,
    help: 'PEM key of the bundle server certificate (with --bundle-tls-cert-file and --bundle-addr)',
  },
  'bundle-signing-key': {
    kind: 'string',
    default: undefined,
    help: 'PEM private key (or HMAC secret for HS*) that signs built bundles; unsigned when not set',
  },
  'bundle-signing-alg': {
    kind: 'string',
    default: 'RS256',
    help: 'bundle signing algorithm: RS256/384/512, PS256/384/512, ES256/384/512 or HS256/384/512 (with --bundle-signing-key)',
  },
  'bundle-signing-keyid': {
    kind: 'string',
    default: undefined,
    help: 'key id written into bundle signatures (with --bundle-signing-key)',
  },
  'bundle-rego-version': {
    kind: 'string',
    default: undefined,
    help: 'rego_version written to the bundle manifest: 0 or 1; not written when not set',
  },
  'bundle-replicated': {
    kind: 'string',
    default: undefined,
    help: 'also serve the replicated resources as a data-only bundle of this name, laid out as pushed (data.kubernetes.<resource>…); off when not set',
  },
  'bundle-deltas': {
    kind: 'bool',
    default: false,
    help: 'offer delta bundles of the --bundle-replicated bundle to OPAs that ask for them (not for OPAs with persist: true; not with signing)',
  },
  'oci-repository': {
    kind: 'list',
    default: [],
    help: "push each bundle revision to an OCI registry: [BUNDLE=]HOST[:PORT]/REPO[/…] ('{bundle}' in the path: every bundle; without BUNDLE=: the --bundle-name bundle)",
  },
  'oci-tag': {
    kind: 'string',
    default: 'latest',
    help: 'moving tag set on every pushed revision, beside the revision tag (with --oci-repository)',
  },
  'oci-docker-config': {
    kind: 'string',
    default: undefined,
    help: 'docker config.json whose "auths" entry for the registry host logs in (with --oci-repository)',
  },
  'oci-username': {
    kind: 'string',
    default: undefined,
    help: 'user for the OCI registry, basic auth or its token service (with --oci-password-file)',
  },
  'oci-password-file': {
    kind: 'string',
    default: undefined,
    help: 'file whose first line is the OCI registry password (with --oci-username)',
  },
  'oci-token-file': {
    kind: 'string',
    default: undefined,
    help: 'file whose first line is a Bearer token sent to the OCI registry as it is',
  },
  'oci-ca-file': {
    kind: 'string',
    default: undefined,
    help: "PEM CA certificates trusted for the OCI registry's HTTPS, besides the system's",
  },
  'oci-plain-http': {
    kind: 'bool',
    default: false,
    help: 'talk to the OCI registry over plain http (a registry on loopback); https otherwise',
  },
  'opa-bin': {
    kind: 'string',
    default: undefined,
    help: 'opa binary that validates built bundles; found on PATH when not set',
  },

  'health-endpoint': {
    kind: 'string',
    default: undefined,
    help: 'HOST:PORT serving /health, /ready, /metrics and the web page /ui (e.g. 0.0.0.0:8000, :8000); off when not set',
  },

  'admission-addr': {
    kind: 'string',
    default: undefined,
    help: 'HOST:PORT serving the validating admission webhook POST /validate/configmaps over HTTPS (with the two TLS flags); off when not set',
  },
  'admission-tls-cert-file': {
    kind: 'string',
    default: undefined,
    help: 'PEM certificate of the admission webhook (reloaded when the file changes)',
  },
  'admission-tls-key-file': {
    kind: 'string',
    default: undefined,
    help: 'PEM key of the admission webhook certificate (reloaded when the file changes)',
  },
  'admission-mode': {
    kind: 'string',
    default: 'deny',
    help: 'deny: refuse ConfigMaps whose Rego or JSON is broken; warn: admit them with a warning instead (for rollout)',
  },
  'admission-protect-dependents': {
    kind: 'bool',
    default: false,
    help: 'refuse an update or delete that breaks other policy ConfigMaps (otherwise admitted with a warning naming them)',
  },
  'admission-rego-version': {
    kind: 'string',
    default: undefined,
    help: "Rego version the webhook compiles with: 0 or 1; when not set, --bundle-rego-version's, else the pushed OPA's (asked with a query), else 1",
  },

  // Seed-era kube-mgmt flags (see mapLegacyFlags for what each still does).
  policies: {
    kind: 'list',
    default: [],
    deprecated: true,
    source: true,
    help: 'kube-mgmt <= 4.x: watch these namespaces and load EVERY ConfigMap in them as a policy',
  },
  'require-policy-label': {
    kind: 'bool',
    default: false,
    deprecated: true,
    help: 'kube-mgmt <= 4.x: with --policies, policy ConfigMaps also need the policy label',
  },
  'pod-name': { kind: 'string', default: undefined, deprecated: true, help: 'kube-mgmt <= 8.5.0: no effect' },
  'pod-namespace': {
    kind: 'string',
    default: undefined,
    deprecated: true,
    help: 'kube-mgmt <= 8.5.0: no effect',
  },
  'replicate-resync': {
    kind: 'duration',
    default: '60s',
    deprecated: true,
    help: 'kube-mgmt <= 6.x: no effect',
  },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

const USE_REPLICATE =
  'name the resources to replicate with --replicate (namespaced) and --replicate-cluster (cluster scope) ' +
  'instead, e.g. --replicate-cluster=networking.k8s.io/v1/networkpolicies (opa-kube-mgmt chart: ' +
  'mgmt.replicate.namespace / mgmt.replicate.cluster, with mgmt.replicate.auto off)';

/**
 * kube-mgmt flags that opa-sync refuses (exit 2) instead of accepting them as unknown: what they ask
 * for is not implemented, and ignoring them would start a sidecar that silently does less than asked.
 * Each takes a value as a string flag does; an empty value means "not set", as in kube-mgmt.
 */
export const REFUSED_FLAGS: Readonly<Record<string, string>> = {
  'opa-config':
    "--opa-config is kube-mgmt's automatic replication (kube-mgmt 9.2+ analyses the policies of the " +
    'bundles in that OPA configuration for the data.kubernetes.<resource> references they use, and ' +
    `replicates those): opa-sync does not implement it. Remove the flag and ${USE_REPLICATE}`,
  'analysis-entrypoint':
    "--analysis-entrypoint only serves kube-mgmt's automatic replication (--opa-config), which " +
    `opa-sync does not implement. Remove the flag and ${USE_REPLICATE}`,
};

/** The refusal text of a kube-mgmt flag opa-sync refuses, or undefined (never an inherited property). */
export function refusedFlag(name: string): string | undefined {
  return Object.hasOwn(REFUSED_FLAGS, name) ? REFUSED_FLAGS[name] : undefined;
}

/** The raw value a flag of a given spec holds after parsing (durations are still text). */
export type FlagValue<S extends FlagSpec> = S extends BoolFlagSpec
  ? boolean
  : S extends ListFlagSpec
    ? string[]
    : S extends DurationFlagSpec
      ? string
      : string | undefined;

/** The raw value of every flag of the table, typed per flag. */
export type FlagValues = { -readonly [K in FlagName]: FlagValue<(typeof FLAGS)[K]> };

/** Looks a flag up by name; `undefined` for an unknown name (never an inherited property). */
export function flagSpec(name: string): FlagSpec | undefined {
  return Object.hasOwn(FLAGS, name) ? (FLAGS as Record<string, FlagSpec>)[name] : undefined;
}

/**
 * The flags a mistyped long flag name most likely meant (`opa-ulr` → `opa-url`): the nearest by edit
 * distance in the table (ties all), none when nothing is near enough to be a slip.
 */
export function suggestFlags(name: string): FlagName[] {
  return nearest(
    name,
    flagEntries().map(([flag]) => flag),
  );
}

/** Every flag of the table with its spec, in table order. */
export function flagEntries(): Array<[FlagName, FlagSpec]> {
  return Object.entries(FLAGS) as Array<[FlagName, FlagSpec]>;
}

/** The defaults of the table, as fresh (mutable) values. */
export function defaultFlagValues(): FlagValues {
  const values = Object.fromEntries(
    flagEntries().map(([name, spec]) => [name, spec.kind === 'list' ? [...spec.default] : spec.default]),
  );
  // Object.fromEntries loses the per-key types; each entry above is built from its own spec.
  return values as FlagValues;
}

/**
 * A default as --help shows it: `true`, `10s`, `"rego"`, `opa,kube-system`, or `none`; then the local
 * default's value, if it has one: `"json"; local default "text"`.
 */
export function formatDefault(spec: FlagSpec): string {
  const plain = formatPlainDefault(spec);
  return spec.kind === 'string' && spec.localDefault !== undefined
    ? `${plain}; local default ${JSON.stringify(spec.localDefault)}`
    : plain;
}

function formatPlainDefault(spec: FlagSpec): string {
  switch (spec.kind) {
    case 'bool':
      return String(spec.default);
    case 'duration':
      return spec.default;
    case 'list':
      return spec.default.length === 0 ? 'none' : spec.default.join(',');
    case 'string':
      return spec.default === undefined ? 'none' : JSON.stringify(spec.default);
  }
}

/** What the seed-era flags change in the configuration, and the warnings they give. */
export interface LegacyMapping {
  /** The namespaces to watch, raw (not yet validated): --namespaces, merged with --policies. */
  namespaces: string[];
  /** False only for seed-era `--policies` without `--require-policy-label`. */
  policyRequireLabel: boolean;
  warnings: string[];
}

/**
 * Maps the deprecated kube-mgmt flags onto today's configuration. Old manifests keep the meaning
 * they had (kube-mgmt itself silently ignored them after 6.0.0, which broke policies on upgrade,
 * kube-mgmt #205/#229/#242), and each use is named in a warning so the manifest gets fixed.
 */
export function mapLegacyFlags(values: FlagValues, given: ReadonlySet<FlagName>): LegacyMapping {
  const warnings: string[] = [];
  let namespaces = values.namespaces;
  let policyRequireLabel = true;
  const label = `${values['policy-label'] ?? ''}=${values['policy-value'] ?? ''}`;

  if (given.has('policies')) {
    // Seed era: --policies named the namespaces; with --namespaces too, both sets are watched.
    namespaces = given.has('namespaces') ? [...values.namespaces, ...values.policies] : values.policies;
    policyRequireLabel = values['require-policy-label'];
    warnings.push(
      `--policies is deprecated (kube-mgmt removed it in 6.0.0): its namespaces are watched` +
        (given.has('namespaces') ? ' together with those of --namespaces' : '') +
        (policyRequireLabel
          ? `, and with --require-policy-label only ConfigMaps labelled ${label} are policies`
          : `, and EVERY ConfigMap in the watched namespaces is loaded as a policy, labelled ${label} or not`) +
        `; use --namespaces and label the policy ConfigMaps instead`,
    );
  } else if (given.has('require-policy-label')) {
    warnings.push(
      `--require-policy-label is deprecated and has no effect without --policies: ` +
        `policy ConfigMaps always need the label ${label}`,
    );
  }

  for (const [name, spec] of flagEntries()) {
    if (spec.deprecated && given.has(name) && name !== 'policies' && name !== 'require-policy-label') {
      warnings.push(`--${name} is deprecated and has no effect: ignored`);
    }
  }
  return { namespaces, policyRequireLabel, warnings };
}
