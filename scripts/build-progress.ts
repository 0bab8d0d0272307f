// Progress of the long builds of the test tools (`go install` of OPA, `go build` of Kubernetes): which
// step of how many, what it builds, how long it took the last time on this machine (recorded in the
// tools cache) or, before any build here, what a first build takes on 2 cores; then every ~15 s the
// elapsed time, so that minutes of compiling never look like a hang. Go's own lines (downloads) go to
// the terminal as they come.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The build steps, each timed and estimated on its own. */
export type StepKey = 'opa' | 'opa-matrix' | 'kubernetes' | 'registry' | 'oras';

/**
 * What a first build of each step took on 2 cores, downloads included (measured: OPA about 4.5 minutes,
 * the Kubernetes components about 11 minutes plus about 1 minute of module downloads). The README's
 * first-build times are tested against these.
 */
export const FIRST_BUILD_SECONDS: Readonly<Record<StepKey, number>> = {
  opa: 270,
  // Each other OPA version of the version matrix, after the default one (go's build cache holds most of
  // what they share): measured here, 31 to 59 s each.
  'opa-matrix': 60,
  kubernetes: 720,
  // Measured here: the distribution registry about 2.5 minutes, oras about 20 s after it (shared modules).
  registry: 150,
  oras: 60,
};

interface Recorded {
  seconds: number;
  /** What was built (a version), and when: for a person reading the file. */
  what: string;
  at: string;
}

/** The file in the tools cache that keeps how long each step took the last time it was built here. */
export function buildTimesFile(cacheDir: string): string {
  return path.join(cacheDir, 'build-times.json');
}

/** The recorded durations; an unreadable file or entry is no record (the estimate is then the table's). */
export function readBuildTimes(cacheDir: string): Partial<Record<StepKey, Recorded>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(buildTimesFile(cacheDir), 'utf8'));
  } catch {
    return {};
  }
  const times: Partial<Record<StepKey, Recorded>> = {};
  for (const key of Object.keys(FIRST_BUILD_SECONDS) as StepKey[]) {
    const entry: unknown =
      typeof parsed === 'object' && parsed !== null ? Reflect.get(parsed, key) : undefined;
    if (typeof entry !== 'object' || entry === null) continue;
    const { seconds, what, at } = entry as Partial<Recorded>;
    if (typeof seconds === 'number' && Number.isFinite(seconds) && seconds >= 0) {
      times[key] = { seconds, what: String(what), at: String(at) };
    }
  }
  return times;
}

function recordBuildTime(cacheDir: string, key: StepKey, record: Recorded): void {
  const file = buildTimesFile(cacheDir);
  const times = { ...readBuildTimes(cacheDir), [key]: record };
  mkdirSync(cacheDir, { recursive: true });
  const scratch = `${file}.${process.pid}`;
  writeFileSync(scratch, `${JSON.stringify(times, null, 2)}\n`);
  renameSync(scratch, file);
}

/** `42 s`, `4 min 30 s`, `12 min`; tenths below 10 s. */
export function formatDuration(ms: number): string {
  if (ms < 10_000) return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
  const total = Math.round(ms / 1000);
  const minutes = Math.floor(total / 60);
  const seconds = total % 60;
  if (minutes === 0) return `${seconds} s`;
  return seconds === 0 ? `${minutes} min` : `${minutes} min ${seconds} s`;
}

export interface StepOptions {
  cacheDir: string;
  key: StepKey;
  /** `building OPA v1.22.3` */
  title: string;
  /** What the record says was built (a version). */
  what: string;
  /** 1-based position and count, for `step 1/2`. */
  index: number;
  count: number;
  /** Where progress lines go (each prefixed `[tools] `). */
  out: NodeJS.WritableStream;
  /** How often the elapsed time is printed (default 15 s). */
  everyMs?: number | undefined;
  now?: () => number;
}

/**
 * Runs one build step with progress lines, and records its duration once it succeeded (a failed or
 * stopped build is no measure of the next one).
 *
 * @example
 * await timedStep({ cacheDir, key: 'opa', title: 'building OPA v1.22.3', what: 'v1.22.3', index: 1, count: 1, out }, () => goInstall());
 * // [tools] step 1/1: building OPA v1.22.3 (last time 4 min 30 s)
 * // [tools] step 1/1: building OPA v1.22.3 (last time 4 min 30 s) … elapsed 15 s
 * // [tools] step 1/1: done in 4 min 12 s
 */
export async function timedStep(options: StepOptions, work: () => Promise<void>): Promise<void> {
  const now = options.now ?? Date.now;
  const last = readBuildTimes(options.cacheDir)[options.key];
  const estimate =
    last !== undefined
      ? `last time ${formatDuration(last.seconds * 1000)}${last.what === options.what ? '' : `, for ${last.what}`}`
      : `a first build takes about ${formatDuration(FIRST_BUILD_SECONDS[options.key] * 1000)} on 2 cores`;
  const prefix = `step ${options.index}/${options.count}`;
  const say = (text: string): void => {
    options.out.write(`[tools] ${prefix}: ${text}\n`);
  };
  const started = now();
  say(`${options.title} (${estimate})`);
  const ticker = setInterval(
    () => say(`${options.title} (${estimate}) … elapsed ${formatDuration(now() - started)}`),
    options.everyMs ?? 15_000,
  );
  ticker.unref();
  try {
    await work();
  } finally {
    clearInterval(ticker);
  }
  const took = now() - started;
  say(`done in ${formatDuration(took)}`);
  try {
    recordBuildTime(options.cacheDir, options.key, {
      seconds: Math.round(took / 100) / 10,
      what: options.what,
      at: new Date().toISOString(),
    });
  } catch (err) {
    // The build is good; only the next estimate is lost.
    say(`could not record the build time: ${err instanceof Error ? err.message : String(err)}`);
  }
}
