// opa-sync's security promises, checked against the real components (kube-apiserver, OPA):
// - RBAC: the rules deploy/kubernetes/rbac.yaml grants are enough, and each verb taken away breaks only
//   the feature that needs it, with a log line naming the verb, the resource and the namespace;
// - no secret (OPA's token, the bundle tokens, the kubeconfig's token, the OCI password, the HMAC signing
//   key), nor its base64, in the log at any level, in /metrics or in any answer, through failed logins,
//   a wrong OPA token and token rotations;
// - Secrets are replicated only with --replicate-allow-secrets;
// - a signed bundle changed in transit (test/harness/tampering-proxy.ts) is refused by OPA, which keeps
//   the last good one, and opa-sync's fleet view shows why;
// - the web page and the fleet API are behind the bundle tokens, and a refusal tells nothing of the
//   policies.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import {
  CoreV1Api,
  loadAllYaml,
  NetworkingV1Api,
  type V1ClusterRole,
  type V1PolicyRule,
  type V1Role,
} from '@kubernetes/client-node';
import { controlPlane, createNamespace, extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import { httpRequest, type HttpResponse } from '../harness/http.js';
import { opaWithConfig } from '../harness/bundles.js';
import { startOciRegistry } from '../harness/oci-registry.js';
import {
  changeByte,
  startTamperingProxy,
  type Tampering,
  type TamperingProxy,
} from '../harness/tampering-proxy.js';
import type { FleetBundleStatus } from '../../src/bundles/fleet.js';
import { runDir } from '../harness/run-dir.js';
import type { OpaSyncProcess } from '../harness/opa-sync.js';
import { deleteClusterRbac, serviceAccountKubeconfig } from '../harness/rbac.js';
import {
  DATA_LABEL,
  cleanupAfterAll,
  cleanupAfterEach,
  evaluate,
  opaData,
  putConfigMap,
  scrapeMetric,
  startBundleSync,
  type BundleSync,
  startSync,
  statusOf,
  waitDecision,
  waitLog,
  waitOk,
  waitPolicy,
} from '../harness/e2e.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NETWORKPOLICIES = 'networking.k8s.io/v1/networkpolicies';

/** The rules deploy/kubernetes/rbac.yaml gives opa-sync: the Role's (ConfigMaps) and the ClusterRole's. */
function manifestRules(): { configmaps: V1PolicyRule[]; cluster: V1PolicyRule[] } {
  const objects = loadAllYaml(readFileSync(path.join(root, 'deploy/kubernetes/rbac.yaml'), 'utf8')) as {
    kind?: string;
  }[];
  const role = objects.find((o) => o.kind === 'Role') as V1Role | undefined;
  const clusterRole = objects.find((o) => o.kind === 'ClusterRole') as V1ClusterRole | undefined;
  expect(role?.rules, 'the Role of rbac.yaml').to.be.an('array');
  expect(clusterRole?.rules, 'the ClusterRole of rbac.yaml').to.be.an('array');
  return { configmaps: role!.rules!, cluster: clusterRole!.rules! };
}

/** `rules` with `verb` taken away from the rules on `resource` (a rule left with no verb is dropped). */
function without(rules: V1PolicyRule[], resource: string, verb: string): V1PolicyRule[] {
  const changed = rules
    .map((r) => (r.resources?.includes(resource) ? { ...r, verbs: r.verbs.filter((v) => v !== verb) } : r))
    .filter((r) => r.verbs.length > 0);
  expect(JSON.stringify(changed), `${verb} on ${resource} is granted`).to.not.equal(JSON.stringify(rules));
  return changed;
}

type Line = Record<string, unknown>;

/** A log line that says the API server refused `verb` on `resource` (in `namespace`, or cluster-wide). */
const refusal =
  (verb: string, resource: string, namespace: string | undefined) =>
  (line: Line): boolean => {
    const text = JSON.stringify(line);
    return (
      text.includes(`cannot ${verb} resource \\"${resource}\\"`) &&
      text.includes(namespace === undefined ? 'at the cluster scope' : `in the namespace \\"${namespace}\\"`)
    );
  };

const forbiddenLines = (sync: OpaSyncProcess): Line[] =>
  sync.logLines().filter((l) => JSON.stringify(l).includes('forbidden'));

describe('security: RBAC is the minimum (a ServiceAccount with the manifest rules, one verb removed at a time)', function () {
  this.timeout(180_000);
  const stops = cleanupAfterEach();
  const rules = manifestRules();

  interface Scene {
    ns: string;
    opa: OpaServer;
    sync: OpaSyncProcess;
    policyId: string;
    /** Whether the NetworkPolicy of the scene is in OPA's data. */
    replicated: () => Promise<boolean>;
    /** Whether the data ConfigMap of the scene is in OPA's data. */
    dataLoaded: () => Promise<boolean>;
  }

  /**
   * A namespace with a policy ConfigMap, a data ConfigMap and a NetworkPolicy, and opa-sync running as
   * a ServiceAccount with these rules, watching that namespace and replicating NetworkPolicies.
   */
  async function scene(configmapRules: V1PolicyRule[], clusterRules: V1PolicyRule[]): Promise<Scene> {
    const ns = await createNamespace('rbac');
    stops.defer(() => deleteClusterRbac(ns, 'opa-sync'));
    const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], configmapRules, { clusterRules });
    await putConfigMap(ns, 'policy', { 'p.rego': 'package rbac.p\n\nallow := true\n' });
    await putConfigMap(ns, 'data', { 'd.json': '{"x": 1}' }, { labels: DATA_LABEL });
    const net = (await controlPlane()).kubeConfig().makeApiClient(NetworkingV1Api);
    await net.createNamespacedNetworkPolicy({
      namespace: ns,
      body: { metadata: { name: 'np' }, spec: { podSelector: {} } },
    });
    const opa = stops.add(await extraOpa());
    const sync = stops.add(
      await startSync({
        kubeconfig,
        opa,
        namespaces: ns,
        args: [`--replicate-cluster=${NETWORKPOLICIES}`, '--opa-resync-interval=1s'],
        waitReady: false,
      }),
    );
    return {
      ns,
      opa,
      sync,
      policyId: `${ns}/policy/p.rego`,
      replicated: async () => (await opaData(opa, `kubernetes/networkpolicies/${ns}/np`)) !== undefined,
      dataLoaded: async () =>
        JSON.stringify(await opaData(opa, `${ns}/data/d.json`)) === JSON.stringify({ x: 1 }),
    };
  }

  const ready = async (sync: OpaSyncProcess): Promise<{ status: number; body: string }> =>
    httpRequest(`${sync.opsUrl}/ready`);

  const until = (what: string, probe: () => Promise<boolean>): Promise<true> =>
    waitFor(what, async () => ((await probe()) ? true : undefined), { timeoutMs: 60_000 });

  it('with exactly the manifest rules: policies, data, status annotations and replication all work, nothing refused', async function () {
    const s = await scene(rules.configmaps, rules.cluster);
    await s.sync.waitReady();
    await waitOk(s.ns, 'policy');
    await waitOk(s.ns, 'data');
    await waitPolicy(s.opa, s.policyId);
    await until('the data ConfigMap in OPA', s.dataLoaded);
    await until('the NetworkPolicy in OPA', s.replicated);
    expect(forbiddenLines(s.sync)).to.deep.equal([]);
  });
  it('without patch on configmaps: policies and data still load and replicate, no annotation is written, and the log names the verb, the resource and the namespace', async function () {
    const s = await scene(without(rules.configmaps, 'configmaps', 'patch'), rules.cluster);
    await s.sync.waitReady();
    await waitPolicy(s.opa, s.policyId);
    await until('the data ConfigMap in OPA', s.dataLoaded);
    await until('the NetworkPolicy in OPA', s.replicated);
    for (const name of ['policy', 'data']) {
      await waitLog(
        s.sync,
        `the refused patch of ${name}`,
        (l) =>
          l.msg === 'could not write the status annotation' &&
          l.configmap === `${s.ns}/${name}` &&
          refusal('patch', 'configmaps', s.ns)(l),
      );
      expect(await statusOf(s.ns, name), name).to.equal(undefined);
    }
    // Nothing else was refused.
    expect(forbiddenLines(s.sync).filter((l) => !refusal('patch', 'configmaps', s.ns)(l))).to.deep.equal([]);
  });

  it('without watch on configmaps: the listed policies load, /ready stays 503 naming the ConfigMaps, replication works, and the log names watch', async function () {
    const s = await scene(without(rules.configmaps, 'configmaps', 'watch'), rules.cluster);
    await waitLog(
      s.sync,
      'the refused ConfigMap watch, retried',
      (l) => l.msg === 'ConfigMap watch failed, restarting' && refusal('watch', 'configmaps', s.ns)(l),
      { count: 2 },
    );
    await waitPolicy(s.opa, s.policyId);
    await until('the NetworkPolicy in OPA', s.replicated);
    const answer = await ready(s.sync);
    expect(answer.status).to.equal(503);
    expect((JSON.parse(answer.body) as { checks: Record<string, boolean> }).checks).to.include({
      configmaps: false,
      replication: true,
    });
    expect(forbiddenLines(s.sync).filter((l) => !refusal('watch', 'configmaps', s.ns)(l))).to.deep.equal([]);
  });

  it('without list on configmaps: no policy loads, /ready stays 503 naming the ConfigMaps, replication works, and the log names list', async function () {
    const s = await scene(without(rules.configmaps, 'configmaps', 'list'), rules.cluster);
    await waitLog(
      s.sync,
      'the refused ConfigMap list, retried',
      (l) => l.msg === 'ConfigMap watch failed, restarting' && refusal('list', 'configmaps', s.ns)(l),
      { count: 2 },
    );
    await until('the NetworkPolicy in OPA', s.replicated);
    const answer = await ready(s.sync);
    expect(answer.status).to.equal(503);
    expect((JSON.parse(answer.body) as { checks: Record<string, boolean> }).checks).to.include({
      configmaps: false,
      replication: true,
    });
    expect(
      (JSON.parse((await s.opa.request('/v1/policies')).body) as { result: unknown[] }).result,
    ).to.deep.equal([]);
    expect(await statusOf(s.ns, 'policy')).to.equal(undefined);
    expect(forbiddenLines(s.sync).filter((l) => !refusal('list', 'configmaps', s.ns)(l))).to.deep.equal([]);
  });

  for (const verb of ['list', 'watch']) {
    it(`without ${verb} on networkpolicies: policies, data and annotations work, NetworkPolicies stay out of OPA, /ready stays 503 naming replication, and the log names ${verb}`, async function () {
      const s = await scene(rules.configmaps, without(rules.cluster, 'networkpolicies', verb));
      await waitOk(s.ns, 'policy');
      await waitOk(s.ns, 'data');
      await waitPolicy(s.opa, s.policyId);
      await until('the data ConfigMap in OPA', s.dataLoaded);
      await waitLog(
        s.sync,
        `the refused NetworkPolicy ${verb}, retried`,
        (l) =>
          l.msg === 'watch failed, restarting' &&
          l.resource === NETWORKPOLICIES &&
          refusal(verb, 'networkpolicies', undefined)(l),
        { count: 2 },
      );
      expect(await s.replicated()).to.equal(false);
      const answer = await ready(s.sync);
      expect(answer.status).to.equal(503);
      expect((JSON.parse(answer.body) as { checks: Record<string, boolean> }).checks).to.include({
        configmaps: true,
        replication: false,
      });
      expect(
        forbiddenLines(s.sync).filter((l) => !refusal(verb, 'networkpolicies', undefined)(l)),
      ).to.deep.equal([]);
    });
  }
});

