// Summary statistics of the benchmark: min/median/max of a few runs, and percentiles of latency samples
// (nearest rank: a percentile is always one of the samples, never an interpolated value).

export interface Stat {
  min: number;
  median: number;
  max: number;
  n: number;
}

function sorted(values: readonly number[]): number[] {
  return [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
}

/**
 * The p-th percentile (0 < p ≤ 100) by nearest rank: the smallest sample such that at least p % of the
 * samples are ≤ it. NaN for no samples.
 *
 * @example percentile([1, 2, 3, 4], 50) // 2
 */
export function percentile(values: readonly number[], p: number): number {
  const s = sorted(values);
  if (s.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[Math.min(rank, s.length) - 1] as number;
}

/** The median: the middle sample, or the mean of the two middle ones. NaN for no samples. */
export function median(values: readonly number[]): number {
  const s = sorted(values);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** min/median/max of the finite values (NaN fields when there are none). */
export function stat(values: readonly number[]): Stat {
  const s = sorted(values);
  return {
    min: s.length ? (s[0] as number) : NaN,
    median: median(s),
    max: s.length ? (s[s.length - 1] as number) : NaN,
    n: s.length,
  };
}

/** Pairwise ratios a[i] / b[i] of two series measured alternately in the same invocation. */
export function pairedRatios(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    if (Number.isFinite(x) && Number.isFinite(y) && y !== 0) out.push(x / y);
  }
  return out;
}

/** A number for a table: integers above 100 with thousands separators, small ones with `digits`. */
export function fmt(value: number | undefined, digits = 1): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(digits);
}

/** `min / median / max` of a stat. */
export function fmtStat(s: Stat | undefined, digits = 1): string {
  if (!s || s.n === 0) return '–';
  return `${fmt(s.min, digits)} / **${fmt(s.median, digits)}** / ${fmt(s.max, digits)}`;
}

/** `min / median / max×` of a ratio's stat, or – when there is none. */
export function fmtRatio(s: Stat | undefined, digits = 2): string {
  return !s || s.n === 0 ? '–' : `${fmtStat(s, digits)}×`;
}
