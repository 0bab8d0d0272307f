// The pure pieces of the bundle-serving scenarios of `npm run bench` (serve, polls, rebuild): wrk's
// output parsed, metrics read, turns, goal verdicts against the peer of the same run, and rendering.
import { expect } from 'chai';
import { parseArgs } from '../../scripts/bench/args.js';
import { summaryTables } from '../../scripts/bench/cpu-profile.js';
import type { Machine } from '../../scripts/bench/machine.js';
import { comparePoints, goalsTable, verdictAtLeast, type Point } from '../../scripts/bench/report.js';
import { pollGoals, polls, summarizePolls, type PollRun } from '../../scripts/bench/scenarios/polls.js';
import {
  rebuild,
  rebuildGoals,
  stagesOf,
  summarizeRebuild,
  type RebuildRun,
} from '../../scripts/bench/scenarios/rebuild.js';
import { serve, serveGoals, summarizeServe, type ServeRun } from '../../scripts/bench/scenarios/serve.js';
import { inTurn, metricValue } from '../../scripts/bench/serving.js';
import { fmtRatio, stat } from '../../scripts/bench/stats.js';
import { parseWrk } from '../../scripts/bench/wrk.js';

const WRK_OUTPUT = `Running 10s test @ http://127.0.0.1:40000/bundles/policies
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   9.80ms   90.00%
    Req/Sec    41.50k     2.00k   44.00k    80.00%
  Latency Distribution
     50%  1.10ms
     75%  1.30ms
     90%  1.50ms
     99%  820.00us
  413000 requests in 10.00s, 50.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  41300.12
Transfer/sec:      5.00MB
`;

const MACHINE: Machine = {
  cores: 2,
  cpu: 'test cpu',
  memoryGiB: 24,
  kernel: '6.1',
  node: 'v20.20.0',
  opa: 'v1.22.3',
  kubernetes: 'v1.34.4',
  opaSyncCommit: 'abc',
  loadAverage: 1.5,
  date: '2026-12-01T19:00:00Z',
};

function point(key: string, runs: unknown[], summary: Record<string, unknown>, goals: Point['goals']): Point {
  return { key, command: 'npm run bench -- x', machine: MACHINE, runs, summary, goals, notes: [] };
}

describe('bench: serving helpers', () => {
  it('parses wrk --latency output, microseconds and bad answers included', () => {
    expect(parseWrk(WRK_OUTPUT)).to.deep.equal({
      rps: 41300.12,
      requests: 413000,
      p50Ms: 1.1,
      p99Ms: 0.82,
      non2xx3xx: 3,
      errors: '',
    });
    const broken = parseWrk('Socket errors: connect 0, read 2, write 0, timeout 5\n');
    expect(broken.errors).to.match(/timeout 5/);
    expect(broken.rps).to.be.NaN;
  });

  it('reads one metric of a Prometheus exposition, with or without labels', () => {
    const text = [
      '# HELP nodejs_eventloop_lag_max_seconds x',
      'nodejs_eventloop_lag_max_seconds 0.0321',
      'opa_sync_bundle_long_polls_held{bundle="policies"} 10000',
    ].join('\n');
    expect(metricValue(text, 'nodejs_eventloop_lag_max_seconds')).to.equal(0.0321);
    expect(metricValue(text, 'opa_sync_bundle_long_polls_held')).to.equal(10000);
    expect(metricValue(text, 'missing')).to.be.NaN;
  });

  it('a ratio cell is – when nothing was paired', () => {
    expect(fmtRatio(stat([]))).to.equal('–');
    expect(fmtRatio(stat([0.5, 1]))).to.equal('0.50 / **0.75** / 1.00×');
  });

  it('takes turns: as given on odd runs, reversed on even ones', () => {
    expect(inTurn(['a', 'b', 'c'], 1)).to.deep.equal(['a', 'b', 'c']);
    expect(inTurn(['a', 'b', 'c'], 2)).to.deep.equal(['c', 'b', 'a']);
  });

  it('a floor is met at or above it, and a miss says by how much', () => {
    expect(verdictAtLeast(0.6, 0.6)).to.deep.equal({ verdict: 'met', detail: '' });
    expect(verdictAtLeast(0.3, 0.6)).to.deep.equal({ verdict: 'missed', detail: 'by 50 % (0.30 of 0.6)' });
    expect(verdictAtLeast(NaN, 0.6).verdict).to.equal('n/a');
  });

  it('orders points by their leading number, then by the rest of the key', () => {
    const keys = ['10000 node --max-semi-space-size=2', '10000', 'default', '1000'];
    expect([...keys].sort((a, b) => comparePoints('polls', a, b))).to.deep.equal([
      '1000',
      '10000',
      '10000 node --max-semi-space-size=2',
      'default',
    ]);
    expect(['50', '300'].sort((a, b) => comparePoints('p2', a, b))).to.deep.equal(['300', '50']);
  });

  it('takes --node-args as node flags and --profile DIR', () => {
    const args = parseArgs(
      ['polls', '--node-args=--max-semi-space-size=2 --no-opt', '--profile', '/tmp/prof'],
      ['polls'],
    );
    expect(args).to.deep.include({
      nodeArgs: ['--max-semi-space-size=2', '--no-opt'],
      profileDir: '/tmp/prof',
    });
    expect(() => parseArgs(['polls', '--profile'], ['polls'])).to.throw(/--profile needs a value/);
    expect(() => parseArgs(['--node-args', 'oops'], ['polls'])).to.throw(/node flags only/);
  });

  it('the goals table names its column "peer / target"', () => {
    const table = goalsTable([
      {
        measure: 'm',
        peer: 'nginx 40,000',
        ours: '30,000',
        goal: '≥ 0.6× nginx',
        verdict: 'met',
        detail: '',
      },
    ]);
    expect(table.split('\n')[0]).to.equal('| measure | peer / target | opa-sync | goal | verdict |');
    expect(table).to.include('| m | nginx 40,000 | 30,000 | ≥ 0.6× nginx | **met** |');
  });

  it('summarises a CPU profile as tables', () => {
    const lines = summaryTables({
      busyMs: 100,
      idleMs: 50,
      areas: [{ area: 'express', selfMs: 60, share: 0.6 }],
      top: [{ name: 'a|b src/x.ts:1', selfMs: 10, share: 0.1 }],
    });
    expect(lines).to.include('| express | 60 | 60.0 % |');
    const many = summaryTables(
      {
        busyMs: 100,
        idleMs: 0,
        areas: [10, 20, 30].map((ms) => ({ area: `a${ms}`, selfMs: ms, share: ms / 100 })),
        top: [],
      },
      1,
    );
    expect(many).to.include('| 2 more areas | 50 | 50.0 % |');
    expect(lines).to.include('| `a\\|b src/x.ts:1` | 10 | 10.0 % |');
  });
});