describe('security: no secret in the logs, /metrics or any answer, at every log level and in both formats', function () {
  this.timeout(240_000);
  const stops = cleanupAfterEach();
  const secret = (what: string): string => `${what}-${randomBytes(12).toString('hex')}`;

  /** Every form a secret could take in a log line or an answer. */
  const formsOf = (value: string): string[] => [
    value,
    Buffer.from(value).toString('base64'),
    Buffer.from(value).toString('base64url'),
    encodeURIComponent(value),
  ];

  /** Which of the secrets (any form) `text` holds, as `name: form`. */
  function leaks(text: string, secrets: Readonly<Record<string, string>>): string[] {
    const found: string[] = [];
    for (const [name, value] of Object.entries(secrets)) {
      for (const form of formsOf(value)) if (text.includes(form)) found.push(`${name}: ${form}`);
    }
    return found;
  }

  // debug is opa-sync's lowest level (it has no trace): pino only filters by level, so what warn and
  // error write is a part of what debug writes; info is the default. Both formats serialize differently.
  for (const [level, format] of [
    ['debug', 'json'],
    ['debug', 'text'],
    ['info', 'json'],
  ] as const) {
    it(`--log-level=${level} --log-format=${format}: tokens of OPA, the bundle clients, the kubeconfig, the OCI registry and the HMAC signing key never show`, async function () {
      const dir = mkdtempSync(path.join(runDir(), 'leaks-'));
      const secrets = {
        opaToken: secret('opa'),
        wrongOpaToken: secret('opa-wrong'),
        bundleToken1: secret('bundle1'),
        bundleToken2: secret('bundle2'),
        rotatedBundleToken: secret('bundle3'),
        ociPassword: secret('oci'),
        hmacKey: secret('hmac'),
        kubeToken: '',
        ociBasic: '',
      };
      const ns = await createNamespace('leaks');
      stops.defer(() => deleteClusterRbac(ns, 'opa-sync'));
      const kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], manifestRules().configmaps);
      const kube = JSON.parse(readFileSync(kubeconfig, 'utf8')) as { users: { user: { token: string } }[] };
      secrets.kubeToken = kube.users[0]!.user.token;
      expect(secrets.kubeToken).to.have.length.above(20);
      const opa = stops.add(await extraOpa({ token: secrets.opaToken }));
      const registry = stops.add(await startOciRegistry({ users: { pusher: secrets.ociPassword } }));
      secrets.ociBasic = `pusher:${secrets.ociPassword}`;
      const opaTokenFile = path.join(dir, 'opa-token');
      const bundleTokenFile = path.join(dir, 'bundle-tokens');
      const ociPasswordFile = path.join(dir, 'oci-password');
      const hmacFile = path.join(dir, 'hmac');
      writeFileSync(opaTokenFile, `${secrets.opaToken}\n`);
      writeFileSync(bundleTokenFile, `# bundle clients\n${secrets.bundleToken1}\n${secrets.bundleToken2}\n`);
      writeFileSync(ociPasswordFile, `${secrets.ociPassword}\n`);
      writeFileSync(hmacFile, secrets.hmacKey);
      await putConfigMap(ns, 'policy', { 'p.rego': 'package leaks\n\nallow := true\n' });
      const sync = stops.add(
        await startBundleSync({
          kubeconfig,
          opa,
          namespaces: ns,
          args: [
            `--log-level=${level}`,
            `--log-format=${format}`,
            `--opa-auth-token-file=${opaTokenFile}`,
            `--bundle-token-file=${bundleTokenFile}`,
            `--bundle-signing-key=${hmacFile}`,
            '--bundle-signing-alg=HS256',
            `--oci-repository=${registry.host}/opa/{bundle}`,
            '--oci-plain-http',
            '--oci-username=pusher',
            `--oci-password-file=${ociPasswordFile}`,
            '--opa-resync-interval=1s',
          ],
        }),
      );
      await waitOk(ns, 'policy');
      const bundle = `${sync.bundleUrl}/bundles/policies`;
      const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

      // Bundle clients and the page: none, a wrong and a right token.
      const answers: string[] = [];
      const keep = (res: { status: number; body: string; headers: Record<string, unknown> }): number => {
        answers.push(res.body, JSON.stringify(res.headers));
        return res.status;
      };
      expect(keep(await httpRequest(bundle))).to.equal(401);
      expect(keep(await httpRequest(bundle, { headers: bearer(secrets.wrongOpaToken) }))).to.equal(401);
      expect(keep(await httpRequest(bundle, { headers: bearer(secrets.bundleToken1) }))).to.equal(200);
      const login = (token: string): Promise<HttpResponse> =>
        httpRequest(`${sync.opsUrl}/ui/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `token=${encodeURIComponent(token)}`,
        });
      expect(keep(await login(secrets.wrongOpaToken))).to.equal(401);
      const loggedIn = await login(secrets.bundleToken2);
      expect(loggedIn.status).to.equal(303);
      const cookie = String(loggedIn.headers['set-cookie']).split(';')[0]!;
      expect(keep(await httpRequest(`${sync.opsUrl}/ui`, { headers: { cookie } }))).to.equal(200);
      expect(keep(await httpRequest(`${sync.opsUrl}/ui/state.json`, { headers: { cookie } }))).to.equal(200);
      expect(
        keep(await httpRequest(`${sync.bundleUrl}/v1/fleet`, { headers: bearer(secrets.bundleToken2) })),
      ).to.equal(200);

      // OPA's token rotated to a wrong one: OPA answers 401, which opa-sync logs; then the right one again.
      writeFileSync(opaTokenFile, `${secrets.wrongOpaToken}\n`);
      await putConfigMap(ns, 'policy', { 'p.rego': 'package leaks\n\nallow := false\n' });
      await waitFor('the 401 of OPA in the log', () =>
        readFileSync(sync.process.logFile, 'utf8').includes('OPA answered 401') ? true : undefined,
      );
      writeFileSync(opaTokenFile, `${secrets.opaToken}\n`);
      await waitOk(ns, 'policy');

      // The bundle tokens rotated: the old ones refused, the new one accepted.
      writeFileSync(bundleTokenFile, `${secrets.rotatedBundleToken}\n`);
      await waitFor('the rotated bundle token accepted', async () =>
        (await httpRequest(bundle, { headers: bearer(secrets.rotatedBundleToken) })).status === 200
          ? true
          : undefined,
      );
      expect(keep(await httpRequest(bundle, { headers: bearer(secrets.bundleToken1) }))).to.equal(401);

      await waitFor('a bundle pushed to the OCI registry', async () =>
        (await scrapeMetric(sync, 'opa_sync_oci_pushes_total', { result: 'pushed' })) > 0 ? true : undefined,
      );

      for (const route of ['/metrics', '/health', '/ready']) {
        answers.push((await httpRequest(`${sync.opsUrl}${route}`)).body);
      }
      await sync.stop();
      const log = readFileSync(sync.process.logFile, 'utf8');
      expect(log.length, 'the log').to.be.above(0);
      expect(leaks(log, secrets), 'secrets in the log').to.deep.equal([]);
      expect(leaks(answers.join('\n'), secrets), 'secrets in answers').to.deep.equal([]);
    });
  }
});

describe('security: Secrets are replicated only with --replicate-allow-secrets (a real Secret, both ways)', function () {
  this.timeout(120_000);
  const stops = cleanupAfterEach();
  const VALUE = randomBytes(12).toString('hex');

  async function secretIn(): Promise<string> {
    const ns = await createNamespace('secrets');
    await (
      await controlPlane()
    )
      .kubeConfig()
      .makeApiClient(CoreV1Api)
      .createNamespacedSecret({
        namespace: ns,
        body: { metadata: { name: 'db' }, stringData: { password: VALUE } },
      });
    return ns;
  }

  for (const flag of ['--replicate=v1/secrets', '--replicate-cluster=v1/secrets', '--replicate=V1/Secrets']) {
    it(`${flag} without the opt-in: refused at start (exit 2, naming the flag to pass), and nothing reaches OPA`, async function () {
      await secretIn();
      const opa = stops.add(await extraOpa());
      const sync = stops.add(await startSync({ opa, args: [flag], waitReady: false }));
      expect(await sync.process.exited).to.equal('exit 2');
      const log = readFileSync(sync.process.logFile, 'utf8');
      expect(log).to.include("replicating Secrets would expose them to every caller of OPA's data API");
      expect(log).to.include('pass --replicate-allow-secrets to allow it');
      expect(await opaData(opa, 'kubernetes')).to.equal(undefined);
      expect(log).to.not.include(VALUE);
    });
  }

  it('with --replicate-allow-secrets: the Secret is in OPA (as the API serves it, base64 data)', async function () {
    const ns = await secretIn();
    const opa = stops.add(await extraOpa());
    stops.add(await startSync({ opa, args: ['--replicate=v1/secrets', '--replicate-allow-secrets'] }));
    const doc = await waitFor('the Secret in OPA', async () => {
      const value = (await opaData(opa, `kubernetes/secrets/${ns}/db`)) as
        { data?: { password?: string } } | undefined;
      return value?.data?.password;
    });
    expect(Buffer.from(doc, 'base64').toString()).to.equal(VALUE);
  });
});

describe('security: a signed bundle changed in transit is refused by OPA, which keeps the last good one', function () {
  this.timeout(180_000);
  const stops = cleanupAfterAll();
  let ns: string;
  let sync: BundleSync;
  let proxy: TamperingProxy;
  let opa: OpaServer;
  let version = 1;

  const policy = (v: number): Record<string, string> => ({
    'p.rego': `package sec.signed\n\nmark := "untampered"\n\nversion := ${v}\n`,
  });
  const fleetEntry = async (): Promise<FleetBundleStatus | undefined> => {
    const body = JSON.parse((await httpRequest(`${sync.bundleUrl}/v1/fleet`)).body) as {
      instances: { labels: Record<string, string>; bundles: FleetBundleStatus[] }[];
    };
    return body.instances
      .find((i) => i.labels.app === 'tamper-e2e')
      ?.bundles.find((b) => b.name === 'policies');
  };

  before(async function () {
    ns = await createNamespace('tamper');
    const signer = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(runDir(), `tamper-signing-${ns}.pem`);
    writeFileSync(keyFile, signer.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await putConfigMap(ns, 'p', policy(version));
    sync = stops.add(
      await startBundleSync({
        namespaces: ns,
        args: [`--bundle-signing-key=${keyFile}`, '--bundle-signing-keyid=fleet'],
      }),
    );
    await waitOk(ns, 'p');
    proxy = stops.add(await startTamperingProxy(sync.bundleUrl));
    // Bundles through the proxy; status reports straight to opa-sync (its fleet view).
    opa = stops.add(
      await opaWithConfig({
        labels: { app: 'tamper-e2e' },
        services: { proxied: { url: proxy.url }, direct: { url: sync.bundleUrl } },
        keys: {
          fleet: {
            algorithm: 'RS256',
            key: signer.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
          },
        },
        bundles: {
          policies: {
            service: 'proxied',
            resource: 'bundles/policies',
            polling: { min_delay_seconds: 1, max_delay_seconds: 2 },
            signing: { keyid: 'fleet' },
          },
        },
        status: { service: 'direct' },
      }),
    );
    await waitDecision(opa, 'sec/signed/version', version);
  });

  const tamperings: [string, Tampering, RegExp][] = [
    [
      'a byte of a policy',
      {
        entry: (name) => name.endsWith('/p.rego'),
        change: (c) => changeByte(c, (t) => t.indexOf('untampered')),
      },
      /p\.rego: digest mismatch/,
    ],
    [
      'a byte of the signature in .signatures.json',
      {
        entry: (name) => name.endsWith('.signatures.json'),
        change: (c) => changeByte(c, (t) => t.lastIndexOf('.') + 10),
      },
      /failed to verify JWT signature/,
    ],
    [
      'a byte of the revision in .manifest',
      {
        entry: (name) => name.endsWith('.manifest'),
        change: (c) => changeByte(c, (t) => t.indexOf('"revision"') + 13),
      },
      /\.manifest: digest mismatch/,
    ],
  ];

  for (const [what, how, reason] of tamperings) {
    it(`${what} changed: OPA refuses the new revision (its status says why, shown in opa-sync's /v1/fleet) and keeps the last good one`, async function () {
      const good = version;
      const before = proxy.tampered();
      proxy.tamper(how);
      version += 1;
      await putConfigMap(ns, 'p', policy(version));
      await waitOk(ns, 'p');
      const status = await waitFor(
        `OPA's refusal of the changed bundle in the fleet view`,
        async () => {
          const entry = await fleetEntry();
          return proxy.tampered() > before && entry?.code !== undefined ? entry : undefined;
        },
        { timeoutMs: 30_000 },
      );
      expect(JSON.stringify(status)).to.match(reason);
      expect(await evaluate(opa, 'sec/signed/version')).to.equal(good);
      expect(await evaluate(opa, 'sec/signed/mark')).to.equal('untampered');
      const current = (await httpRequest(`${sync.bundleUrl}/bundles/policies`, { method: 'HEAD' })).headers
        .etag;
      expect(status.activeRevision, 'the active revision is the last good one').to.be.a('string');
      expect(`"${status.activeRevision}"`).to.not.equal(current);

      // The proxy stops tampering: the current revision activates, and the error clears.
      proxy.tamper(undefined);
      await waitDecision(opa, 'sec/signed/version', version, { timeoutMs: 30_000 });
      await waitFor('the error gone from the fleet view', async () =>
        (await fleetEntry())?.code === undefined ? true : undefined,
      );
    });
  }
});

