// `npm run bench`: measures opa-sync against the real components of the test harness (etcd,
// kube-apiserver, OPA) and its floors, and writes docs/benchmarks.md (one section per scenario) and
// docs/benchmarks/<scenario>.json (raw results). Never part of `npm test`. See docs/benchmarks.md.
//
//   npm run bench                                  every scenario at its default sizes
//   npm run bench -- p1 --size 100000 --runs 3      one scenario, one size
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { BenchEnv, REPO } from './env.js';
import { parseArgs } from './args.js';
import { machine } from './machine.js';
import { Reporter } from './report.js';
import type { Options, Scenario } from './scenario.js';
import { startup } from './scenarios/startup.js';
import { p1 } from './scenarios/p1-replication.js';
import { p2 } from './scenarios/p2-edit-annotation.js';
import { p3 } from './scenarios/p3-churn.js';
import { p9 } from './scenarios/p9-many-policies.js';
import { p14 } from './scenarios/p14-oci-delta.js';
import { p15 } from './scenarios/p15-admission.js';
import { serve } from './scenarios/serve.js';
import { polls } from './scenarios/polls.js';
import { rebuild } from './scenarios/rebuild.js';
import { ui } from './scenarios/ui.js';
import { HEADER, NOTES } from './report-text.js';

const SCENARIOS: readonly Scenario[] = [startup, p1, p2, p3, p9, serve, polls, rebuild, p14, p15, ui];
const ORDER = SCENARIOS.map((s) => s.id);

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
}

function usage(): string {
  return [
    "npm run bench -- [scenario …] [--size N[,N…]] [--runs K] [--rate R[,R…]] [--interval MS[,MS…]] [--duration S] [--edits E] [--count C] [--node-args 'FLAGS'] [--profile DIR] [--keep-logs] [--render-only]",
    '',
    ...SCENARIOS.map((s) => `  ${s.id.padEnd(8)} ${s.title}\n           defaults: ${s.defaults}`),
    '',
    'Writes docs/benchmarks.md (only the sections of the scenarios run) and docs/benchmarks/<scenario>.json.',
    '--profile DIR: every opa-sync of the sidecar scenarios under --cpu-prof, with its event-loop delay and',
    '(P1) a heap snapshot once OPA holds everything, in DIR/<opa-sync-N>/ (read them with',
    'npx tsx scripts/bench/perf-profile.ts DIR); serve also profiles opa-sync and node:http and summarises.',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, ORDER);
  if (args.help) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const command = `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`;
  if (args.renderOnly) {
    const reporter = new Reporter(
      path.join(REPO, 'docs', 'benchmarks.md'),
      path.join(REPO, 'docs', 'benchmarks'),
      HEADER,
      NOTES,
    );
    for (const scenario of SCENARIOS.filter((s) => args.scenarios.includes(s.id))) {
      await reporter.save(scenario.id, [], (f) => scenario.render(f), ORDER);
    }
    log('bench: sections rewritten from docs/benchmarks/*.json');
    return 0;
  }
  const started = performance.now();
  log('bench: making sure the test tools are built (npm run tools) and building opa-sync (npm run build)');
  execFileSync('npm', ['run', '-s', 'tools', '--', '--quiet-if-present'], { cwd: REPO, stdio: 'inherit' });
  execFileSync('npm', ['run', '-s', 'build'], { cwd: REPO, stdio: 'inherit' });
  const reporter = new Reporter(
    path.join(REPO, 'docs', 'benchmarks.md'),
    path.join(REPO, 'docs', 'benchmarks'),
    HEADER,
    NOTES,
  );
  const options: Options = {
    ...(args.sizes ? { sizes: args.sizes } : {}),
    ...(args.runs ? { runs: args.runs } : {}),
    ...(args.rates ? { rates: args.rates } : {}),
    ...(args.intervals ? { intervals: args.intervals } : {}),
    ...(args.durationS ? { durationS: args.durationS } : {}),
    ...(args.edits ? { edits: args.edits } : {}),
    ...(args.count ? { count: args.count } : {}),
    ...(args.nodeArgs ? { nodeArgs: args.nodeArgs } : {}),
    ...(args.profileDir !== undefined ? { profile: true } : {}),
  };
  let failures = 0;
  for (const scenario of SCENARIOS.filter((s) => args.scenarios.includes(s.id))) {
    const env = new BenchEnv(args.profileDir === undefined ? undefined : path.resolve(args.profileDir));
    const t0 = performance.now();
    let failed = false;
    log(`${scenario.id}: ${scenario.title}`);
    try {
      const points = await scenario.run({ env, options, command, log, machine });
      await reporter.save(scenario.id, points, (f) => scenario.render(f), ORDER);
      log(
        `${scenario.id}: done in ${((performance.now() - t0) / 1000).toFixed(0)} s; docs/benchmarks.md and docs/benchmarks/${scenario.id}.json written`,
      );
    } catch (err) {
      failed = true;
      failures++;
      log(`${scenario.id}: FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    } finally {
      await env.close({ keep: failed || args.keepLogs });
    }
  }
  log(
    `bench: ${args.scenarios.join(', ')} took ${((performance.now() - started) / 60_000).toFixed(1)} min${failures ? `, ${failures} failed` : ''}`,
  );
  return failures ? 1 : 0;
}

// Ctrl-C or a kill: exit through process.exit, so that the harness's exit hook kills every child by pid.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`bench: ${signal}, stopping`);
    process.exit(130);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  },
);