describe('bench: serve scenario goals', () => {
  const sample = (rps: number, p99Ms: number, cpuUs: number) => ({ rps, p99Ms, cpuUs });
  const runs: ServeRun[] = [1, 2, 3].map((run) => ({
    run,
    r304: {
      'opa-sync': sample(24_000 + run * 1000, 3, 38),
      nginx: sample(40_000, 1, 12),
      'node:http': sample(30_000, 2, 22),
    },
    r200: {
      'opa-sync': sample(900, 60, 500),
      nginx: sample(1000, 50, 400),
      'node:http': sample(950, 55, 450),
    },
  }));

  it('pairs the ratios per run and judges every goal of the issue', () => {
    const s = summarizeServe(runs);
    expect(s['ratio.nginx.r304.rps']).to.deep.equal({ min: 0.625, median: 0.65, max: 0.675, n: 3 });
    const goals = serveGoals(s);
    expect(goals.map((g) => [g.goal, g.verdict])).to.deep.equal([
      ['≥ 0.6× nginx', 'met'],
      ['≤ 2× nginx', 'missed'],
      ['≤ 40 µs', 'met'],
      ['keep ≥ 0.8× nginx', 'met'],
    ]);
    expect(goals[0]?.peer).to.equal('nginx 40,000; node:http 30,000');
    expect(goals[1]?.detail).to.equal('by 50 %');
    expect(serveGoals(s, ['--max-semi-space-size=2'])[2]?.measure).to.equal(
      'server CPU per 304 (µs) (node --max-semi-space-size=2)',
    );
  });

  it('renders the runs, the paired ratios and the goals', () => {
    const s = summarizeServe(runs);
    const md = serve.render({
      scenario: 'serve',
      points: { default: point('default', runs, { ...s, bundleBytes: 1_040_000 }, serveGoals(s)) },
    });
    expect(md).to.include('### opa-sync as shipped');
    expect(md).to.match(/\| 304s\/s \| 25,000 \/ \*\*26,000\*\* \/ 27,000 \| 40,000/);
    expect(md).to.include('| 304s/s | 0.63 / **0.65** / 0.68× |');
    expect(md).to.include('| measure | peer / target |');
  });
});

