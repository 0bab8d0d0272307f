// The validating admission webhook against the real kube-apiserver and real kubectl: broken Rego is
// refused at `kubectl create` time with the policy id, row:col and OPA's message; a ConfigMap that
// needs one not loaded yet is admitted with a `Warning:`; an update that breaks a dependent warns (or
// is refused with --admission-protect-dependents); --dry-run=server gives the same verdicts;
// --admission-mode=warn never refuses; with the webhook down (failurePolicy: Ignore) kubectl and the
// sidecar go on. opa-sync runs with the ServiceAccount rules of the RBAC test: no new permission.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import {
  configMapManifest,
  installWebhook,
  kubectlManifest,
  startAdmissionSync,
  warningLines,
  webhookConfiguration,
  webhookName,
  type AdmissionSync,
} from '../harness/admission.js';
import {
  cleanupAfterAll,
  DATA_LABEL,
  OK,
  scrapeMetric,
  startSync,
  statusOf,
  waitOk,
  waitStatus,
} from '../harness/e2e.js';
import { createNamespace, extraOpa, kubectlRun, waitFor, type OpaServer } from '../harness/index.js';
import { CONFIGMAP_RULES, serviceAccountKubeconfig } from '../harness/rbac.js';

const seed = (file: string): string => new URL(`../fixtures/seed/${file}`, import.meta.url).pathname;

const LIB = 'package shared.lib\n\nf(x) := x + 1\n';
const LIB_WITHOUT_F = 'package shared.lib\n\ng(x) := x + 1\n';
const USER = 'package app.user\n\nimport data.shared.lib\n\ny := lib.f(1)\n';
const TYPED = 'package app.typed\n\nx := count(1)\n';
/** What the probe of installWebhook sends: refused as soon as the API server calls the webhook. */
const BROKEN = 'package probe\n\nx := count(1)\n';

async function exists(namespace: string, name: string): Promise<boolean> {
  const got = await kubectlRun(['get', 'configmap', name, '-n', namespace, '-o', 'name']);
  if (got.code === 0) return true;
  expect(got.stderr).to.include('NotFound');
  return false;
}