describe('security: the web page and the fleet API are behind the bundle tokens (--bundle-token-file)', function () {
  this.timeout(120_000);
  const stops = cleanupAfterAll();
  const TOKEN = `page-${randomBytes(12).toString('hex')}`;
  const PACKAGE = `hiddenpkg${randomBytes(4).toString('hex')}`;
  let ns: string;
  let sync: BundleSync;
  let revision: string;

  before(async function () {
    ns = await createNamespace('wall');
    const tokenFile = path.join(runDir(), `wall-tokens-${ns}`);
    writeFileSync(tokenFile, `${TOKEN}\n`);
    await putConfigMap(ns, 'secret-policy', { 'p.rego': `package ${PACKAGE}\n\nallow := true\n` });
    await putConfigMap(ns, 'broken-policy', { 'b.rego': `package ${PACKAGE}.broken\n\nallow := count(1)\n` });
    sync = stops.add(await startBundleSync({ namespaces: ns, args: [`--bundle-token-file=${tokenFile}`] }));
    await waitOk(ns, 'secret-policy');
    const head = await httpRequest(`${sync.bundleUrl}/bundles/policies`, {
      method: 'HEAD',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    revision = String(head.headers.etag).replaceAll('"', '');
    // An OPA's status report, so that the fleet view has something to hide.
    const report = await httpRequest(`${sync.bundleUrl}/status`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        labels: { id: 'wall-opa', app: PACKAGE },
        bundles: { policies: { name: 'policies', active_revision: revision } },
      }),
    });
    expect(report.status, report.body).to.equal(200);
  });

  const routes = (): { name: string; url: string; method?: string; body?: string; type?: string }[] => [
    { name: 'bundle', url: `${sync.bundleUrl}/bundles/policies` },
    { name: 'bundle HEAD', url: `${sync.bundleUrl}/bundles/policies`, method: 'HEAD' },
    { name: 'bundle .tar.gz', url: `${sync.bundleUrl}/bundles/policies.tar.gz` },
    { name: 'fleet', url: `${sync.bundleUrl}/v1/fleet` },
    {
      name: 'status report',
      url: `${sync.bundleUrl}/status`,
      method: 'POST',
      body: JSON.stringify({ labels: { id: 'intruder' } }),
      type: 'application/json',
    },
    { name: 'unknown bundle-port route', url: `${sync.bundleUrl}/v1/policies` },
    { name: 'page', url: `${sync.opsUrl}/ui` },
    { name: 'page, filtered', url: `${sync.opsUrl}/ui?ns=${ns}&errors=1` },
    { name: 'page state', url: `${sync.opsUrl}/ui/state.json` },
    { name: 'page events', url: `${sync.opsUrl}/ui/events`, method: 'HEAD' },
  ];

  /** What a refused answer must not tell: names, packages, revisions, errors of the policies. */
  const secretsOfPolicies = (): string[] => [
    ns,
    PACKAGE,
    'secret-policy',
    'broken-policy',
    revision,
    'count(1)',
  ];

  const call = (
    route: ReturnType<typeof routes>[number],
    headers: Record<string, string>,
  ): Promise<HttpResponse> =>
    httpRequest(route.url, {
      method: route.method ?? 'GET',
      headers: { ...headers, ...(route.type === undefined ? {} : { 'content-type': route.type }) },
      ...(route.body === undefined ? {} : { body: route.body }),
    });

  for (const [who, headers] of [
    ['no token', {}],
    ['a wrong token', { authorization: `Bearer wrong-${TOKEN}` }],
    ['a prefix of the token', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
    ['the token in another scheme', { authorization: `Basic ${TOKEN}` }],
    ['a wrong page cookie', { cookie: `opa_sync_ui=wrong-${TOKEN}` }],
  ] as const) {
    it(`${who}: every route answers 401, and no answer tells anything about the policies`, async function () {
      for (const route of routes()) {
        const res = await call(route, headers);
        expect(res.status, `${route.name} with ${who}`).to.equal(401);
        const told = `${JSON.stringify(res.headers)}\n${res.body}`;
        for (const s of secretsOfPolicies()) expect(told, `${route.name} with ${who}`).to.not.include(s);
        expect(res.headers.etag, route.name).to.equal(undefined);
      }
    });
  }

  it('the right token (bearer, or the page cookie after the login form): every route answers', async function () {
    const want: Record<string, number> = {
      'status report': 200,
      'unknown bundle-port route': 404,
    };
    for (const route of routes()) {
      const res = await call(route, { authorization: `Bearer ${TOKEN}` });
      expect(res.status, route.name).to.equal(want[route.name] ?? 200);
    }
    const fleet = await httpRequest(`${sync.bundleUrl}/v1/fleet`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(fleet.body).to.include(PACKAGE);
    const login = await httpRequest(`${sync.opsUrl}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `token=${encodeURIComponent(TOKEN)}`,
    });
    expect(login.status).to.equal(303);
    const cookie = String(login.headers['set-cookie']).split(';')[0]!;
    for (const route of routes().filter((r) => r.url.startsWith(sync.opsUrl))) {
      expect((await call(route, { cookie })).status, `${route.name} with the cookie`).to.equal(200);
    }
    // The cookie is the page's only: the bundle server does not take it.
    const bundleWithCookie = await httpRequest(`${sync.bundleUrl}/v1/fleet`, { headers: { cookie } });
    expect(bundleWithCookie.status).to.equal(401);
    const page = await httpRequest(`${sync.opsUrl}/ui`, { headers: { cookie } });
    expect(page.body).to.include('broken-policy');
  });

  it('the probes (/health, /ready) and /metrics stay open, and tell nothing about the policies', async function () {
    for (const route of ['/health', '/ready', '/metrics']) {
      const res = await httpRequest(`${sync.opsUrl}${route}`);
      expect(res.status, route).to.equal(200);
      for (const s of secretsOfPolicies()) expect(res.body, route).to.not.include(s);
    }
  });
});