describe('bench: polls and rebuild goals', () => {
  const pollRun = (server: string, run: number, lastMs: number, heldMiB: number): PollRun => ({
    run,
    server,
    openMs: 4000,
    openCpuMs: 3000,
    idleMiB: 100,
    heldMiB,
    heldLaterMiB: heldMiB - 5,
    firstMs: 10,
    medianMs: 200,
    p99Ms: lastMs - 10,
    lastMs,
    answered: 10_000,
    errors: 0,
    fanoutCpuMs: 900,
    probeMaxMs: 30,
  });
  const runs = [1, 2, 3].flatMap((run) => [
    pollRun('opa-sync', run, 800 + run * 100, 160),
    pollRun('node:http', run, 700, 150),
  ]);

  it('10,000 polls have the RSS, open-time and last-answer goals; fewer only the last answer', () => {
    const s = summarizePolls(runs);
    expect(s['opa-sync.lastMs']?.median).to.equal(1000);
    expect(s['ratio.lastMs']?.median).to.be.closeTo(1000 / 700, 1e-9);
    expect(s['opa-sync.holdingMiB']?.median).to.equal(160);
    const goals = pollGoals(10_000, s, ['--max-semi-space-size=2']);
    expect(goals.map((g) => [g.goal, g.verdict])).to.deep.equal([
      ['≤ 150 MiB', 'missed'],
      ['≤ 5,000 ms', 'met'],
      ['≤ 1,000 ms', 'met'],
    ]);
    expect(goals[0]?.measure).to.include('(node --max-semi-space-size=2)');
    expect(pollGoals(1000, s, []).map((g) => g.goal)).to.deep.equal(['≤ 1,000 ms']);
    const md = polls.render({
      scenario: 'polls',
      points: {
        '10000': point(
          '10000',
          runs,
          { ...s, freshMiB: { 'opa-sync': 90, 'node:http': 45 }, polls: 10_000 },
          goals,
        ),
      },
    });
    expect(md).to.include('### 10,000 long polls');
    expect(md).to.include(
      '| last 200 after the publish (ms) | 900 / **1,000** / 1,100 | 700 / **700** / 700 |',
    );
  });

  it('rebuild: the median edit per run, paired with that run’s cold build', () => {
    const run = (r: number, edits: number[], cold: number): RebuildRun => ({
      run: r,
      coldBuildMs: cold,
      firstBundleMs: 3000,
      editMs: edits,
      loopDelayMaxMs: [20, 60],
      idleLoopDelayMaxMs: [12],
      stages: [{ watchMs: 110, queueMs: 1, checkMs: 30, buildMs: 40, answerMs: 2 }, undefined],
      during: { n: 40, p99: 30, max: 45 },
      outside: { n: 400, p99: 3, max: 20 },
      allMedianMs: 0.5,
      loopErrors: 0,
      rssMiB: 200,
      childRssMiB: 150,
    });
    const s = summarizeRebuild([run(1, [100, 150, 400], 1500), run(2, [120, 180, 200], 1200)]);
    expect(s.editMs).to.deep.equal({ min: 150, median: 165, max: 180, n: 2 });
    expect(s.ratio?.median).to.be.closeTo((0.1 + 0.15) / 2, 1e-9);
    expect(s.loopDelayMaxMs?.median).to.equal(60);
    expect(s.idleLoopDelayMaxMs?.median).to.equal(12);
    expect(s['stage.watchMs']).to.deep.equal({ min: 110, median: 110, max: 110, n: 2 });
    expect(s.outside304MaxMs?.median).to.equal(20);
    const goals = rebuildGoals(1000, s);
    expect(goals.map((g) => g.verdict)).to.deep.equal(['met', 'met', 'met', 'missed']);
    const md = rebuild.render({
      scenario: 'rebuild',
      points: { '1000': point('1000', [run(1, [100], 1500)], s, goals) },
    });
    expect(md).to.include('### 1,000 policies + 10 MB data.json');
    expect(md).to.include('Edits run by run (ms): run 1: 100.');
    expect(md).to.match(/\| the check of the changed module[^|]*\| 30\.0 \/ \*\*30\.0\*\* \/ 30\.0 \|/);
  });

  it('rebuild: an edit’s stages from the debug log lines that follow its write', () => {
    const lines = [
      { msg: 'file changed', time: 900, file: 'team1/svc1/policy.rego' },
      { msg: 'file changed', time: 1110, file: 'team0/svc0/policy.rego' },
      { msg: 'file changed', time: 1120, file: 'team1/svc1/policy.rego' },
      { msg: 'bundle published', time: 1195 },
      { msg: 'bundles rebuilt', time: 1200, tookMs: 75, checkMs: 30, publishMs: 45 },
    ];
    expect(stagesOf(lines, 'team1/svc1/policy.rego', 1000, 1210)).to.deep.equal({
      watchMs: 120,
      queueMs: 5,
      checkMs: 30,
      buildMs: 45,
      answerMs: 15,
    });
    expect(stagesOf(lines, 'team2/svc2/policy.rego', 1000, 1210)).to.equal(undefined);
    expect(stagesOf(lines.slice(0, 3), 'team1/svc1/policy.rego', 1000, 1210)).to.equal(undefined);
  });
});
