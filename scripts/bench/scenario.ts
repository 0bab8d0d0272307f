// What every scenario module provides, and what it is given: the environment, the parsed options, the
// exact command line of the invocation (written into the report) and a progress log on stderr.
import type { BenchEnv } from './env.js';
import type { Machine } from './machine.js';
import type { Point, ScenarioFile } from './report.js';

export interface Options {
  sizes?: number[];
  runs?: number;
  rates?: number[];
  intervals?: number[];
  durationS?: number;
  edits?: number;
  count?: number;
  nodeArgs?: string[];
  profile?: boolean;
}

export interface Context {
  env: BenchEnv;
  options: Options;
  command: string;
  log: (line: string) => void;
  machine: () => Machine;
}

export interface Scenario {
  id: string;
  title: string;
  /** What `npm run bench` measures without options, for the report's "how to run" text. */
  defaults: string;
  run(ctx: Context): Promise<Point[]>;
  render(file: ScenarioFile): string;
}

/** The kube-mgmt figures of issue 12 (kube-mgmt 11.0.7, measured on this machine; not runnable here). */
export const KUBE_MGMT = {
  p1Ms: { 1000: 205, 10000: 1596 } as Record<number, number>,
  p7MiB: { 1000: 60, 10000: 260 } as Record<number, number>,
  p2Ms: { 300: { p50: 9.3, p99: 15.5 }, 50: { p50: 149, p99: 152 } } as Record<
    number,
    { p50: number; p99: number }
  >,
  p3: { toolCpuS: 4.06, opaCpuS: 2.5, p50Ms: 2, p99Ms: 11 },
  versionS: 0.01,
  versionMiB: 36,
};

/** opa-sync's own figures quoted in issue 12 (before this benchmark existed), for comparison. */
export const ISSUE_12_OPA_SYNC = {
  p1Ms: { 1000: 893, 10000: 1424 } as Record<number, number>,
  p7MiB: { 1000: 139, 10000: 188 } as Record<number, number>,
  p2Ms: { 300: { p50: 13.2, p99: 26.5 }, 50: { p50: 18.4, p99: 29.8 } } as Record<
    number,
    { p50: number; p99: number }
  >,
  p3: { toolCpuS: 9.23, opaCpuS: 2.59, p50Ms: 9, p99Ms: 32 },
  versionS: 0.62,
  versionMiB: 125,
  p9S: 51,
};
