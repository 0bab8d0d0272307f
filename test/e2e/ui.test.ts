// The web page in a real browser (Debian's chromium through playwright-core), against a real
// kube-apiserver, OPA and opa-sync: a broken ConfigMap shows OPA's error on the open page without a
// reload and clears when fixed; OPAs that join the fleet appear; one left on an old revision is shown
// as drifted, first; the token wall keeps an anonymous browser out. And the page is readable: axe-core
// finds no serious violation in light or dark, it fits a phone's width, and it renders without
// JavaScript.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { opaWithConfig } from '../harness/bundles.js';
import { launchBrowser, seriousViolations } from '../harness/browser.js';
import {
  cleanupAfterAll,
  putConfigMap,
  startBundleSync,
  waitError,
  waitOk,
  type BundleSync,
} from '../harness/e2e.js';
import { createNamespace, sharedOpa, waitFor, type OpaServer } from '../harness/index.js';
import { runDir } from '../harness/run-dir.js';

describe('web page in a browser', function () {
  this.timeout(180_000);
  const suite = cleanupAfterAll();
  let browser: Browser;
  let ns: string;
  let sync: BundleSync;
  const token = `ui-${randomBytes(12).toString('hex')}`;
  const pkg = `ui_${randomBytes(3).toString('hex')}`;
  const good = (value: number): Record<string, string> => ({
    'main.rego': `package ${pkg}\n\nallow if input.x == ${value}\n`,
  });
  const BROKEN = { 'main.rego': `package ${pkg}\n\nallow if {\n  input.x ==\n}\n` };

  /** A browser page, logged in through the token wall. */
  async function loggedInPage(context: BrowserContext): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${sync.opsUrl}/ui`);
    await page.getByLabel('Token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: /^Policies/ }).waitFor();
    return page;
  }

  /** An OPA that pulls the bundle from opa-sync and reports its status there. */
  const fleetOpa = async (name: string, polling: Record<string, number>): Promise<OpaServer> =>
    suite.add(
      await opaWithConfig({
        labels: { name, app: 'ui-e2e' },
        services: { opasync: { url: sync.bundleUrl, credentials: { bearer: { token } } } },
        bundles: { policies: { service: 'opasync', resource: 'bundles/policies', polling } },
        status: { service: 'opasync' },
      }),
    );
  const LONG_POLL = { long_polling_timeout_seconds: 30 };
  // Asks again only after an hour: whatever it activated first, it keeps.
  const SLOW_POLL = { min_delay_seconds: 3600, max_delay_seconds: 3600 };

  /** The fleet row of the OPA labelled name=<name>. */
  const fleetRow = (page: Page, name: string) =>
    page.locator('#fleet tbody tr').filter({ hasText: `name=${name}` });

  before(async () => {
    browser = await launchBrowser();
    suite.defer(() => browser.close());
    ns = await createNamespace('ui');
    const tokenFile = path.join(runDir(), 'ui-tokens');
    writeFileSync(tokenFile, `${token}\n`);
    await putConfigMap(ns, 'base', good(1));
    sync = suite.add(
      await startBundleSync({
        opa: await sharedOpa(),
        namespaces: ns,
        args: [`--bundle-token-file=${tokenFile}`],
      }),
    );
  });

  it('keeps an anonymous browser out behind the token wall', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const res = await page.goto(`${sync.opsUrl}/ui`);
      expect(res?.status()).to.equal(401);
      expect(await page.content()).not.to.include(`${ns}/base`);
      await page.getByLabel('Token').fill('not-a-token');
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByRole('alert').waitFor();
      expect(await page.getByRole('alert').textContent()).to.include('not one of the token file');
      expect(await page.content()).not.to.include(`${ns}/base`);
      // Neither the snapshot nor the event stream answers without the cookie.
      const state = await page.request.get(`${sync.opsUrl}/ui/state.json`);
      expect(state.status()).to.equal(401);
      // With the token, the page; the cookie is out of the script's reach.
      await page.getByLabel('Token').fill(token);
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.locator(`tr[data-origin="configmap:policy:${ns}/base"]`).waitFor();
      expect(await page.evaluate('document.cookie')).to.equal('');
      expect(page.url()).not.to.include(token);
    } finally {
      await context.close();
    }
  });

  it("lists a broken ConfigMap with OPA's error on the open page, and clears it when fixed", async () => {
    const context = await browser.newContext();
    try {
      const page = await loggedInPage(context);
      // Survives only as long as the page is not reloaded.
      await page.evaluate('window.notReloaded = true');
      const row = page.locator(`tr[data-origin="configmap:policy:${ns}/broken"]`);
      await putConfigMap(ns, 'broken', BROKEN);
      await row.locator('.errors').first().waitFor();
      const text = (await row.textContent()) ?? '';
      expect(text).to.include('rego_parse_error');
      expect(text).to.match(new RegExp(`${ns}/broken/main\\.rego:5:1`));
      // The offending line, as the module has it.
      expect(await row.locator('pre.line').first().textContent()).to.match(/^5 }/);
      await waitError(ns, 'broken');
      // "errors only" shows it and hides the good one, without a reload either.
      await page.getByLabel('errors only').check();
      await waitFor('the filter applied', async () =>
        (await page.locator(`tr[data-origin="configmap:policy:${ns}/base"]`).count()) === 0
          ? true
          : undefined,
      );
      expect(page.url()).to.include('errors=1');
      await page.getByLabel('errors only').uncheck();

      await putConfigMap(ns, 'broken', good(2));
      // Both sinks, the OPA push and the bundle, say ok.
      await waitFor('the error cleared on the page', async () =>
        (await row.locator('.errors').count()) === 0 && (await row.locator('.badge.ok').count()) === 2
          ? true
          : undefined,
      );
      await waitOk(ns, 'broken');
      expect(await page.evaluate('window.notReloaded')).to.equal(true);
    } finally {
      await context.close();
    }
  });

  it('shows a second OPA joining the fleet, and one left on an old revision as drifted, first', async () => {
    const context = await browser.newContext();
    try {
      const page = await loggedInPage(context);
      await fleetOpa('first', LONG_POLL);
      await fleetRow(page, 'first').waitFor();
      await fleetOpa('second', LONG_POLL);
      await fleetRow(page, 'second').waitFor();
      const stale = await fleetOpa('stale', SLOW_POLL);
      expect(stale.url).to.be.a('string');
      await fleetRow(page, 'stale').locator('.badge.ok').waitFor();

      // A new revision: the long-polling OPAs take it, the slow one stays where it was.
      await putConfigMap(ns, 'base', good(3));
      await fleetRow(page, 'stale').locator('.badge.warn', { hasText: 'drifted' }).waitFor();
      await waitFor('the others on the new revision', async () =>
        (await fleetRow(page, 'first').locator('.badge.ok').count()) === 1 &&
        (await fleetRow(page, 'second').locator('.badge.ok').count()) === 1
          ? true
          : undefined,
      );
      const firstRow = (await page.locator('#fleet tbody tr').first().textContent()) ?? '';
      expect(firstRow).to.include('name=stale');
      expect(await page.locator('#fleet h2').textContent()).to.match(/1 not on the current revision/);
    } finally {
      await context.close();
    }
  });

  it('is readable: no serious axe violation in light or dark, fits a phone, renders without JavaScript', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const context = await browser.newContext({ colorScheme });
      try {
        const page = await loggedInPage(context);
        const violations = await seriousViolations(page);
        expect(
          violations.map((v) => `${v.id}: ${v.help}`),
          colorScheme,
        ).to.deep.equal([]);
      } finally {
        await context.close();
      }
    }
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
    try {
      const page = await loggedInPage(phone);
      const [scroll, width] = await page.evaluate<[number, number]>(
        '[document.documentElement.scrollWidth, window.innerWidth]',
      );
      expect(scroll).to.be.at.most(width);
      expect(await seriousViolations(page)).to.deep.equal([]);
    } finally {
      await phone.close();
    }
    const noScript = await browser.newContext({ javaScriptEnabled: false });
    try {
      const page = await loggedInPage(noScript);
      expect(await page.locator(`tr[data-origin="configmap:policy:${ns}/base"]`).count()).to.equal(1);
    } finally {
      await noScript.close();
    }
  });
});
