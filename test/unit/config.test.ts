// The command-line configuration: every flag's default and syntax (pflag's, as kube-mgmt uses), the
// seed-era kube-mgmt flags and their warnings, unknown flags, every validation error's text, and the
// --help text generated from the flag table.
import { expect } from 'chai';
import { formatResource, parseArgs, type Config } from '../../src/config.js';
import { FLAGS, flagEntries, formatDefault, type FlagName } from '../../src/config-flags.js';
import { usage } from '../../src/usage.js';
import { ConfigError } from '../../src/util/errors.js';
import { configProblems } from '../harness/config.js';

function run(...argv: string[]): { config: Config; warnings: string[] } {
  const result = parseArgs(argv);
  if (result.kind !== 'run') expect.fail(`expected a configuration, got ${result.kind}`);
  return result;
}

function problemsOf(...argv: string[]): readonly string[] {
  const problems = configProblems(...argv);
  if (problems.length === 0) expect.fail(`expected a ConfigError for ${argv.join(' ')}`);
  return problems;
}

/** The flags of a webhook that serves. */
const ADMISSION = [
  '--admission-addr=127.0.0.1:8443',
  '--admission-tls-cert-file=/c',
  '--admission-tls-key-file=/k',
] as const;

const DEFAULTS: Config = {
  kubeconfig: undefined,
  kubeWatchIdleTimeoutMs: 60_000,
  watchTimeoutSeconds: 300,
  opa: {
    url: 'http://localhost:8181/v1',
    authToken: undefined,
    authTokenFile: undefined,
    caFile: undefined,
    allowInsecure: false,
    clientCertFile: undefined,
    clientKeyFile: undefined,
    timeoutMs: 10_000,
    resyncIntervalMs: 5_000,
    push: true,
  },
  log: { level: 'info', format: 'json' },
  policies: { enabled: true, label: 'openpolicyagent.org/policy', value: 'rego', requireLabel: true },
  data: { enabled: true, label: 'openpolicyagent.org/data', value: 'opa' },
  namespaces: { all: false, names: ['opa'] },
  statusAnnotations: ['openpolicyagent.org/policy-status'],
  healthEndpoint: undefined,
  replication: {
    namespaced: [],
    cluster: [],
    path: ['kubernetes'],
    ignoreNamespaces: [],
    clusterByName: false,
    keepManagedFields: false,
    allowSecrets: false,
  },
  bundles: {
    addr: undefined,
    defaultName: 'policies',
    dir: undefined,
    tokenFile: undefined,
    tlsCertFile: undefined,
    tlsKeyFile: undefined,
    signingKeyFile: undefined,
    signingAlg: 'RS256',
    signingKeyId: undefined,
    regoVersion: undefined,
    opaBin: undefined,
    replicated: undefined,
    deltas: false,
  },
  admission: {
    addr: undefined,
    tlsCertFile: undefined,
    tlsKeyFile: undefined,
    mode: 'deny',
    protectDependents: false,
    regoVersion: 'opa',
  },
  folder: undefined,
  configmaps: true,
  oci: undefined,
};

// k8s.io/apimachinery's texts, as pinned by kube-mgmt's cmd/kube-mgmt/flag_test.go.
/** 253 characters in segments of at most 63: the longest name the bundle-name rule accepts. */
const LONGEST_BUNDLE_NAME = `${'a'.repeat(62)}/${'b'.repeat(62)}/${'c'.repeat(63)}/${'d'.repeat(63)}`;
const KEY_RULE =
  "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_RULE =
  "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const NAMESPACE_RULE =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_RULE =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

