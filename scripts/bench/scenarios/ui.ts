// The web page (/ui), on the scene of scripts/ui-scene.ts (a real control plane, OPAs, opa-sync with
// bundles and the ops port, Debian's chromium through playwright-core):
// - what a first visit transfers (the page, its stylesheet and script, as the browser counts them: headers
//   and gzip'd bodies), and the sizes before compression;
// - how long an edit takes to show on an open page: from the ConfigMap write to the page showing the
//   outcome, and from opa-sync's first outcome for it (the `at` of the snapshot) to the page, which is the
//   page's own share (the live updates' look interval and the render). Edits alternate broken and fixed,
//   spaced by a random 0–500 ms, so that they fall at any phase of that interval. Goal (issue 16): within a
//   second of the change. No peer: nothing else serves this page.
import type { Page } from 'playwright-core';
import { setUpScene, type UiScene } from '../../ui-scene.js';
import { machineLine } from '../machine.js';
import { goalsTable, verdictOf, type Goal, type ScenarioFile } from '../report.js';
import { fmt, fmtStat, percentile, stat, type Stat } from '../stats.js';
import type { Scenario } from '../scenario.js';

interface SinkAt {
  sink: string;
  errors: unknown[];
  at: string;
}

interface FirstLoad {
  /** Bytes on the wire (headers and gzip'd bodies) of the page and its assets, and before compression. */
  transferredB: number;
  decodedB: number;
  responses: { url: string; transferred: number; decoded: number }[];
  policiesShown: number;
}

/** What a first visit transfers: everything the browser fetches for /ui, as it counts the bytes. */
async function firstLoad(
  scene: UiScene,
  log: (line: string) => void,
): Promise<{ load: FirstLoad; page: Page }> {
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
  page.removeAllListeners('requestfinished');
  const sizes = await Promise.all(measured);
  const total = sizes.reduce((n, s) => n + s.transferred, 0);
  for (const s of sizes)
    log(`ui first load: ${s.url}: ${s.transferred} B transferred, ${s.decoded} B decoded`);
  return {
    load: {
      transferredB: total,
      decodedB: sizes.reduce((n, s) => n + s.decoded, 0),
      responses: sizes,
      policiesShown: await page.locator('#policies tbody tr').count(),
    },
    page,
  };
}

interface UiRun {
  run: number;
  edits: number;
  /** ConfigMap write → the open page shows its outcome (ms), edit by edit. */
  writeToPageMs: number[];
  /** opa-sync's first outcome for the edit → the page shows it (ms): the page's own share. */
  outcomeToPageMs: number[];
}

/** `edits` edits of one ConfigMap (broken, fixed, …) at a random phase, each timed until the open page shows it. */
async function editRun(
  scene: UiScene,
  page: Page,
  run: number,
  edits: number,
  log: (line: string) => void,
): Promise<UiRun> {
  const origin = `configmap:policy:${scene.namespace}/quota`;
  const row = page.locator(`tr[data-origin="${origin}"]`);
  const writeToPage: number[] = [];
  const outcomeToPage: number[] = [];
  for (let i = 0; i < edits; i += 1) {
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
      `ui run ${run}: edit ${i + 1} (${broken ? 'broken' : 'fixed'}): write → page ${shownAt - before} ms, outcome → page ${shownAt - firstOutcome} ms`,
    );
  }
  const rows = await row.count();
  if (rows !== 1) throw new Error(`expected the quota row on the page, found ${rows}`);
  return { run, edits, writeToPageMs: writeToPage, outcomeToPageMs: outcomeToPage };
}

