// `npm run screenshots`: writes a screenshot of each view of the web page to docs/screenshots/ (the
// README shows them), from a real scene (scripts/ui-scene.ts): a wide screen in light, the policies in
// dark, and a phone. Everything it starts is stopped at the end, and on Ctrl-C.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setUpScene, type UiScene } from './ui-scene.js';

const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'screenshots');
const log = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

let scene: UiScene | undefined;
process.once('SIGINT', () => {
  void (scene?.stop() ?? Promise.resolve()).then(() => process.exit(130));
});

async function main(): Promise<void> {
  mkdirSync(out, { recursive: true });
  scene = await setUpScene(log);
  // A new revision that the slow OPA does not take (drift), then a broken policy (refused).
  await scene.newRevision(12);
  await scene.setQuota(true);
  // The drifted OPA is shown once its report and the new revision are both in.
  const live = await scene.open();
  await live.locator('#fleet .badge.warn').first().waitFor();
  await live.context().close();
  // Without JavaScript: the server's first render, which no live update replaces mid-screenshot.
  const page = await scene.open({ javaScript: false });
  // An element screenshot scrolls to it; the sticky header would cover its top.
  await page.evaluate('document.querySelector("header").style.position = "static"');
  const shots: [string, string][] = [
    ['policies', '#policies'],
    ['bundles', '#bundles'],
    ['fleet', '#fleet'],
    ['replication', '#replication'],
    ['opa-push', '#opa'],
  ];
  for (const [name, selector] of shots) {
    const file = path.join(out, `${name}.png`);
    await page.locator(selector).screenshot({ path: file });
    log(`wrote ${path.relative(process.cwd(), file)}`);
  }
  const overview = path.join(out, 'overview.png');
  await page.screenshot({ path: overview, fullPage: true });
  log(`wrote ${path.relative(process.cwd(), overview)}`);
  const dark = await scene.open({ dark: true, javaScript: false });
  const darkFile = path.join(out, 'policies-dark.png');
  await dark.locator('#policies').screenshot({ path: darkFile });
  log(`wrote ${path.relative(process.cwd(), darkFile)}`);
  const phone = await scene.open({ width: 390, height: 844, query: 'errors=1', javaScript: false });
  const phoneFile = path.join(out, 'phone.png');
  await phone.screenshot({ path: phoneFile });
  log(`wrote ${path.relative(process.cwd(), phoneFile)}`);
}

main()
  .then(() => scene?.stop())
  .catch(async (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await scene?.stop();
    process.exitCode = 1;
  });
