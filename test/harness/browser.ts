// A real browser for the web page's tests and screenshots: Debian's chromium (installed by
// scripts/browser.ts when missing), driven by playwright-core, headless, one per test run or script.
// A test that needs it and cannot start it fails with the reason.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ensureBrowser } from '../../scripts/browser.js';

const require = createRequire(import.meta.url);

/** Starts headless chromium (installing it first when missing). */
export async function launchBrowser(): Promise<Browser> {
  const executablePath = await ensureBrowser();
  // As root, chromium refuses to run with its sandbox.
  return chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
}

let axeSource: string | undefined;

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: unknown[] }[];
}

/**
 * axe-core's violations of the page as it is now, of impact serious or critical. axe is evaluated
 * through the DevTools protocol, which the page's Content-Security-Policy does not apply to.
 */
export async function seriousViolations(page: Page): Promise<AxeViolation[]> {
  axeSource ??= readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(): Promise<{ violations: AxeViolation[] }> } }).axe;
    return (await axe.run()).violations;
  });
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}