export const ui: Scenario = {
  id: 'ui',
  title: 'The web page: first load size, and ConfigMap edit → shown on an open page',
  defaults: '--runs 3 --edits 10',
  async run(ctx) {
    const runs = ctx.options.runs ?? 3;
    const edits = ctx.options.edits ?? 10;
    const machine = ctx.machine();
    const scene = await setUpScene(ctx.log);
    try {
      const { load, page } = await firstLoad(scene, ctx.log);
      ctx.log(`ui: first load ${load.transferredB} B transferred in ${load.responses.length} responses`);
      const results: UiRun[] = [];
      for (let r = 1; r <= runs; r++) results.push(await editRun(scene, page, r, edits, ctx.log));
      const all = results.flatMap((x) => x.writeToPageMs);
      const summary: Record<string, Stat | number | FirstLoad> = {
        firstLoad: load,
        writeP50: stat(results.map((x) => percentile(x.writeToPageMs, 50))),
        writeP90: stat(results.map((x) => percentile(x.writeToPageMs, 90))),
        writeMax: stat(results.map((x) => Math.max(...x.writeToPageMs))),
        outcomeP50: stat(results.map((x) => percentile(x.outcomeToPageMs, 50))),
        outcomeMax: stat(results.map((x) => Math.max(...x.outcomeToPageMs))),
      };
      const slowest = Math.max(...all);
      const goals: Goal[] = [
        {
          measure: 'Web page: a ConfigMap edit shown on an open page (slowest of all edits, ms)',
          peer: '–',
          ours: `${fmt(slowest, 0)} (median ${fmt(percentile(all, 50), 0)})`,
          goal: '≤ 1,000 ms',
          ...verdictOf(slowest, 1000),
        },
        {
          measure: 'Web page: first load transferred (B, page + stylesheet + script)',
          peer: '–',
          ours: fmt(load.transferredB, 0),
          goal: 'small (stated)',
          verdict: 'n/a',
          detail: 'information',
        },
      ];
      return [{ key: 'ui', command: ctx.command, machine, runs: results, summary, goals, notes: [] }];
    } finally {
      await scene.stop();
    }
  },
  render(file: ScenarioFile) {
    const out = [
      '## The web page',
      '',
      'opa-sync with a bundle server and the ops port on a real control plane, three OPAs pulling the',
      'bundle (one left on an old revision), and Debian’s chromium driven by playwright-core on `/ui`',
      '(scripts/ui-scene.ts, the scene `npm run screenshots` draws). First, a first visit with the cache off:',
      'what the page and its assets weigh on the wire. Then, per run, edits of one policy ConfigMap,',
      'alternately broken and fixed, each at a random 0–500 ms after the last: from the ConfigMap write to',
      'the open page showing the new outcome (no reload), and from opa-sync’s outcome to the page.',
      '',
    ];
    for (const p of Object.values(file.points)) {
      const s = p.summary as Record<string, Stat> & { firstLoad: FirstLoad };
      out.push(
        `\`${p.command}\` — ${machineLine(p.machine)}. ${p.runs.length} runs of ${(p.runs as UiRun[])[0]?.edits ?? 0} edits.`,
        '',
        '| measure | min / **median** / max over runs |',
        '| --- | --- |',
        `| write → shown, p50 of the run (ms) | ${fmtStat(s.writeP50, 0)} |`,
        `| write → shown, p90 of the run (ms) | ${fmtStat(s.writeP90, 0)} |`,
        `| write → shown, slowest of the run (ms) | ${fmtStat(s.writeMax, 0)} |`,
        `| opa-sync’s outcome → shown, p50 (ms) | ${fmtStat(s.outcomeP50, 0)} |`,
        `| opa-sync’s outcome → shown, slowest (ms) | ${fmtStat(s.outcomeMax, 0)} |`,
        '',
        `First load: **${fmt(s.firstLoad.transferredB, 0)} B** on the wire (${fmt(s.firstLoad.decodedB, 0)} B decoded) in ` +
          `${s.firstLoad.responses.length} responses: ` +
          s.firstLoad.responses.map((r) => `${r.url} ${fmt(r.transferred, 0)} B`).join(', ') +
          `; ${s.firstLoad.policiesShown} policy rows on the page.`,
        '',
      );
      const t = goalsTable(p.goals);
      if (t) out.push(t, '');
    }
    return out.join('\n');
  },
};
