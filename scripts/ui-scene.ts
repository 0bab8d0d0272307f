// A scene for the web page, shared by `npm run screenshots` and `npm run bench -- ui`: a local control
// plane (the test harness's), opa-sync pushing into an OPA, serving bundles behind a token, replicating
// NetworkPolicies, with one broken policy ConfigMap and three OPAs pulling the bundle, one of them left
// on an old revision. Everything is real; stop() ends all of it.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { opaWithConfig } from '../test/harness/bundles.js';
import { launchBrowser } from '../test/harness/browser.js';
import { putConfigMap, startBundleSync, waitError, waitOk, type BundleSync } from '../test/harness/e2e.js';
import { createNamespace, kubectl, sharedOpa, stopHarness, waitFor } from '../test/harness/index.js';
import { removeRunDir, runDir } from '../test/harness/run-dir.js';
import { ensureTools } from './tools.js';

export const BROKEN_REGO = 'package team.quota\n\nlimit := {\n  "cpu": input.cpu,\n  "memory":\n}\n';
export const GOOD_REGO = 'package team.quota\n\nlimit := {"cpu": input.cpu, "memory": input.memory}\n';

export interface UiScene {
  sync: BundleSync;
  namespace: string;
  token: string;
  browser: Browser;
  /** A page of the browser, logged in, at /ui (with `query`). */
  open(options?: {
    width?: number;
    height?: number;
    dark?: boolean;
    query?: string;
    /** Off: the page as first rendered, never replaced by a live update (for screenshots). */
    javaScript?: boolean;
  }): Promise<Page>;
  /** Makes the ConfigMap `quota` broken or good, and waits for its annotation to say so. */
  setQuota(broken: boolean): Promise<void>;
  /** Changes the data ConfigMap `settings`: a new bundle revision (the OPA eu-2 stays on the old one). */
  newRevision(maxReplicas: number): Promise<void>;
  stop(): Promise<void>;
}

const networkPolicy = (namespace: string, name: string): string =>
  JSON.stringify({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name, namespace },
    spec: { podSelector: { matchLabels: { app: name } }, policyTypes: ['Ingress'] },
  });

/** Sets the scene up; `log` hears what is being done. */
export async function setUpScene(log: (line: string) => void): Promise<UiScene> {
  await ensureTools();
  const stops: (() => Promise<void>)[] = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    await stopHarness().catch(() => undefined);
    removeRunDir();
  };
  try {
    log('starting the control plane, OPA and a browser');
    const browser = await launchBrowser();
    stops.push(() => browser.close());
    const namespace = await createNamespace('shop');
    const token = `ui-${randomBytes(12).toString('hex')}`;
    const tokenFile = path.join(runDir(), 'ui-tokens');
    writeFileSync(tokenFile, `${token}\n`);
    const label = { 'openpolicyagent.org/policy': 'rego' };
    await putConfigMap(
      namespace,
      'admission',
      {
        'main.rego':
          'package kubernetes.admission\n\ndeny contains msg if {\n  input.request.kind.kind == "Pod"\n  not input.request.object.metadata.labels.app\n  msg := "every Pod needs an app label"\n}\n',
      },
      { labels: label },
    );
    await putConfigMap(
      namespace,
      'helpers',
      {
        'labels.rego': 'package lib.labels\n\nhas(obj, key) if obj.metadata.labels[key]\n',
        'names.rego': 'package lib.names\n\nvalid(name) if regex.match(`^[a-z0-9-]+$`, name)\n',
      },
      { labels: label },
    );
    await putConfigMap(
      namespace,
      'settings',
      { 'limits.json': '{"maxReplicas": 10}' },
      { labels: { 'openpolicyagent.org/data': 'opa' } },
    );
    await putConfigMap(namespace, 'quota', { 'main.rego': GOOD_REGO }, { labels: label });
    for (const name of ['frontend', 'backend']) {
      await kubectl(['apply', '-f', '-'], networkPolicy(namespace, name));
    }
    log('starting opa-sync');
    const sync = await startBundleSync({
      opa: await sharedOpa(),
      namespaces: namespace,
      args: [`--bundle-token-file=${tokenFile}`, '--replicate-cluster=networking.k8s.io/v1/networkpolicies'],
    });
    stops.push(() => sync.stop());
    const fleetOpa = async (name: string, polling: Record<string, number>): Promise<void> => {
      const opa = await opaWithConfig({
        labels: { name, region: name === 'eu-2' ? 'eu' : 'us' },
        services: { opasync: { url: sync.bundleUrl, credentials: { bearer: { token } } } },
        bundles: { policies: { service: 'opasync', resource: 'bundles/policies', polling } },
        status: { service: 'opasync' },
      });
      stops.push(() => opa.stop());
    };
    log('starting three OPAs that pull the bundle');
    await fleetOpa('us-1', { long_polling_timeout_seconds: 30 });
    await fleetOpa('us-2', { long_polling_timeout_seconds: 30 });
    await fleetOpa('eu-2', { min_delay_seconds: 3600, max_delay_seconds: 3600 });
    await waitFor('three OPAs in the fleet', async () => {
      const res = await fetch(`${sync.bundleUrl}/v1/fleet`, {
        headers: { authorization: `Bearer ${token}` },
      });
      const body = (await res.json()) as { instances: unknown[] };
      return body.instances.length === 3 ? true : undefined;
    });
    const setQuota = async (broken: boolean): Promise<void> => {
      await putConfigMap(
        namespace,
        'quota',
        { 'main.rego': broken ? BROKEN_REGO : GOOD_REGO },
        { labels: label },
      );
      await (broken ? waitError : waitOk)(namespace, 'quota');
    };
    const open: UiScene['open'] = async (options = {}) => {
      const context = await browser.newContext({
        viewport: { width: options.width ?? 1280, height: options.height ?? 900 },
        colorScheme: options.dark === true ? 'dark' : 'light',
        deviceScaleFactor: 1,
        javaScriptEnabled: options.javaScript ?? true,
      });
      const page = await context.newPage();
      await page.goto(`${sync.opsUrl}/ui`);
      await page.getByLabel('Token').fill(token);
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByRole('heading', { name: /^Policies/ }).waitFor();
      if (options.query !== undefined) {
        await page.goto(`${sync.opsUrl}/ui?${options.query}`);
      }
      return page;
    };
    const newRevision = async (maxReplicas: number): Promise<void> => {
      await putConfigMap(
        namespace,
        'settings',
        { 'limits.json': JSON.stringify({ maxReplicas }) },
        { labels: { 'openpolicyagent.org/data': 'opa' } },
      );
      await waitOk(namespace, 'settings');
    };
    return { sync, namespace, token, browser, open, setQuota, newRevision, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