describe('configuration (parseArgs)', () => {
  describe('defaults', () => {
    it('gives every flag its default when none is given, without warnings', () => {
      expect(parseArgs([])).to.deep.equal({ kind: 'run', config: DEFAULTS, warnings: [] });
    });

    it('watches namespace opa by default, not kube-mgmt 8.5.1\'s empty ""', () => {
      expect(run().config.namespaces).to.deep.equal({ all: false, names: ['opa'] });
    });
  });

  describe('flag forms', () => {
    const cases: Array<{ argv: string[]; pick: (c: Config) => unknown; expected: unknown }> = [
      { argv: ['--kubeconfig=/k/config'], pick: (c) => c.kubeconfig, expected: '/k/config' },
      { argv: ['--kubeconfig', '/k/config'], pick: (c) => c.kubeconfig, expected: '/k/config' },
      { argv: ['--kubeconfig='], pick: (c) => c.kubeconfig, expected: undefined },
      { argv: ['--opa-url=https://opa:8443/v1/'], pick: (c) => c.opa.url, expected: 'https://opa:8443/v1' },
      {
        argv: ['--opa-url', 'http://127.0.0.1:8181/v1//'],
        pick: (c) => c.opa.url,
        expected: 'http://127.0.0.1:8181/v1',
      },
      {
        argv: ['--opa-url=http://a/v1', '--opa-url=http://b/v1'],
        pick: (c) => c.opa.url,
        expected: 'http://b/v1',
      },
      { argv: ['--opa-auth-token=s3cret'], pick: (c) => c.opa.authToken, expected: 's3cret' },
      // Trimmed, as the client sends it.
      { argv: ['--opa-auth-token= s3cret '], pick: (c) => c.opa.authToken, expected: 's3cret' },
      { argv: ['--opa-auth-token-file', '/t'], pick: (c) => c.opa.authTokenFile, expected: '/t' },
      { argv: ['--opa-auth-token-file='], pick: (c) => c.opa.authTokenFile, expected: undefined },
      {
        argv: ['--opa-url=https://opa/v1', '--opa-ca-file=/ca.pem'],
        pick: (c) => c.opa.caFile,
        expected: '/ca.pem',
      },
      { argv: ['--opa-allow-insecure'], pick: (c) => c.opa.allowInsecure, expected: true },
      { argv: ['--opa-allow-insecure=true'], pick: (c) => c.opa.allowInsecure, expected: true },
      {
        argv: ['--opa-allow-insecure', '--opa-allow-insecure=false'],
        pick: (c) => c.opa.allowInsecure,
        expected: false,
      },
      {
        argv: [
          '--opa-url=https://opa/v1',
          '--opa-client-cert-file=/c.pem',
          '--opa-client-key-file',
          '/k.pem',
        ],
        pick: (c) => [c.opa.clientCertFile, c.opa.clientKeyFile],
        expected: ['/c.pem', '/k.pem'],
      },
      { argv: ['--opa-timeout=500ms'], pick: (c) => c.opa.timeoutMs, expected: 500 },
      { argv: ['--opa-timeout', '1m30s'], pick: (c) => c.opa.timeoutMs, expected: 90_000 },
      { argv: ['--opa-timeout=2'], pick: (c) => c.opa.timeoutMs, expected: 2_000 },
      { argv: ['--opa-timeout=1.5'], pick: (c) => c.opa.timeoutMs, expected: 1_500 },
      { argv: ['--opa-timeout=1.1s'], pick: (c) => c.opa.timeoutMs, expected: 1_100 },
      { argv: ['--opa-timeout=1h2m3s4ms'], pick: (c) => c.opa.timeoutMs, expected: 3_723_004 },
      { argv: ['--opa-timeout=250us'], pick: (c) => c.opa.timeoutMs, expected: 0.25 },
      { argv: ['--opa-timeout=1500000ns'], pick: (c) => c.opa.timeoutMs, expected: 1.5 },
      { argv: ['--kube-watch-idle-timeout=5s'], pick: (c) => c.kubeWatchIdleTimeoutMs, expected: 5_000 },
      { argv: ['--opa-resync-interval=1m'], pick: (c) => c.opa.resyncIntervalMs, expected: 60_000 },
      { argv: ['--opa-resync-interval', '.5s'], pick: (c) => c.opa.resyncIntervalMs, expected: 500 },
      { argv: ['--watch-timeout=5s'], pick: (c) => c.watchTimeoutSeconds, expected: 5 },
      { argv: ['--watch-timeout=1500ms'], pick: (c) => c.watchTimeoutSeconds, expected: 2 },
      { argv: ['--log-level=debug'], pick: (c) => c.log.level, expected: 'debug' },
      { argv: ['--log-level', 'warn'], pick: (c) => c.log.level, expected: 'warn' },
      { argv: ['--log-level=error'], pick: (c) => c.log.level, expected: 'error' },
      { argv: ['--log-level=debug', '--log-level=warn'], pick: (c) => c.log.level, expected: 'warn' },
      { argv: ['--log-format=text'], pick: (c) => c.log.format, expected: 'text' },
      { argv: ['--enable-policies=false'], pick: (c) => c.policies.enabled, expected: false },
      { argv: ['--enable-policies'], pick: (c) => c.policies.enabled, expected: true },
      { argv: ['--enable-data=false'], pick: (c) => c.data.enabled, expected: false },
      { argv: ['--enable-data=0'], pick: (c) => c.data.enabled, expected: false },
      { argv: ['--enable-data=F'], pick: (c) => c.data.enabled, expected: false },
      { argv: ['--enable-data=TRUE'], pick: (c) => c.data.enabled, expected: true },
      {
        argv: ['--policy-label=example.com/policy', '--policy-value', 'v1'],
        pick: (c) => c.policies,
        expected: { enabled: true, label: 'example.com/policy', value: 'v1', requireLabel: true },
      },
      { argv: ['--policy-value='], pick: (c) => c.policies.value, expected: '' },
      {
        argv: ['--data-label', 'team', '--data-value=json'],
        pick: (c) => c.data,
        expected: { enabled: true, label: 'team', value: 'json' },
      },
      { argv: ['--namespaces=b,a'], pick: (c) => c.namespaces, expected: { all: false, names: ['a', 'b'] } },
      { argv: ['--namespaces', 'x'], pick: (c) => c.namespaces, expected: { all: false, names: ['x'] } },
      {
        argv: ['--namespaces=c', '--namespaces=a,c', '--namespaces', 'b'],
        pick: (c) => c.namespaces,
        expected: { all: false, names: ['a', 'b', 'c'] },
      },
      {
        argv: ['--namespaces=a, b,'],
        pick: (c) => c.namespaces,
        expected: { all: false, names: ['a', 'b'] },
      },
      { argv: ['--namespaces=*'], pick: (c) => c.namespaces, expected: { all: true, names: [] } },
      {
        argv: ['--namespaces=a', '--namespaces=*'],
        pick: (c) => c.namespaces,
        expected: { all: true, names: [] },
      },
      {
        argv: ['--enable-policies=false', '--enable-data=false', '--namespaces='],
        pick: (c) => c.namespaces,
        expected: { all: false, names: [] },
      },
      {
        argv: ['--status-annotation=example.com/status', '--status-annotation', 'b,example.com/status'],
        pick: (c) => c.statusAnnotations,
        expected: ['example.com/status', 'b'],
      },
      {
        argv: ['--status-annotation=Example.COM/Status'],
        pick: (c) => c.statusAnnotations,
        expected: ['Example.COM/Status'],
      },
      { argv: ['--status-annotation='], pick: (c) => c.statusAnnotations, expected: [] },
      {
        argv: ['--health-endpoint=0.0.0.0:8000'],
        pick: (c) => c.healthEndpoint,
        expected: { host: '0.0.0.0', port: 8000 },
      },
      {
        argv: ['--health-endpoint', '127.0.0.1:0'],
        pick: (c) => c.healthEndpoint,
        expected: { host: '127.0.0.1', port: 0 },
      },
      {
        argv: ['--health-endpoint=:8000'],
        pick: (c) => c.healthEndpoint,
        expected: { host: '0.0.0.0', port: 8000 },
      },
      {
        argv: ['--health-endpoint=[::1]:9000'],
        pick: (c) => c.healthEndpoint,
        expected: { host: '::1', port: 9000 },
      },
      {
        argv: ['--health-endpoint=localhost:65535'],
        pick: (c) => c.healthEndpoint,
        expected: { host: 'localhost', port: 65535 },
      },
      { argv: ['--health-endpoint='], pick: (c) => c.healthEndpoint, expected: undefined },
      { argv: ['--'], pick: (c) => c, expected: DEFAULTS },
    ];
    for (const { argv, pick, expected } of cases) {
      it(`${argv.join(' ')}`, () => {
        const { config, warnings } = run(...argv);
        expect(pick(config)).to.deep.equal(expected);
        expect(warnings).to.deep.equal([]);
      });
    }

    it('accepts every flag of the table (none is taken for an unknown flag)', () => {
      // A Record over FlagName: adding a flag to the table without a sample here fails to compile.
      const samples: Record<FlagName, string[]> = {
        help: ['--help=false'],
        version: ['--version=false'],
        kubeconfig: ['--kubeconfig=/k'],
        'kube-watch-idle-timeout': ['--kube-watch-idle-timeout=10s'],
        'opa-url': ['--opa-url=http://opa/v1'],
        'opa-auth-token': ['--opa-auth-token=t'],
        'opa-auth-token-file': ['--opa-auth-token-file=/t'],
        'opa-ca-file': ['--opa-ca-file=/ca'],
        'opa-allow-insecure': ['--opa-allow-insecure=false'],
        'opa-client-cert-file': ['--opa-client-cert-file=/c', '--opa-client-key-file=/k'],
        'opa-client-key-file': ['--opa-client-key-file=/k', '--opa-client-cert-file=/c'],
        'opa-timeout': ['--opa-timeout=1s'],
        'opa-resync-interval': ['--opa-resync-interval=1s'],
        'watch-timeout': ['--watch-timeout=30s'],
        'log-level': ['--log-level=info'],
        'log-format': ['--log-format=json'],
        'enable-policies': ['--enable-policies=true'],
        'policy-label': ['--policy-label=p'],
        'policy-value': ['--policy-value=v'],
        'enable-data': ['--enable-data=true'],
        'data-label': ['--data-label=d'],
        'data-value': ['--data-value=v'],
        namespaces: ['--namespaces=n'],
        'status-annotation': ['--status-annotation=s'],
        'health-endpoint': ['--health-endpoint=:1'],
        replicate: ['--replicate=v1/pods'],
        'replicate-cluster': ['--replicate-cluster=v1/nodes'],
        'replicate-path': ['--replicate-path=k8s'],
        'replicate-ignore-namespaces': ['--replicate-ignore-namespaces=kube-system'],
        'replicate-cluster-by-name': ['--replicate-cluster-by-name'],
        'replicate-keep-managed-fields': ['--replicate-keep-managed-fields'],
        'replicate-allow-secrets': ['--replicate-allow-secrets'],
        'bundle-addr': ['--bundle-addr=:8282'],
        'bundle-name': ['--bundle-name=authz'],
        'bundles-dir': ['--bundles-dir=/b'],
        'policies-dir': ['--policies-dir=/p'],
        'bundle-token-file': ['--bundle-token-file=/t', '--bundle-addr=:8282'],
        'bundle-tls-cert-file': ['--bundle-tls-cert-file=/c', '--bundle-tls-key-file=/k', '--bundle-addr=:1'],
        'bundle-tls-key-file': ['--bundle-tls-key-file=/k', '--bundle-tls-cert-file=/c', '--bundle-addr=:1'],
        'bundle-signing-key': ['--bundle-signing-key=/s', '--bundles-dir=/b'],
        'bundle-signing-alg': ['--bundle-signing-alg=ES256', '--bundle-signing-key=/s', '--bundles-dir=/b'],
        'bundle-signing-keyid': ['--bundle-signing-keyid=k1', '--bundle-signing-key=/s', '--bundle-addr=:1'],
        'bundle-rego-version': ['--bundle-rego-version=1', '--bundles-dir=/b'],
        'opa-bin': ['--opa-bin=/usr/local/bin/opa'],
        'admission-addr': [...ADMISSION],
        'admission-tls-cert-file': [...ADMISSION],
        'admission-tls-key-file': [...ADMISSION],
        'admission-mode': ['--admission-mode=warn'],
        'admission-protect-dependents': ['--admission-protect-dependents'],
        'admission-rego-version': ['--admission-rego-version=0'],
        'bundle-replicated': ['--bundle-replicated=k8s', '--replicate=v1/pods', '--bundle-addr=:1'],
        'bundle-deltas': [
          '--bundle-deltas',
          '--bundle-replicated=k8s',
          '--replicate=v1/pods',
          '--bundle-addr=:1',
        ],
        'oci-repository': ['--oci-repository=r.example/opa/x', '--bundles-dir=/b'],
        'oci-tag': ['--oci-tag=stable', '--oci-repository=r.example/x', '--bundles-dir=/b'],
        'oci-docker-config': ['--oci-docker-config=/d', '--oci-repository=r.example/x', '--bundles-dir=/b'],
        'oci-username': [
          '--oci-username=u',
          '--oci-password-file=/p',
          '--oci-repository=r.example/x',
          '--bundles-dir=/b',
        ],
        'oci-password-file': [
          '--oci-password-file=/p',
          '--oci-username=u',
          '--oci-repository=r.example/x',
          '--bundles-dir=/b',
        ],
        'oci-token-file': ['--oci-token-file=/t', '--oci-repository=r.example/x', '--bundles-dir=/b'],
        'oci-ca-file': ['--oci-ca-file=/ca', '--oci-repository=r.example/x', '--bundles-dir=/b'],
        'oci-plain-http': ['--oci-plain-http', '--oci-repository=127.0.0.1:5000/x', '--bundles-dir=/b'],
        policies: ['--policies=n'],
        'require-policy-label': ['--require-policy-label'],
        'pod-name': ['--pod-name=p'],
        'pod-namespace': ['--pod-namespace=p'],
        'replicate-resync': ['--replicate-resync=60s'],
      };
      for (const [name, argv] of Object.entries(samples)) {
        const { warnings } = run(...argv);
        expect(warnings.join('\n'), name).not.to.include('unknown flag');
      }
    });
  });

  describe('admission flags', () => {
    it('builds the webhook configuration, the Rego version following --bundle-rego-version', () => {
      expect(
        run(...ADMISSION, '--admission-mode=warn', '--admission-protect-dependents').config.admission,
      ).to.deep.equal({
        addr: { host: '127.0.0.1', port: 8443 },
        tlsCertFile: '/c',
        tlsKeyFile: '/k',
        mode: 'warn',
        protectDependents: true,
        regoVersion: 'opa',
      });
      // A pure bundle server pushes into no OPA: v1 unless the bundles say otherwise.
      expect(run(...ADMISSION, '--bundle-addr=:8282').config.admission.regoVersion).to.equal(1);
      expect(
        run(...ADMISSION, '--bundle-rego-version=0', '--bundles-dir=/b').config.admission.regoVersion,
      ).to.equal(0);
      expect(
        run(...ADMISSION, '--bundle-rego-version=0', '--bundles-dir=/b', '--admission-rego-version=1').config
          .admission.regoVersion,
      ).to.equal(1);
    });

    it('lists every problem of the admission flags', () => {
      expect(
        problemsOf('--admission-addr=:8443', '--admission-mode=loud', '--admission-rego-version=2'),
      ).to.deep.equal([
        '--admission-mode: invalid mode "loud" (deny or warn)',
        '--admission-rego-version: invalid rego version "2" (0 or 1)',
        '--admission-addr needs --admission-tls-cert-file',
        '--admission-addr needs --admission-tls-key-file',
      ]);
      expect(problemsOf('--admission-tls-cert-file=/c')).to.deep.equal([
        '--admission-tls-cert-file needs --admission-addr',
      ]);
      expect(problemsOf('--admission-addr=nope')).to.include(
        '--admission-addr: "nope" is not HOST:PORT (e.g. 0.0.0.0:8443 or :8443)',
      );
      expect(problemsOf(...ADMISSION.slice(1), '--admission-addr=:8443', '--policies-dir=/p')).to.include(
        '--admission-addr needs the ConfigMap source (--kubeconfig or --namespaces), not a policies folder alone',
      );
      expect(problemsOf(...ADMISSION, '--enable-policies=false', '--enable-data=false')).to.include(
        '--admission-addr needs policy or data ConfigMaps (--enable-policies or --enable-data)',
      );
    });
  });

  describe('replication flags', () => {
    const core = (version: string, resource: string) => ({ group: '', version, resource });
    const cases: Array<{ argv: string[]; pick: (c: Config) => unknown; expected: unknown }> = [
      {
        argv: ['--replicate=v1/services'],
        pick: (c) => c.replication.namespaced,
        expected: [core('v1', 'services')],
      },
      {
        argv: ['--replicate', 'apps/v1/deployments'],
        pick: (c) => c.replication.namespaced,
        expected: [{ group: 'apps', version: 'v1', resource: 'deployments' }],
      },
      {
        argv: ['--replicate=v1/services', '--replicate', 'v1/configmaps', '--replicate=apps/v1/deployments'],
        pick: (c) => c.replication.namespaced,
        expected: [
          core('v1', 'services'),
          core('v1', 'configmaps'),
          { group: 'apps', version: 'v1', resource: 'deployments' },
        ],
      },
      {
        argv: ['--replicate=v1/services,networking.k8s.io/v1/networkpolicies, v1/pods,'],
        pick: (c) => c.replication.namespaced,
        expected: [
          core('v1', 'services'),
          { group: 'networking.k8s.io', version: 'v1', resource: 'networkpolicies' },
          core('v1', 'pods'),
        ],
      },
      // Lower-cased as kube-mgmt does (its flag_test.go: example.org/Foo/bar), then de-duplicated in order.
      {
        argv: [
          '--replicate=example.org/Foo/bar',
          '--replicate=v1/pods,EXAMPLE.ORG/foo/BAR',
          '--replicate=V1/Pods',
        ],
        pick: (c) => c.replication.namespaced,
        expected: [{ group: 'example.org', version: 'foo', resource: 'bar' }, core('v1', 'pods')],
      },
      {
        argv: ['--replicate=v2/corge'],
        pick: (c) => c.replication.namespaced,
        expected: [core('v2', 'corge')],
      },
      {
        argv: ['--replicate-cluster=v1/namespaces'],
        pick: (c) => c.replication,
        expected: { ...DEFAULTS.replication, cluster: [core('v1', 'namespaces')] },
      },
      {
        argv: [
          '--replicate-cluster',
          'Networking.K8s.io/V1/NetworkPolicies',
          '--replicate-cluster=v1/nodes,v1/namespaces',
        ],
        pick: (c) => c.replication.cluster,
        expected: [
          { group: 'networking.k8s.io', version: 'v1', resource: 'networkpolicies' },
          core('v1', 'nodes'),
          core('v1', 'namespaces'),
        ],
      },
      { argv: ['--replicate-path=k8s'], pick: (c) => c.replication.path, expected: ['k8s'] },
      { argv: ['--replicate-path', 'a/b'], pick: (c) => c.replication.path, expected: ['a', 'b'] },
      { argv: ['--replicate-path=/a//b/'], pick: (c) => c.replication.path, expected: ['a', 'b'] },
      { argv: ['--replicate-path='], pick: (c) => c.replication.path, expected: [] },
      { argv: ['--replicate-path=/'], pick: (c) => c.replication.path, expected: [] },
      {
        argv: [
          '--replicate-ignore-namespaces=kube-system,kube-public',
          '--replicate-ignore-namespaces',
          'opa',
        ],
        pick: (c) => c.replication.ignoreNamespaces,
        expected: ['kube-system', 'kube-public', 'opa'],
      },
      {
        argv: ['--replicate-ignore-namespaces=a,,a, b'],
        pick: (c) => c.replication.ignoreNamespaces,
        expected: ['a', 'b'],
      },
      // What the opa-kube-mgmt chart passes when no namespace is ignored.
      { argv: ['--replicate-ignore-namespaces='], pick: (c) => c.replication.ignoreNamespaces, expected: [] },
      { argv: ['--replicate-cluster-by-name'], pick: (c) => c.replication.clusterByName, expected: true },
      {
        argv: ['--replicate-cluster-by-name', '--replicate-cluster-by-name=false'],
        pick: (c) => c.replication.clusterByName,
        expected: false,
      },
      {
        argv: ['--replicate-keep-managed-fields'],
        pick: (c) => c.replication.keepManagedFields,
        expected: true,
      },
      {
        argv: ['--replicate-keep-managed-fields=false'],
        pick: (c) => c.replication.keepManagedFields,
        expected: false,
      },
      { argv: ['--replicate-allow-secrets'], pick: (c) => c.replication.allowSecrets, expected: true },
      {
        argv: ['--replicate=v1/secrets,v1/pods', '--replicate-allow-secrets'],
        pick: (c) => c.replication.namespaced,
        expected: [core('v1', 'secrets'), core('v1', 'pods')],
      },
      {
        argv: ['--replicate-cluster=V1/Secrets', '--replicate-allow-secrets=true'],
        pick: (c) => c.replication.cluster,
        expected: [core('v1', 'secrets')],
      },
      // Only the core group's Secrets: a resource named `secrets` in another group is not one.
      {
        argv: ['--replicate=example.com/v1/secrets'],
        pick: (c) => c.replication.namespaced,
        expected: [{ group: 'example.com', version: 'v1', resource: 'secrets' }],
      },
    ];
    for (const { argv, pick, expected } of cases) {
      it(`${argv.join(' ')}`, () => {
        const { config, warnings } = run(...argv);
        expect(pick(config)).to.deep.equal(expected);
        expect(warnings).to.deep.equal([]);
      });
    }

    it('refuses a resource in both --replicate and --replicate-cluster, with the other problems, in one pass', () => {
      // Both would write <replicate-path>/pods: one data path, two writers.
      let error: unknown;
      try {
        run('--replicate=v1/pods', '--replicate-cluster=v1/pods', '--log-level=loud');
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(ConfigError);
      const problems = (error as ConfigError).problems;
      expect(problems.some((p) => p.includes('resource "pods" is replicated twice'))).to.equal(true);
      expect(problems.some((p) => p.includes('--log-level'))).to.equal(true);
    });

    const FORMAT = 'format: [group/]version/resource';
    const SECRETS =
      "replicating Secrets would expose them to every caller of OPA's data API (as data.kubernetes.secrets); pass --replicate-allow-secrets to allow it";
    const errors: Array<{ argv: string[]; problems: string[] }> = [
      { argv: ['--replicate=foo'], problems: [`--replicate=foo: ${FORMAT}`] },
      { argv: ['--replicate-cluster', 'foo/bar/'], problems: [`--replicate-cluster=foo/bar/: ${FORMAT}`] },
      { argv: ['--replicate=/v1/pods'], problems: [`--replicate=/v1/pods: ${FORMAT}`] },
      { argv: ['--replicate=apps//deployments'], problems: [`--replicate=apps//deployments: ${FORMAT}`] },
      { argv: ['--replicate=v1/'], problems: [`--replicate=v1/: ${FORMAT}`] },
      // kube-mgmt would take resource `deployments/scale`; no resource name holds a '/'.
      {
        argv: ['--replicate=apps/v1/deployments/scale'],
        problems: [`--replicate=apps/v1/deployments/scale: ${FORMAT}`],
      },
      { argv: ['--replicate=v1/secrets'], problems: [`--replicate=v1/secrets: ${SECRETS}`] },
      { argv: ['--replicate-cluster=V1/Secrets'], problems: [`--replicate-cluster=v1/secrets: ${SECRETS}`] },
      {
        argv: ['--replicate=v1/secrets', '--replicate=v1/secrets', '--replicate-allow-secrets=false'],
        problems: [`--replicate=v1/secrets: ${SECRETS}`],
      },
      {
        argv: ['--replicate-path=', '--replicate-cluster=v1/secrets'],
        problems: [
          "--replicate-cluster=v1/secrets: replicating Secrets would expose them to every caller of OPA's data API (as data.secrets); pass --replicate-allow-secrets to allow it",
        ],
      },
      {
        argv: ['--replicate-ignore-namespaces=ok,Bad_NS'],
        problems: [`--replicate-ignore-namespaces: Invalid value: "Bad_NS": ${NAMESPACE_RULE}`],
      },
      { argv: ['--replicate'], problems: ['flag needs an argument: --replicate'] },
      {
        argv: ['--replicate-allow-secrets', 'true'],
        problems: [
          'unexpected argument "true": opa-sync takes flags only (a boolean flag takes no separate value: write --replicate-allow-secrets=true)',
        ],
      },
    ];
    for (const { argv, problems } of errors) {
      it(`${argv.join(' ')} is an error`, () => {
        expect(problemsOf(...argv)).to.deep.equal(problems);
      });
    }

    it('collects every replication problem with the others, in one ConfigError', () => {
      expect(
        problemsOf(
          '--replicate=foo,v1/secrets,v1/pods',
          '--replicate-cluster=a//b',
          '--replicate-ignore-namespaces=X',
          '--log-level=loud',
        ),
      ).to.deep.equal([
        '--log-level: invalid log level "loud" (one of debug, info, warn, error)',
        `--replicate=foo: ${FORMAT}`,
        `--replicate=v1/secrets: ${SECRETS}`,
        `--replicate-cluster=a//b: ${FORMAT}`,
        `--replicate-ignore-namespaces: Invalid value: "X": ${NAMESPACE_RULE}`,
      ]);
    });

    it('formats a resource as the flags take it', () => {
      expect(formatResource({ group: '', version: 'v1', resource: 'services' })).to.equal('v1/services');
      expect(
        formatResource({ group: 'networking.k8s.io', version: 'v1', resource: 'networkpolicies' }),
      ).to.equal('networking.k8s.io/v1/networkpolicies');
      for (const text of ['v1/pods', 'apps/v1/deployments']) {
        const [ref] = run(`--replicate=${text}`).config.replication.namespaced;
        expect(ref && formatResource(ref)).to.equal(text);
      }
    });
  });

  describe('bundle-server flags', () => {
    const cases: Array<{ argv: string[]; pick: (c: Config) => unknown; expected: unknown }> = [
      // --bundle-addr takes the forms of --health-endpoint.
      {
        argv: ['--bundle-addr=127.0.0.1:8282'],
        pick: (c) => c.bundles.addr,
        expected: { host: '127.0.0.1', port: 8282 },
      },
      {
        argv: ['--bundle-addr', ':8282'],
        pick: (c) => c.bundles.addr,
        expected: { host: '0.0.0.0', port: 8282 },
      },
      { argv: ['--bundle-addr=:0'], pick: (c) => c.bundles.addr, expected: { host: '0.0.0.0', port: 0 } },
      {
        argv: ['--bundle-addr=[::]:8282'],
        pick: (c) => c.bundles.addr,
        expected: { host: '::', port: 8282 },
      },
      {
        argv: ['--bundle-addr=bundles.example.com:443'],
        pick: (c) => c.bundles.addr,
        expected: { host: 'bundles.example.com', port: 443 },
      },
      { argv: ['--bundle-addr='], pick: (c) => c.bundles.addr, expected: undefined },
      { argv: ['--bundle-name=authz'], pick: (c) => c.bundles.defaultName, expected: 'authz' },
      {
        argv: ['--bundle-name', 'team-a/authz_v1.2'],
        pick: (c) => c.bundles.defaultName,
        expected: 'team-a/authz_v1.2',
      },
      { argv: ['--bundle-name=0'], pick: (c) => c.bundles.defaultName, expected: '0' },
      {
        argv: [`--bundle-name=${LONGEST_BUNDLE_NAME}`],
        pick: (c) => c.bundles.defaultName,
        expected: LONGEST_BUNDLE_NAME,
      },
      // --bundles-dir alone: bundles are written to disk, nothing is served, OPA is still pushed into.
      {
        argv: ['--bundles-dir=/var/bundles'],
        pick: (c) => [c.bundles.dir, c.bundles.addr, c.opa.push],
        expected: ['/var/bundles', undefined, true],
      },
      { argv: ['--bundles-dir='], pick: (c) => c.bundles.dir, expected: undefined },
      {
        argv: ['--bundle-addr=:8282', '--bundle-token-file', '/etc/opa-sync/token'],
        pick: (c) => c.bundles.tokenFile,
        expected: '/etc/opa-sync/token',
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-token-file='],
        pick: (c) => c.bundles.tokenFile,
        expected: undefined,
      },
      {
        argv: [
          '--bundle-addr=:8443',
          '--bundle-tls-cert-file=/tls/crt.pem',
          '--bundle-tls-key-file',
          '/tls/key.pem',
        ],
        pick: (c) => [c.bundles.tlsCertFile, c.bundles.tlsKeyFile],
        expected: ['/tls/crt.pem', '/tls/key.pem'],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-key=/keys/private.pem'],
        pick: (c) => [c.bundles.signingKeyFile, c.bundles.signingAlg, c.bundles.signingKeyId],
        expected: ['/keys/private.pem', 'RS256', undefined],
      },
      {
        argv: [
          '--bundles-dir=/b',
          '--bundle-signing-key=/keys/ec.pem',
          '--bundle-signing-alg=ES384',
          '--bundle-signing-keyid',
          'global_key',
        ],
        pick: (c) => [c.bundles.signingKeyFile, c.bundles.signingAlg, c.bundles.signingKeyId],
        expected: ['/keys/ec.pem', 'ES384', 'global_key'],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-key=/s', '--bundle-signing-alg=HS512'],
        pick: (c) => c.bundles.signingAlg,
        expected: 'HS512',
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-key=/s', '--bundle-signing-keyid='],
        pick: (c) => c.bundles.signingKeyId,
        expected: undefined,
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-rego-version=0'],
        pick: (c) => c.bundles.regoVersion,
        expected: 0,
      },
      {
        argv: ['--bundles-dir=/b', '--bundle-rego-version', '1'],
        pick: (c) => c.bundles.regoVersion,
        expected: 1,
      },
      { argv: ['--bundle-rego-version='], pick: (c) => c.bundles.regoVersion, expected: undefined },
      {
        argv: ['--opa-bin=/usr/local/bin/opa'],
        pick: (c) => c.bundles.opaBin,
        expected: '/usr/local/bin/opa',
      },
      { argv: ['--opa-bin='], pick: (c) => c.bundles.opaBin, expected: undefined },
      {
        argv: [
          '--bundle-addr=127.0.0.1:8282',
          '--bundle-name=authz',
          '--bundles-dir=/var/bundles',
          '--bundle-token-file=/t',
          '--bundle-tls-cert-file=/c',
          '--bundle-tls-key-file=/k',
          '--bundle-signing-key=/s',
          '--bundle-signing-alg=PS256',
          '--bundle-signing-keyid=k1',
          '--bundle-rego-version=1',
          '--opa-bin=/bin/opa',
        ],
        pick: (c) => c.bundles,
        expected: {
          addr: { host: '127.0.0.1', port: 8282 },
          defaultName: 'authz',
          dir: '/var/bundles',
          tokenFile: '/t',
          tlsCertFile: '/c',
          tlsKeyFile: '/k',
          signingKeyFile: '/s',
          signingAlg: 'PS256',
          signingKeyId: 'k1',
          regoVersion: 1,
          opaBin: '/bin/opa',
          replicated: undefined,
          deltas: false,
        },
      },
    ];
    for (const { argv, pick, expected } of cases) {
      it(`${argv.join(' ')}`, () => {
        const { config, warnings } = run(...argv);
        expect(pick(config)).to.deep.equal(expected);
        expect(warnings).to.deep.equal([]);
      });
    }

    describe('whether OPA is pushed into (opa.push)', () => {
      const pushCases: Array<{ argv: string[]; push: boolean; url: string }> = [
        { argv: [], push: true, url: 'http://localhost:8181/v1' },
        { argv: ['--bundle-addr=:8282'], push: false, url: 'http://localhost:8181/v1' },
        {
          argv: ['--bundle-addr=:8282', '--opa-url=http://opa:8181/v1'],
          push: true,
          url: 'http://opa:8181/v1',
        },
        // Explicit, even when it is the default URL, and whatever the order.
        {
          argv: ['--opa-url=http://localhost:8181/v1', '--bundle-addr=:8282'],
          push: true,
          url: 'http://localhost:8181/v1',
        },
        { argv: ['--opa-url=http://opa:8181/v1'], push: true, url: 'http://opa:8181/v1' },
        { argv: ['--bundle-addr='], push: true, url: 'http://localhost:8181/v1' },
        { argv: ['--bundles-dir=/b'], push: true, url: 'http://localhost:8181/v1' },
        { argv: ['--bundles-dir=/b', '--bundle-addr=:8282'], push: false, url: 'http://localhost:8181/v1' },
      ];
      for (const { argv, push, url } of pushCases) {
        it(`${argv.length === 0 ? '(no flags)' : argv.join(' ')} => push ${push}`, () => {
          const { config, warnings } = run(...argv);
          expect(config.opa.push).to.equal(push);
          expect(config.opa.url).to.equal(url);
          expect(warnings).to.deep.equal([]);
        });
      }
    });

    const NAME_RULE =
      "each '/'-separated segment must consist of lower case alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'policies' or 'team-a/authz')";
    const ALGS = 'RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, HS256, HS384, HS512';
    const errors: Array<{ argv: string[]; problems: string[] }> = [
      {
        argv: ['--bundle-addr=8282'],
        problems: ['--bundle-addr: "8282" is not HOST:PORT (e.g. 0.0.0.0:8282 or :8282)'],
      },
      {
        argv: ['--bundle-addr=::1:8282'],
        problems: ['--bundle-addr: "::1:8282" is not HOST:PORT (e.g. 0.0.0.0:8282 or :8282)'],
      },
      { argv: ['--bundle-addr=:65536'], problems: ['--bundle-addr: port 65536 is not in 0-65535'] },
      {
        argv: ['--bundle-addr=bad_host:80'],
        problems: ['--bundle-addr: "bad_host" is not an IP address or host name'],
      },
      { argv: ['--bundle-addr=[zz]:80'], problems: ['--bundle-addr: "zz" is not an IPv6 address'] },
      {
        argv: ['--bundle-name=Policies'],
        problems: [`--bundle-name: Invalid value: "Policies": ${NAME_RULE}`],
      },
      { argv: ['--bundle-name='], problems: [`--bundle-name: Invalid value: "": ${NAME_RULE}`] },
      { argv: ['--bundle-name=/a'], problems: [`--bundle-name: Invalid value: "/a": ${NAME_RULE}`] },
      { argv: ['--bundle-name=a/'], problems: [`--bundle-name: Invalid value: "a/": ${NAME_RULE}`] },
      { argv: ['--bundle-name=a//b'], problems: [`--bundle-name: Invalid value: "a//b": ${NAME_RULE}`] },
      { argv: ['--bundle-name=-a'], problems: [`--bundle-name: Invalid value: "-a": ${NAME_RULE}`] },
      { argv: ['--bundle-name=a.'], problems: [`--bundle-name: Invalid value: "a.": ${NAME_RULE}`] },
      { argv: ['--bundle-name=a b'], problems: [`--bundle-name: Invalid value: "a b": ${NAME_RULE}`] },
      // A segment cannot be '..' anyway; '..' inside a segment is refused too.
      {
        argv: ['--bundle-name=a/../b'],
        problems: [`--bundle-name: Invalid value: "a/../b": must not contain '..'; ${NAME_RULE}`],
      },
      {
        argv: ['--bundle-name=a..b'],
        problems: [`--bundle-name: Invalid value: "a..b": must not contain '..'`],
      },
      {
        argv: [`--bundle-name=${LONGEST_BUNDLE_NAME}/e`],
        problems: [
          `--bundle-name: Invalid value: "${LONGEST_BUNDLE_NAME}/e": must be no more than 253 characters`,
        ],
      },
      {
        argv: [`--bundle-name=${'a'.repeat(64)}`],
        problems: [
          `--bundle-name: Invalid value: "${'a'.repeat(64)}": each '/'-separated segment must be no more than 63 characters`,
        ],
      },
      { argv: ['--bundle-token-file=/t'], problems: ['--bundle-token-file needs --bundle-addr'] },
      // --bundles-dir does not stand in for --bundle-addr: nothing is served to protect.
      {
        argv: ['--bundles-dir=/b', '--bundle-token-file=/t'],
        problems: ['--bundle-token-file needs --bundle-addr'],
      },
      {
        argv: ['--bundle-tls-cert-file=/c', '--bundle-tls-key-file=/k'],
        problems: ['--bundle-tls-cert-file needs --bundle-addr', '--bundle-tls-key-file needs --bundle-addr'],
      },
      {
        argv: ['--bundle-addr=:8443', '--bundle-tls-cert-file=/c'],
        problems: ['--bundle-tls-cert-file needs --bundle-tls-key-file'],
      },
      {
        argv: ['--bundle-addr=:8443', '--bundle-tls-key-file=/k'],
        problems: ['--bundle-tls-key-file needs --bundle-tls-cert-file'],
      },
      {
        argv: ['--bundle-tls-cert-file=/c'],
        problems: [
          '--bundle-tls-cert-file needs --bundle-tls-key-file',
          '--bundle-tls-cert-file needs --bundle-addr',
        ],
      },
      {
        argv: ['--bundle-signing-key=/s'],
        problems: ['--bundle-signing-key needs --bundle-addr or --bundles-dir'],
      },
      {
        argv: ['--bundle-rego-version=1'],
        problems: ['--bundle-rego-version needs --bundle-addr or --bundles-dir'],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-alg=RS512'],
        problems: ['--bundle-signing-alg needs --bundle-signing-key'],
      },
      // Given explicitly, even as the default.
      {
        argv: ['--bundles-dir=/b', '--bundle-signing-alg=RS256'],
        problems: ['--bundle-signing-alg needs --bundle-signing-key'],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-keyid=k1'],
        problems: ['--bundle-signing-keyid needs --bundle-signing-key'],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-key=/s', '--bundle-signing-alg=rs256'],
        problems: [`--bundle-signing-alg: invalid algorithm "rs256" (one of ${ALGS})`],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-signing-key=/s', '--bundle-signing-alg=none'],
        problems: [`--bundle-signing-alg: invalid algorithm "none" (one of ${ALGS})`],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-rego-version=2'],
        problems: ['--bundle-rego-version: invalid rego version "2" (0 or 1)'],
      },
      {
        argv: ['--bundle-addr=:8282', '--bundle-rego-version=v1'],
        problems: ['--bundle-rego-version: invalid rego version "v1" (0 or 1)'],
      },
      { argv: ['--bundle-addr'], problems: ['flag needs an argument: --bundle-addr'] },
    ];
    for (const { argv, problems } of errors) {
      it(`${argv.join(' ')} is an error`, () => {
        expect(problemsOf(...argv)).to.deep.equal(problems);
      });
    }

    it('collects every bundle problem with the others, in one ConfigError', () => {
      expect(
        problemsOf(
          '--bundle-addr=nope',
          '--bundle-name=Bad',
          '--bundle-signing-alg=XX256',
          '--bundle-signing-keyid=k',
          '--bundle-rego-version=3',
          '--bundle-tls-key-file=/k',
          '--log-level=loud',
        ),
      ).to.deep.equal([
        '--log-level: invalid log level "loud" (one of debug, info, warn, error)',
        '--bundle-addr: "nope" is not HOST:PORT (e.g. 0.0.0.0:8282 or :8282)',
        `--bundle-name: Invalid value: "Bad": ${NAME_RULE}`,
        `--bundle-signing-alg: invalid algorithm "XX256" (one of ${ALGS})`,
        '--bundle-rego-version: invalid rego version "3" (0 or 1)',
        '--bundle-tls-key-file needs --bundle-tls-cert-file',
        '--bundle-signing-alg needs --bundle-signing-key',
        '--bundle-signing-keyid needs --bundle-signing-key',
      ]);
    });
  });

  describe('help and version', () => {
    const cases: Array<{ argv: string[]; kind: 'help' | 'version' }> = [
      { argv: ['-h'], kind: 'help' },
      { argv: ['--help'], kind: 'help' },
      { argv: ['--help=true'], kind: 'help' },
      { argv: ['-v'], kind: 'version' },
      { argv: ['--version'], kind: 'version' },
      { argv: ['-hv'], kind: 'help' },
      { argv: ['--version', '--help'], kind: 'help' },
      // Asking for help is answered even when the rest of the line is wrong.
      { argv: ['--opa-url=ftp://x', 'stray', '-h'], kind: 'help' },
      { argv: ['--log-level=loud', '-v'], kind: 'version' },
    ];
    for (const { argv, kind } of cases) {
      it(`${argv.join(' ')} => ${kind}`, () => {
        expect(parseArgs(argv)).to.deep.equal({ kind, warnings: [] });
      });
    }

    it('names the unknown flags of the line with --help and --version too', () => {
      expect(parseArgs(['--opa-ulr=x', '--help'])).to.deep.equal({
        kind: 'help',
        warnings: ['unknown flag --opa-ulr ignored: did you mean --opa-url?'],
      });
      expect(parseArgs(['-v', '--foo', 'bar'])).to.deep.equal({
        kind: 'version',
        warnings: ['unknown flag --foo ignored (and the value after it)'],
      });
    });

    it('--help=false runs', () => {
      expect(parseArgs(['--help=false']).kind).to.equal('run');
    });
  });

  describe('seed-era kube-mgmt flags', () => {
    const cases: Array<{
      argv: string[];
      namespaces: Config['namespaces'];
      requireLabel: boolean;
      warnings: RegExp[];
    }> = [
      {
        argv: ['--policies=opa,kube-federation-scheduling-policy'],
        namespaces: { all: false, names: ['kube-federation-scheduling-policy', 'opa'] },
        requireLabel: false,
        warnings: [
          /^--policies is deprecated .*EVERY ConfigMap in the watched namespaces is loaded as a policy/,
        ],
      },
      {
        argv: ['--policies', 'team-a'],
        namespaces: { all: false, names: ['team-a'] },
        requireLabel: false,
        warnings: [/^--policies is deprecated/],
      },
      {
        argv: ['--policies=a', '--namespaces=b'],
        namespaces: { all: false, names: ['a', 'b'] },
        requireLabel: false,
        warnings: [/together with those of --namespaces/],
      },
      {
        argv: ['--namespaces=b,c', '--policies=a', '--policies=c'],
        namespaces: { all: false, names: ['a', 'b', 'c'] },
        requireLabel: false,
        warnings: [/together with those of --namespaces/],
      },
      {
        argv: ['--policies=a', '--require-policy-label'],
        namespaces: { all: false, names: ['a'] },
        requireLabel: true,
        warnings: [
          /with --require-policy-label only ConfigMaps labelled openpolicyagent\.org\/policy=rego are policies/,
        ],
      },
      {
        argv: ['--policies=a', '--require-policy-label=false'],
        namespaces: { all: false, names: ['a'] },
        requireLabel: false,
        warnings: [/EVERY ConfigMap/],
      },
      {
        argv: ['--policies=*'],
        namespaces: { all: true, names: [] },
        requireLabel: false,
        warnings: [/^--policies is deprecated/],
      },
      {
        argv: ['--policies=a', '--policy-label=team', '--policy-value=x'],
        namespaces: { all: false, names: ['a'] },
        requireLabel: false,
        warnings: [/labelled team=x or not/],
      },
      {
        argv: ['--require-policy-label'],
        namespaces: { all: false, names: ['opa'] },
        requireLabel: true,
        warnings: [/^--require-policy-label is deprecated and has no effect without --policies/],
      },
      {
        argv: ['--pod-name=opa-0'],
        namespaces: DEFAULTS.namespaces,
        requireLabel: true,
        warnings: [/^--pod-name is deprecated and has no effect: ignored$/],
      },
      {
        argv: ['--pod-namespace', 'opa'],
        namespaces: DEFAULTS.namespaces,
        requireLabel: true,
        warnings: [/^--pod-namespace is deprecated and has no effect: ignored$/],
      },
      {
        argv: ['--replicate-resync', '60s'],
        namespaces: DEFAULTS.namespaces,
        requireLabel: true,
        warnings: [/^--replicate-resync is deprecated and has no effect: ignored$/],
      },
    ];
    for (const { argv, namespaces, requireLabel, warnings } of cases) {
      it(`${argv.join(' ')}`, () => {
        const result = run(...argv);
        expect(result.config.namespaces).to.deep.equal(namespaces);
        expect(result.config.policies.requireLabel).to.equal(requireLabel);
        expect(result.warnings).to.have.length(warnings.length);
        warnings.forEach((pattern, i) => expect(result.warnings[i]).to.match(pattern));
      });
    }

    it('validates the namespaces of --policies like those of --namespaces', () => {
      expect(problemsOf('--policies=Bad')).to.deep.equal([
        `--namespaces: Invalid value: "Bad": ${NAMESPACE_RULE}`,
      ]);
    });
  });

  describe("kube-mgmt's automatic replication flags: refused, not ignored", () => {
    it('refuses --opa-config (as the opa-kube-mgmt chart passes it with replicate.auto), naming what to use', () => {
      const problems = problemsOf('--opa-config=/config/config.yaml', '--health-endpoint=0.0.0.0:8000');
      expect(problems).to.have.length(1);
      expect(problems[0]).to.match(/^--opa-config is kube-mgmt's automatic replication/);
      expect(problems[0]).to.include('does not implement it');
      expect(problems[0]).to.include('--replicate');
      expect(problems[0]).to.include('--replicate-cluster');
    });

    it('refuses --analysis-entrypoint, with or without --opa-config, and takes a separate value', () => {
      const alone = problemsOf('--analysis-entrypoint', 'main/main');
      expect(alone).to.have.length(1);
      expect(alone[0]).to.match(/^--analysis-entrypoint only serves kube-mgmt's automatic replication/);
      expect(problemsOf('--opa-config', '/c.yaml', '--analysis-entrypoint=main/main')).to.have.length(2);
    });

    it('takes an empty value as "not set", as kube-mgmt does', () => {
      expect(run('--opa-config=', '--analysis-entrypoint=').warnings).to.deep.equal([]);
    });
  });

  describe('unknown flags', () => {
    const cases: Array<{ argv: string[]; warnings: string[]; check?: (c: Config) => void }> = [
      { argv: ['--foo'], warnings: ['unknown flag --foo ignored'] },
      { argv: ['--foo=bar'], warnings: ['unknown flag --foo ignored'] },
      { argv: ['--foo', 'bar'], warnings: ['unknown flag --foo ignored (and the value after it)'] },
      {
        argv: ['--foo', '--enable-data=false'],
        warnings: ['unknown flag --foo ignored'],
        check: (c) => expect(c.data.enabled).to.equal(false),
      },
      {
        argv: ['--foo=1', '--foo', '2', '--foo'],
        warnings: ['unknown flag --foo ignored'],
      },
      { argv: ['-x'], warnings: ['unknown flag -x ignored'] },
      { argv: ['-hx'], warnings: ['unknown flag -hx ignored'] },
      // Near misses of the replication flags are not taken for them; a typo is named with what it meant.
      {
        argv: ['--replicate-namespaces=a', '--replicate-clusters', 'v1/nodes'],
        warnings: [
          'unknown flag --replicate-namespaces ignored',
          'unknown flag --replicate-clusters ignored (and the value after it): did you mean --replicate-cluster?',
        ],
      },
      // Old names that never existed in this form are not mistaken for real flags.
      {
        argv: ['--enable-policy=false'],
        warnings: ['unknown flag --enable-policy ignored: did you mean --enable-policies?'],
      },
      // Typos: swapped letters, a missing or an extra one, a wrong one; ties are all named.
      { argv: ['--opa-ulr=http://x'], warnings: ['unknown flag --opa-ulr ignored: did you mean --opa-url?'] },
      {
        argv: ['--bundle-adr', ':1'],
        warnings: ['unknown flag --bundle-adr ignored (and the value after it): did you mean --bundle-addr?'],
      },
      {
        argv: ['--namespace=opa'],
        warnings: ['unknown flag --namespace ignored: did you mean --namespaces?'],
      },
      {
        argv: ['--log-formt=text'],
        warnings: ['unknown flag --log-formt ignored: did you mean --log-format?'],
      },
      {
        argv: ['--bundle-signing-keyi=k'],
        warnings: [
          'unknown flag --bundle-signing-keyi ignored: did you mean --bundle-signing-key or --bundle-signing-keyid?',
        ],
      },
      {
        argv: ['--constructor', '--__proto__=x'],
        warnings: ['unknown flag --constructor ignored', 'unknown flag --__proto__ ignored'],
      },
    ];
    for (const { argv, warnings, check } of cases) {
      it(`${argv.join(' ')}`, () => {
        const result = run(...argv);
        expect(result.warnings).to.deep.equal(warnings);
        check?.(result.config);
      });
    }

    it('never repeats the value of an unknown flag (it may be a secret)', () => {
      const { warnings } = run('--password=hunter2', '--token', 'hunter3');
      expect(warnings.join('\n')).not.to.match(/hunter/);
    });

    it('lets a token after an unknown flag be its value, but not a second one', () => {
      expect(problemsOf('--foo', 'bar', 'baz')).to.deep.equal([
        'unexpected argument "baz": opa-sync takes flags only',
      ]);
    });

    it('starts with the arguments of the opa-kube-mgmt Helm chart', () => {
      const { config, warnings } = run(
        '--opa-auth-token-file=/bootstrap/mgmt-token',
        '--opa-url=https://127.0.0.1:8181/v1',
        '--opa-allow-insecure',
        '--namespaces=opa-system',
        '--enable-data=true',
        '--enable-policies=true',
        '--replicate-path=kubernetes',
        '--replicate=v1/services',
        '--replicate-cluster=v1/namespaces',
        '--replicate-ignore-namespaces=',
      );
      expect(config.opa).to.include({
        url: 'https://127.0.0.1:8181/v1',
        authTokenFile: '/bootstrap/mgmt-token',
        allowInsecure: true,
      });
      expect(config.namespaces).to.deep.equal({ all: false, names: ['opa-system'] });
      expect(config.replication).to.deep.equal({
        ...DEFAULTS.replication,
        namespaced: [{ group: '', version: 'v1', resource: 'services' }],
        cluster: [{ group: '', version: 'v1', resource: 'namespaces' }],
      });
      expect(warnings).to.deep.equal([]);
    });
  });

  describe('validation errors', () => {
    const cases: Array<{ argv: string[]; problem: string }> = [
      {
        argv: ['--opa-auth-token=t', '--opa-auth-token-file=/t'],
        problem: 'You can not use both --opa-auth-token and --opa-auth-token-file',
      },
      {
        argv: ['--opa-allow-insecure', '--opa-ca-file=/ca'],
        problem: 'You can not use both --opa-allow-insecure and --opa-ca-file',
      },
      { argv: ['--opa-client-cert-file=/c'], problem: '--opa-client-cert-file needs --opa-client-key-file' },
      { argv: ['--opa-client-key-file=/k'], problem: '--opa-client-key-file needs --opa-client-cert-file' },
      {
        argv: ['--opa-url=ftp://opa/v1'],
        problem: '--opa-url: "ftp://opa/v1" is not an http(s) URL (e.g. http://localhost:8181/v1)',
      },
      {
        argv: ['--opa-url=localhost:8181'],
        problem: '--opa-url: "localhost:8181" is not an http(s) URL (e.g. http://localhost:8181/v1)',
      },
      {
        argv: ['--opa-url='],
        problem: '--opa-url: "" is not an http(s) URL (e.g. http://localhost:8181/v1)',
      },
      {
        argv: ['--opa-url=http://opa/v1?x=1'],
        problem:
          '--opa-url: "http://opa/v1?x=1" must not have a query or fragment (API paths are appended to it)',
      },
      {
        argv: ['--opa-url=http://u:secret@opa/v1'],
        problem: '--opa-url must not hold credentials: use --opa-auth-token-file',
      },
      {
        argv: ['--opa-auth-token=  '],
        problem: '--opa-auth-token is blank: give a token, or leave the flag out',
      },
      { argv: ['--opa-timeout=0'], problem: '--opa-timeout must be greater than 0, got "0"' },
      {
        argv: ['--kube-watch-idle-timeout=1s'],
        problem: '--kube-watch-idle-timeout must be at least 2s, got "1s"',
      },
      { argv: ['--opa-timeout', '-5s'], problem: '--opa-timeout must be greater than 0, got "-5s"' },
      {
        argv: ['--opa-resync-interval=1000h'],
        problem: '--opa-resync-interval must be at most 2147483647ms (about 24 days), got "1000h"',
      },
      {
        argv: ['--opa-timeout=soon'],
        problem:
          'invalid argument "soon" for "--opa-timeout" flag: not a duration (e.g. 500ms, 5s, 1m30s, or a number of seconds)',
      },
      {
        argv: ['--opa-resync-interval=5 s'],
        problem:
          'invalid argument "5 s" for "--opa-resync-interval" flag: not a duration (e.g. 500ms, 5s, 1m30s, or a number of seconds)',
      },
      {
        argv: ['--log-level=trace'],
        problem: '--log-level: invalid log level "trace" (one of debug, info, warn, error)',
      },
      { argv: ['--log-format=xml'], problem: '--log-format: invalid log format "xml" (one of json, text)' },
      // The two texts of kube-mgmt's cmd/kube-mgmt/flag_test.go, behind kube-mgmt's own prefix.
      {
        argv: ['--policy-label=-foo', '--policy-value=rego'],
        problem: `Invalid --policy-label:-foo || --policy-value:rego, key: Invalid value: "-foo": ${KEY_RULE}`,
      },
      {
        argv: ['--policy-label=foo', '--policy-value=-rego'],
        problem: `Invalid --policy-label:foo || --policy-value:-rego, values[0][foo]: Invalid value: "-rego": ${VALUE_RULE}`,
      },
      {
        argv: ['--data-label=-d', '--data-value=-v'],
        problem: `Invalid --data-label:-d || --data-value:-v, [key: Invalid value: "-d": ${KEY_RULE}, values[0][-d]: Invalid value: "-v": ${VALUE_RULE}]`,
      },
      {
        argv: ['--data-label='],
        problem: `Invalid --data-label: || --data-value:opa, key: Invalid value: "": name part must be non-empty; ${KEY_RULE}`,
      },
      {
        argv: ['--policy-label=Example.org/policy'],
        problem: `Invalid --policy-label:Example.org/policy || --policy-value:rego, key: Invalid value: "Example.org/policy": prefix part ${SUBDOMAIN_RULE}`,
      },
      {
        argv: ['--policy-label=/policy'],
        problem:
          'Invalid --policy-label:/policy || --policy-value:rego, key: Invalid value: "/policy": prefix part must be non-empty',
      },
      {
        argv: [`--policy-value=${'x'.repeat(64)}`],
        problem: `Invalid --policy-label:openpolicyagent.org/policy || --policy-value:${'x'.repeat(64)}, values[0][openpolicyagent.org/policy]: Invalid value: "${'x'.repeat(64)}": must be no more than 63 characters`,
      },
      { argv: ['--namespaces=Bad_NS'], problem: `--namespaces: Invalid value: "Bad_NS": ${NAMESPACE_RULE}` },
      {
        argv: [`--namespaces=${'n'.repeat(64)}`],
        problem: `--namespaces: Invalid value: "${'n'.repeat(64)}": must be no more than 63 characters`,
      },
      {
        argv: ['--namespaces='],
        problem: "--namespaces: no namespace given; name at least one, or '*' for all namespaces",
      },
      {
        argv: ['--status-annotation=a/b/c'],
        problem: `--status-annotation: Invalid value: "a/b/c": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')`,
      },
      {
        argv: ['--status-annotation=bad key'],
        problem: `--status-annotation: Invalid value: "bad key": ${KEY_RULE}`,
      },
      {
        argv: ['--health-endpoint=8000'],
        problem: '--health-endpoint: "8000" is not HOST:PORT (e.g. 0.0.0.0:8000 or :8000)',
      },
      {
        argv: ['--health-endpoint=::1:8000'],
        problem: '--health-endpoint: "::1:8000" is not HOST:PORT (e.g. 0.0.0.0:8000 or :8000)',
      },
      { argv: ['--health-endpoint=:70000'], problem: '--health-endpoint: port 70000 is not in 0-65535' },
      {
        argv: ['--health-endpoint=bad_host:80'],
        problem: '--health-endpoint: "bad_host" is not an IP address or host name',
      },
      { argv: ['--health-endpoint=[zz]:80'], problem: '--health-endpoint: "zz" is not an IPv6 address' },
      {
        argv: ['--enable-data=maybe'],
        problem: 'invalid argument "maybe" for "--enable-data" flag: must be true or false',
      },
      {
        argv: ['--enable-data='],
        problem: 'invalid argument "" for "--enable-data" flag: must be true or false',
      },
      { argv: ['-v=maybe'], problem: 'invalid argument "maybe" for "-v" flag: must be true or false' },
      { argv: ['--opa-url'], problem: 'flag needs an argument: --opa-url' },
      { argv: ['--namespaces'], problem: 'flag needs an argument: --namespaces' },
      { argv: ['serve'], problem: 'unexpected argument "serve": opa-sync takes flags only' },
      { argv: ['-'], problem: 'unexpected argument "-": opa-sync takes flags only' },
      {
        argv: ['--', '--enable-data'],
        problem: 'unexpected argument "--enable-data": opa-sync takes flags only',
      },
      {
        argv: ['--enable-data', 'false'],
        problem:
          'unexpected argument "false": opa-sync takes flags only (a boolean flag takes no separate value: write --enable-data=false)',
      },
      { argv: ['---x'], problem: 'bad flag syntax: ---x' },
      { argv: ['--=x'], problem: 'bad flag syntax: --=x' },
    ];
    for (const { argv, problem } of cases) {
      it(`${argv.join(' ')}`, () => {
        expect(problemsOf(...argv)).to.deep.equal([problem]);
      });
    }

    it('takes the next token as a value even when it looks like a flag, as pflag does', () => {
      expect(run('--kubeconfig', '--opa-url=x').config.kubeconfig).to.equal('--opa-url=x');
    });

    it('reports every problem together, in one ConfigError', () => {
      let caught: unknown;
      try {
        parseArgs([
          '--log-level=trace',
          '--opa-timeout=0',
          'stray',
          '--namespaces=Bad',
          '--opa-auth-token=t',
          '--opa-auth-token-file=/t',
          '--health-endpoint=nope',
          '--foo',
        ]);
      } catch (err) {
        caught = err;
      }
      expect(caught).to.be.instanceOf(ConfigError);
      const error = caught as ConfigError;
      expect(error.code).to.equal('invalid_config');
      expect(error.problems).to.deep.equal([
        'unexpected argument "stray": opa-sync takes flags only',
        '--opa-timeout must be greater than 0, got "0"',
        'You can not use both --opa-auth-token and --opa-auth-token-file',
        '--log-level: invalid log level "trace" (one of debug, info, warn, error)',
        `--namespaces: Invalid value: "Bad": ${NAMESPACE_RULE}`,
        '--health-endpoint: "nope" is not HOST:PORT (e.g. 0.0.0.0:8000 or :8000)',
      ]);
      for (const problem of error.problems) expect(error.message).to.include(problem);
    });

    it('lists every OPA connection problem at once (OpaClient trusts them and does not check again)', () => {
      expect(
        problemsOf(
          '--opa-url=ftp://host/v1',
          '--opa-timeout=0',
          '--opa-auth-token=t',
          '--opa-auth-token-file=/t',
          '--opa-allow-insecure',
          '--opa-ca-file=/ca',
          '--opa-client-cert-file=/c',
        ),
      ).to.deep.equal([
        '--opa-url: "ftp://host/v1" is not an http(s) URL (e.g. http://localhost:8181/v1)',
        '--opa-timeout must be greater than 0, got "0"',
        'You can not use both --opa-auth-token and --opa-auth-token-file',
        'You can not use both --opa-allow-insecure and --opa-ca-file',
        '--opa-client-cert-file needs --opa-client-key-file',
      ]);
    });

    it('never puts the auth token into a problem', () => {
      const problems = problemsOf(
        '--opa-auth-token=s3cret-token',
        '--opa-auth-token-file=/t',
        '--log-level=x',
      );
      expect(problems.join('\n')).not.to.include('s3cret-token');
    });
  });

  describe('warnings that are not errors', () => {
    it('says TLS files are unused with an http:// OPA URL, but not --opa-allow-insecure (the chart always sets it)', () => {
      expect(run('--opa-ca-file=/ca').warnings).to.deep.equal([
        '--opa-ca-file has no effect with an http:// --opa-url',
      ]);
      expect(run('--opa-allow-insecure').warnings).to.deep.equal([]);
      expect(run('--opa-url=https://opa/v1', '--opa-ca-file=/ca').warnings).to.deep.equal([]);
    });
  });
});

describe('usage()', () => {
  const text = usage();
  const lines = text.split('\n');

  it('starts with one line saying what opa-sync is', () => {
    expect(lines[0]).to.match(/^opa-sync: loads Rego policies .*OPA/);
  });

  it('lists every flag of the table with its kind, description and default', () => {
    for (const [name, spec] of flagEntries()) {
      const line = lines.find((l) => l.includes(`--${name} ${spec.kind} `));
      expect(line, `--${name}`).to.be.a('string');
      expect(line).to.include(spec.help);
      expect(line).to.include(`(default ${formatDefault(spec)})`);
    }
  });

  it('shows the defaults as a user reads them', () => {
    const lineOf = (flag: string): string => lines.find((l) => l.includes(`${flag} `)) ?? '';
    expect(lineOf('--opa-url')).to.include('(default "http://localhost:8181/v1")');
    expect(lineOf('--opa-timeout')).to.include('(default 10s)');
    expect(lineOf('--opa-resync-interval')).to.include('(default 5s)');
    expect(lineOf('--enable-data')).to.include('(default true)');
    expect(lineOf('--namespaces')).to.include('(default opa)');
    expect(lineOf('--kubeconfig')).to.include('(default none)');
    expect(lineOf('-h, --help')).to.include('(default false)');
    expect(lineOf('--replicate-path')).to.include('(default "kubernetes")');
    expect(lineOf('--replicate-ignore-namespaces')).to.include('(default none)');
  });

  it('lists the replication flags among the current flags', () => {
    const section = lines.findIndex((l) => l.startsWith('Deprecated'));
    for (const [flag, kind, fragment] of [
      ['--replicate', 'list', '[group/]version/resource'],
      ['--replicate-cluster', 'list', '[group/]version/resource'],
      ['--replicate-path', 'string', '(default "kubernetes")'],
      ['--replicate-ignore-namespaces', 'list', '(default none)'],
      ['--replicate-cluster-by-name', 'bool', '(default false)'],
      ['--replicate-keep-managed-fields', 'bool', '(default false)'],
      ['--replicate-allow-secrets', 'bool', '(default false)'],
    ] as const) {
      const at = lines.findIndex((l) => l.includes(`${flag} ${kind} `));
      expect(at, flag).to.be.within(1, section - 1);
      expect(lines[at]).to.include(fragment);
    }
    expect(lines.findIndex((l) => l.includes('--replicate-resync '))).to.be.greaterThan(section);
  });

  it('lists the bundle-server flags among the current flags, after replication and before --health-endpoint', () => {
    const section = lines.findIndex((l) => l.startsWith('Deprecated'));
    const lastReplication = lines.findIndex((l) => l.includes('--replicate-allow-secrets bool '));
    const health = lines.findIndex((l) => l.includes('--health-endpoint string '));
    let previous = lastReplication;
    for (const [flag, fragment] of [
      ['--bundle-addr', '(default none; local default "127.0.0.1:8282")'],
      ['--bundle-name', '(default "policies")'],
      ['--bundles-dir', '<dir>/<name>.tar.gz'],
      ['--bundle-token-file', '(default none)'],
      ['--bundle-tls-cert-file', '(default none)'],
      ['--bundle-tls-key-file', '(default none)'],
      ['--bundle-signing-key', '(default none)'],
      ['--bundle-signing-alg', '(default "RS256")'],
      ['--bundle-signing-keyid', '(default none)'],
      ['--bundle-rego-version', '0 or 1'],
      ['--opa-bin', 'PATH'],
    ] as const) {
      const at = lines.findIndex((l) => l.includes(`${flag} string `));
      expect(at, flag).to.be.greaterThan(previous);
      expect(at, flag).to.be.lessThan(Math.min(health, section));
      expect(lines[at]).to.include(fragment);
      previous = at;
    }
  });

  it('says what the local default is: which flags turn it off, what it serves where, and its log format', () => {
    const paragraph = text.slice(text.indexOf('Local default:')).replace(/\s+/g, ' ');
    for (const [name, spec] of flagEntries()) {
      if (spec.source === true) expect(paragraph, name).to.include(`--${name}`);
    }
    expect(paragraph).to.include(
      './policies as the bundle "policies" at http://127.0.0.1:8282/bundles/policies',
    );
    expect(paragraph).to.include('writes ./bundles/');
    expect(paragraph).to.include('logs text');
    expect(lines.find((l) => l.includes('--log-format string '))).to.include(
      '(default "json"; local default "text")',
    );
  });

  it('says when opa-sync pushes into OPA', () => {
    expect(text).to.include('--bundle-addr is given without --opa-url');
  });

  it('lists the deprecated flags in their own section, after the current ones', () => {
    const section = lines.findIndex((l) => l.startsWith('Deprecated'));
    expect(section).to.be.greaterThan(0);
    for (const [name, spec] of flagEntries()) {
      const at = lines.findIndex((l) => l.includes(`--${name} ${spec.kind} `));
      if (spec.deprecated === true) expect(at, name).to.be.greaterThan(section);
      else expect(at, name).to.be.within(1, section - 1);
    }
    expect(Object.values(FLAGS).filter((spec) => 'deprecated' in spec)).to.have.length(5);
  });
});

describe('configuration: the local-folder default (what npm start runs)', () => {
  const local = (...argv: string[]): Config => {
    const result = parseArgs(argv, { localDefault: true });
    if (result.kind !== 'run') throw new Error('expected a run');
    return result.config;
  };

  it('serves ./policies as a bundle on 127.0.0.1:8282 and writes ./bundles without any flag, no cluster, no push', () => {
    const config = local();
    expect(config.folder).to.equal('policies');
    expect(config.bundles.addr).to.deep.equal({ host: '127.0.0.1', port: 8282 });
    expect(config.bundles.dir).to.equal('bundles');
    expect(config.configmaps).to.equal(false);
    expect(config.opa.push).to.equal(false);
    expect(config.log.format).to.equal('text');
    expect(local('--log-format=json').log.format).to.equal('json');
  });

  it('also pushes with --opa-url, and keeps an explicit --bundle-addr', () => {
    const config = local('--opa-url=http://127.0.0.1:8181/v1', '--bundle-addr=127.0.0.1:9000');
    expect(config.folder).to.equal('policies');
    expect(config.opa.push).to.equal(true);
    expect(config.bundles.addr).to.deep.equal({ host: '127.0.0.1', port: 9000 });
  });

  for (const flag of [
    '--namespaces=opa',
    '--kubeconfig=/k',
    '--policies=opa',
    '--replicate=v1/services',
    '--policies-dir=/p',
  ]) {
    it(`is off as soon as a source flag is given (${flag})`, () => {
      const config = local(flag);
      expect(config.bundles.addr).to.equal(undefined);
      expect(config.folder).to.equal(flag.startsWith('--policies-dir') ? '/p' : undefined);
    });
  }

  it('reads ConfigMaps beside a policies folder only when a Kubernetes flag asks for it', () => {
    expect(local('--policies-dir=/p').configmaps).to.equal(false);
    expect(local('--policies-dir=/p', '--namespaces=opa').configmaps).to.equal(true);
    expect(local('--policies-dir=/p', '--kubeconfig=/k').configmaps).to.equal(true);
    expect(local('--namespaces=opa', '--enable-policies=false', '--enable-data=false').configmaps).to.equal(
      false,
    );
  });
});
