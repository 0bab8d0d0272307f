// Measures the web page on the scene of scripts/ui-scene.ts (real control plane, OPAs, opa-sync, browser):
// - what a first load transfers (the page, its stylesheet and script, as the browser counts them:
//   headers and gzip'd bodies), and the sizes before compression;
// - how long an edit takes to show on an open page: from the ConfigMap write to the page showing the
//   outcome, and from opa-sync's first outcome for it (the `at` of the snapshot) to the page, which is
//   the page's own share (the live updates' look interval and the render). Edits are spaced by a
//   random 0–500 ms, so that they fall at any phase of that interval.
//
//   npx tsx scripts/measure-ui.ts [--edits N]      (default 10 edits, alternating broken and fixed)
import { setUpScene, type UiScene } from './ui-scene.js';

const editsArg = process.argv.indexOf('--edits');
const EDITS = editsArg >= 0 ? Number(process.argv[editsArg + 1]) : 10;
if (!Number.isInteger(EDITS) || EDITS < 2) throw new Error('--edits must be a whole number >= 2');

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

interface SinkAt {
  sink: string;
  errors: unknown[];
  at: string;
}

const pct = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
const summary = (values: number[]): string => {
  const sorted = [...values].sort((a, b) => a - b);
  return `median ${pct(sorted, 50)} ms, p90 ${pct(sorted, 90)} ms, max ${sorted.at(-1)} ms (n=${sorted.length})`;
};

async function main(scene: UiScene): Promise<void> {
  // First load: everything the browser fetches for /ui, as it counts the bytes on the wire.
  const page = await scene.open();
  const measured: Promise<{ url: string; transferred: number; decoded: number }>[] = [];
  page.on('requestfinished', (request) => {
    const url = new URL(request.url()).pathname;
    // The event stream never finishes; the page and its two assets do.
    measured.push(
      request.sizes().then(async (s) => {
        const response = await request.response();
        // What came over the wire: chromium does not always count a small body it had at once.
        const length = Number((await response?.allHeaders())?.['content-length'] ?? s.responseBodySize);
        const decoded = await (response?.body().then(
          (b) => b.length,
          () => 0, // a redirect has no body
        ) ?? 0);
        return { url, transferred: s.responseHeadersSize + length, decoded };
      }),
    );
  });
  // As a first visit: nothing from the browser's cache.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  await page.reload();
  await page.waitForLoadState('load');
  await page.locator('#live-state', { hasText: 'live' }).waitFor();
  const sizes = await Promise.all(measured);
  const total = sizes.reduce((n, s) => n + s.transferred, 0);
  for (const s of sizes) log(`  ${s.url}: ${s.transferred} B transferred, ${s.decoded} B decoded`);
  const stateJson = await page.request.get(`${scene.sync.opsUrl}/ui/state.json`);
  process.stdout.write(
    `first load: ${total} B transferred in ${sizes.length} responses (${sizes.map((s) => `${s.url} ${s.transferred} B`).join(', ')}); ` +
      `policies on the page: ${await page.locator('#policies tbody tr').count()}, snapshot JSON ${(await stateJson.body()).length} B\n`,
  );

  const origin = `configmap:policy:${scene.namespace}/quota`;
  const row = page.locator(`tr[data-origin="${origin}"]`);
  const writeToPage: number[] = [];
  const outcomeToPage: number[] = [];
  for (let i = 0; i < EDITS; i += 1) {
    const broken = i % 2 === 0;
    // Edits at a random phase of the page's look interval: one right after the last update would
    // always wait for nearly a whole interval, and the figures would say so rather than the page.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 500));
    const before = Date.now();
    // The page's own clock, when the row first shows the new outcome (same machine, same clock).
    const seen = page.waitForFunction(
      ({ selector, wantErrors }) => {
        interface El {
          querySelector(s: string): El | null;
        }
        const doc = (globalThis as unknown as { document: El }).document;
        const tr = doc.querySelector(selector);
        return tr !== null && (tr.querySelector('.errors') !== null) === wantErrors ? Date.now() : false;
      },
      { selector: `tr[data-origin="${origin}"]`, wantErrors: broken },
      { polling: 10, timeout: 30_000 },
    );
    await scene.setQuota(broken);
    const shownAt = (await (await seen).jsonValue()) as number;
    const state = (await (await page.request.get(`${scene.sync.opsUrl}/ui/state.json`)).json()) as {
      policies: { key: string; sinks: SinkAt[] }[];
    };
    const sinks = state.policies.find((p) => p.key === origin)?.sinks ?? [];
    // The row shows errors once one sink reports them, and is clean once every sink says ok.
    const times = sinks.filter((x) => x.errors.length > 0 === broken).map((x) => Date.parse(x.at));
    const firstOutcome = broken ? Math.min(...times) : Math.max(...times);
    writeToPage.push(shownAt - before);
    outcomeToPage.push(shownAt - firstOutcome);
    log(
      `  edit ${i + 1} (${broken ? 'broken' : 'fixed'}): write → page ${shownAt - before} ms, outcome → page ${shownAt - firstOutcome} ms`,
    );
  }
  expectRow(await row.count());
  process.stdout.write(`ConfigMap write → shown on the open page: ${summary(writeToPage)}\n`);
  process.stdout.write(`opa-sync's outcome → shown on the open page: ${summary(outcomeToPage)}\n`);
}

function expectRow(count: number): void {
  if (count !== 1) throw new Error(`expected the quota row on the page, found ${count}`);
}

let scene: UiScene | undefined;
process.once('SIGINT', () => {
  void (scene?.stop() ?? Promise.resolve()).then(() => process.exit(130));
});
setUpScene(log)
  .then(async (s) => {
    scene = s;
    await main(s);
  })
  .then(
    () => scene?.stop(),
    async (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      await scene?.stop();
      process.exitCode = 1;
    },
  );