describe('admission webhook (real kube-apiserver, kubectl and opa)', function () {
  this.timeout(180_000);
  const cleanup = cleanupAfterAll();

  async function webhookFor(
    name: string,
    sync: AdmissionSync,
    namespace: string,
    labels = true,
  ): Promise<void> {
    cleanup.defer(async () => {
      await kubectlRun(['delete', 'validatingwebhookconfiguration', name, '--ignore-not-found']);
    });
    const probe = labels
      ? configMapManifest(namespace, 'probe', { 'p.rego': BROKEN })
      : configMapManifest(namespace, 'probe', { 'p.rego': BROKEN }, {});
    await installWebhook(await webhookConfiguration(name, sync.webhookUrl, namespace, { labels }), probe);
  }

  describe('labelled ConfigMaps, Rego v1, the RBAC test’s ServiceAccount', () => {
    let ns: string;
    let opa: OpaServer;
    let kubeconfig: string;
    let sync: AdmissionSync;

    before(async () => {
      ns = await createNamespace('admission');
      opa = cleanup.add(await extraOpa());
      kubeconfig = await serviceAccountKubeconfig(ns, 'opa-sync', [ns], CONFIGMAP_RULES);
      sync = cleanup.add(await startAdmissionSync({ opa, kubeconfig, namespaces: ns }));
      await webhookFor(`admission-${ns}`, sync, ns);
    });

    it('refuses a type error in its own module with the policy id, OPA’s row:col and message, dry run or not', async () => {
      const manifest = configMapManifest(ns, 'typed', { 'p.rego': TYPED });
      const expected = `admission webhook "${webhookName('policies', `admission-${ns}`)}" denied the request: configmap ${ns}/typed does not compile: ${ns}/typed/p.rego:3:6: rego_type_error: count: invalid argument(s)`;
      const dry = await kubectlManifest(['create', '--dry-run=server'], manifest);
      expect(dry.code).to.not.equal(0);
      expect(dry.stderr).to.include(expected);
      const real = await kubectlManifest(['create'], manifest);
      expect(real.code).to.not.equal(0);
      expect(real.stderr).to.include(expected);
      expect(await exists(ns, 'typed')).to.equal(false);
      expect(
        await scrapeMetric(sync, 'opa_sync_admission_requests_total', { verdict: 'denied' }),
      ).to.be.at.least(2);
      expect(await scrapeMetric(sync, 'opa_sync_admission_duration_seconds_count')).to.be.at.least(2);
    });

    it('admits one that imports a package not loaded yet with a Warning: line; it turns ok once the dependency arrives', async () => {
      const manifest = configMapManifest(ns, 'user', { 'p.rego': USER });
      const warning = `Warning: configmap ${ns}/user needs what is not loaded yet (admitted: it loads once that arrives): ${ns}/user/p.rego:5:6: rego_type_error: undefined function data.shared.lib.f`;
      const dry = await kubectlManifest(['create', '--dry-run=server'], manifest);
      expect(dry.code, dry.stderr).to.equal(0);
      expect(warningLines(dry)).to.deep.equal([warning]);
      expect(await exists(ns, 'user')).to.equal(false);
      const real = await kubectlManifest(['create'], manifest);
      expect(real.code, real.stderr).to.equal(0);
      expect(warningLines(real)).to.deep.equal([warning]);
      expect(real.stdout).to.include(`configmap/user created`);

      const lib = await kubectlManifest(['create'], configMapManifest(ns, 'lib', { 'p.rego': LIB }));
      expect(lib.code, lib.stderr).to.equal(0);
      expect(warningLines(lib)).to.deep.equal([]);
      expect(await waitOk(ns, 'lib')).to.equal(OK);
      expect(await waitOk(ns, 'user')).to.equal(OK);
    });

    it('warns, naming the dependent, when an update of its dependency would break it', async () => {
      const broken = configMapManifest(ns, 'lib', { 'p.rego': LIB_WITHOUT_F });
      const warning = `Warning: this change of configmap ${ns}/lib breaks a ConfigMap that compiles today: configmap ${ns}/user (${ns}/user/p.rego:5:6: rego_type_error: undefined function data.shared.lib.f)`;
      const dry = await kubectlManifest(['replace', '--dry-run=server'], broken);
      expect(dry.code, dry.stderr).to.equal(0);
      expect(warningLines(dry)).to.deep.equal([warning]);
      const real = await kubectlManifest(['replace'], broken);
      expect(real.code, real.stderr).to.equal(0);
      expect(warningLines(real)).to.deep.equal([warning]);
      // What the warning foretold: OPA refuses the new lib because of user, which the annotation shows later.
      const status = await waitStatus(ns, 'lib', (s) => s.includes('undefined function data.shared.lib.f'));
      expect(status).to.include(`${ns}/user/p.rego`);
      expect(await statusOf(ns, 'user')).to.equal(OK);
    });

    it('refuses a data ConfigMap whose value is not JSON with the message of the annotation', async () => {
      const manifest = configMapManifest(ns, 'bad-data', { 'x.json': '{"a":' }, DATA_LABEL);
      const real = await kubectlManifest(['create'], manifest);
      expect(real.code).to.not.equal(0);
      expect(real.stderr).to.include(
        `admission webhook "${webhookName('data', `admission-${ns}`)}" denied the request: configmap ${ns}/bad-data: invalid_json: key "x.json" is not valid JSON:`,
      );
      const good = await kubectlManifest(
        ['create'],
        configMapManifest(ns, 'good-data', { 'x.json': '{"a":1}' }, DATA_LABEL),
      );
      expect(good.code, good.stderr).to.equal(0);
      expect(await waitOk(ns, 'good-data')).to.equal(OK);
    });

    it('with the webhook down and failurePolicy: Ignore, kubectl still works and the sidecar still annotates', async () => {
      await sync.stop();
      const plain = cleanup.add(await startSync({ opa, kubeconfig, namespaces: ns }));
      const created = await kubectlManifest(
        ['create'],
        configMapManifest(ns, 'while-down', { 'p.rego': TYPED }),
      );
      expect(created.code, created.stderr).to.equal(0);
      expect(await waitStatus(ns, 'while-down', (s) => s.includes('rego_type_error'))).to.include(
        'count: invalid argument(s)',
      );
      const fine = await kubectlManifest(
        ['create'],
        configMapManifest(ns, 'fine', { 'p.rego': 'package app.fine\n\nz := 1\n' }),
      );
      expect(fine.code, fine.stderr).to.equal(0);
      expect(await waitOk(ns, 'fine')).to.equal(OK);
      await plain.stop();
    });
  });

  describe('seed-era --policies mode, Rego v0 (the article)', () => {
    let ns: string;

    before(async () => {
      ns = await createNamespace('admission-v0');
      const opa = cleanup.add(await extraOpa({ extraArgs: ['--v0-compatible'] }));
      const sync = cleanup.add(
        // No --admission-rego-version: the pushed OPA says it parses v0.
        await startAdmissionSync({ opa, args: [`--policies=${ns}`] }),
      );
      await webhookFor(`admission-${ns}`, sync, ns, false);
    });

    it('refuses the article’s Rego with its U+00A0 indentation, pointing at the character; with spaces it ends ok', async () => {
      expect(readFileSync(seed('ensure-nap-exists.nbsp.rego'), 'utf8')).to.include('\u00a0');
      const refused = await kubectlRun([
        'create',
        'configmap',
        'ensure-nap-existence',
        `--from-file=ensure-nap-exists.rego=${seed('ensure-nap-exists.nbsp.rego')}`,
        '-n',
        ns,
      ]);
      expect(refused.code).to.not.equal(0);
      expect(refused.stderr).to.include(
        `denied the request: configmap ${ns}/ensure-nap-existence does not compile: ${ns}/ensure-nap-existence/ensure-nap-exists.rego:7:1: rego_parse_error: illegal non-breaking space character, use a regular space instead (U+00A0, a non-breaking space as text copied from a web page has, at 7:1: replace it with a regular space)`,
      );
      expect(await exists(ns, 'ensure-nap-existence')).to.equal(false);

      const admitted = await kubectlRun([
        'create',
        'configmap',
        'ensure-nap-existence',
        `--from-file=${seed('ensure-nap-exists.rego')}`,
        '-n',
        ns,
      ]);
      expect(admitted.code, admitted.stderr).to.equal(0);
      expect(warningLines(admitted)).to.deep.equal([]);
      expect(await waitOk(ns, 'ensure-nap-existence')).to.equal('{"status":"ok"}');
    });
  });

  describe('--admission-protect-dependents and --admission-mode=warn', () => {
    it('refuses an update that breaks a dependent with --admission-protect-dependents, dry run or not', async () => {
      const ns = await createNamespace('admission-protect');
      const opa = cleanup.add(await extraOpa());
      const sync = cleanup.add(
        await startAdmissionSync({ opa, namespaces: ns, args: ['--admission-protect-dependents'] }),
      );
      await webhookFor(`admission-${ns}`, sync, ns);
      for (const [name, text] of [
        ['lib', LIB],
        ['user', USER],
      ] as const) {
        const created = await kubectlManifest(['create'], configMapManifest(ns, name, { 'p.rego': text }));
        expect(created.code, created.stderr).to.equal(0);
        await waitOk(ns, name);
      }
      const broken = configMapManifest(ns, 'lib', { 'p.rego': LIB_WITHOUT_F });
      const expected = `denied the request: this change of configmap ${ns}/lib breaks a ConfigMap that compiles today: configmap ${ns}/user (${ns}/user/p.rego:5:6: rego_type_error: undefined function data.shared.lib.f)`;
      for (const args of [['replace', '--dry-run=server'], ['replace']]) {
        const result = await kubectlManifest(args, broken);
        expect(result.code, args.join(' ')).to.not.equal(0);
        expect(result.stderr).to.include(expected);
      }
      const deleted = await kubectlRun(['delete', 'configmap', 'lib', '-n', ns]);
      expect(deleted.code).to.not.equal(0);
      expect(deleted.stderr).to.include(
        `this delete of configmap ${ns}/lib breaks a ConfigMap that compiles today: configmap ${ns}/user`,
      );
      expect(await statusOf(ns, 'user')).to.equal(OK);
    });

    it('never refuses with --admission-mode=warn: what would be refused is a Warning: line', async () => {
      const ns = await createNamespace('admission-warn');
      const opa = cleanup.add(await extraOpa());
      const sync = cleanup.add(
        await startAdmissionSync({ opa, namespaces: ns, args: ['--admission-mode=warn'] }),
      );
      cleanup.defer(async () => {
        await kubectlRun([
          'delete',
          'validatingwebhookconfiguration',
          `admission-${ns}`,
          '--ignore-not-found',
        ]);
      });
      await kubectlRun(['apply', '-f', '-'], {
        input: await webhookConfiguration(`admission-${ns}`, sync.webhookUrl, ns),
      });
      const manifest = configMapManifest(ns, 'typed', { 'p.rego': TYPED });
      const warning = `Warning: would be refused: configmap ${ns}/typed does not compile: ${ns}/typed/p.rego:3:6: rego_type_error: count: invalid argument(s)`;
      // The API server takes the configuration up asynchronously: the dry run warns once it calls opa-sync.
      const dry = await waitFor('the webhook to warn', async () => {
        const result = await kubectlManifest(['create', '--dry-run=server'], manifest);
        return warningLines(result).length > 0 ? result : undefined;
      });
      expect(dry.code).to.equal(0);
      expect(warningLines(dry)).to.deep.equal([warning]);
      const real = await kubectlManifest(['create'], manifest);
      expect(real.code, real.stderr).to.equal(0);
      expect(warningLines(real)).to.deep.equal([warning]);
      expect(await waitStatus(ns, 'typed', (s) => s.includes('rego_type_error'))).to.include(
        'count: invalid argument(s)',
      );
      expect(await scrapeMetric(sync, 'opa_sync_admission_requests_total', { verdict: 'denied' })).to.equal(
        0,
      );
    });
  });
});
