// The report: docs/benchmarks/<scenario>.json keeps the raw results of each scenario (merged by point,
// so `--size 100000` adds to what 1,000 and 10,000 measured before), and docs/benchmarks.md is rewritten
// one marked section at a time, so that running one scenario never erases another's. The summary of the
// goals is rebuilt from every JSON file, the header (how to run, how it measures) from the code. Text outside
// the markers (the profile notes) is never touched.
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as prettier from 'prettier';
import type { Machine } from './machine.js';

export interface Goal {
  measure: string;
  /**
   * What opa-sync is held against: for startup and P1–P9 the fixed figure of kube-mgmt 11.0.7 (issue 12);
   * for the serving scenarios the peer measured in the same run, named in the cell ("nginx 41,000").
   */
  peer: string;
  ours: string;
  goal: string;
  /** met / missed / n/a (nothing to compare, e.g. the run failed). */
  verdict: 'met' | 'missed' | 'n/a';
  /** "by 23 %", or why there is no verdict. */
  detail: string;
}

/** One measured point of a scenario (a size, a rate, a mode), with how and where it was measured. */
export interface Point {
  key: string;
  command: string;
  machine: Machine;
  runs: unknown[];
  summary: Record<string, unknown>;
  goals: Goal[];
  notes: string[];
}

export interface ScenarioFile {
  scenario: string;
  points: Record<string, Point>;
}

export const SECTION_ORDER = [
  'summary',
  'startup',
  'p1',
  'p2',
  'p3',
  'p9',
  'serve',
  'polls',
  'rebuild',
  'p14',
  'p15',
  'ui',
] as const;

export const begin = (id: string): string => `<!-- bench:${id}:begin -->`;
export const end = (id: string): string => `<!-- bench:${id}:end -->`;
const notesMarker = (id: string): string =>
  `<!-- bench:${id}:notes (hand-written, kept by npm run bench) -->`;

/**
 * Replaces the text between the markers of section `id` with `body` (adding the section at the end
 * when the document has none, with its notes area holding `notes`). Everything else in the document
 * stays byte for byte.
 */
export function replaceSection(doc: string, id: string, body: string, notes = ''): string {
  const b = begin(id);
  const e = end(id);
  const start = doc.indexOf(b);
  const stop = doc.indexOf(e);
  const block = `${b}\n${body.trim()}\n${e}`;
  if (start < 0 || stop < start) {
    const area = notes.trim() === '' ? '' : `${notes.trim()}\n`;
    return `${doc.trimEnd()}\n\n${block}\n\n${notesMarker(id)}\n${area}`;
  }
  return doc.slice(0, start) + block + doc.slice(stop + e.length);
}

/** A new docs/benchmarks.md: the header and an empty section (plus a notes area) for each scenario. */
export function skeleton(header: string, notes: Readonly<Record<string, string>>): string {
  const parts = [begin('header'), header.trim(), end('header'), ''];
  for (const id of SECTION_ORDER) {
    parts.push(
      begin(id),
      `(not measured yet: \`npm run bench -- ${id === 'summary' ? '' : id}\`)`,
      end(id),
      '',
    );
    if (id !== 'summary') parts.push(notesMarker(id), notes[id]?.trim() ?? '', '');
  }
  return `${parts.join('\n').trimEnd()}\n`;
}

export function verdictOf(value: number, limit: number): Pick<Goal, 'verdict' | 'detail'> {
  if (!Number.isFinite(value)) return { verdict: 'n/a', detail: 'not measured' };
  if (value <= limit) return { verdict: 'met', detail: '' };
  const r = value / limit;
  return {
    verdict: 'missed',
    detail: r >= 2 ? `by ${r.toFixed(1)}× the limit` : `by ${Math.round((r - 1) * 100)} %`,
  };
}

/** The verdict of a floor (a throughput, a ratio that must reach `floor`); the detail gives the shortfall. */
export function verdictAtLeast(value: number, floor: number): Pick<Goal, 'verdict' | 'detail'> {
  if (!Number.isFinite(value)) return { verdict: 'n/a', detail: 'not measured' };
  if (value >= floor) return { verdict: 'met', detail: '' };
  return {
    verdict: 'missed',
    detail: `by ${Math.round((1 - value / floor) * 100)} % (${value.toFixed(2)} of ${floor})`,
  };
}

/**
 * The order of a scenario's points in the summary: by their leading number (larger first for P2's
 * intervals, smaller first otherwise), then by the rest of the key (`10000` before `10000 --flag`).
 */
export function comparePoints(id: string, a: string, b: string): number {
  const lead = (k: string): number => Number(/^\d+/.exec(k)?.[0] ?? NaN);
  const [x, y] = [lead(a), lead(b)];
  if (Number.isFinite(x) && Number.isFinite(y) && x !== y) return id === 'p2' ? y - x : x - y;
  return a.localeCompare(b);
}

export function goalCell(g: Goal): string {
  if (g.verdict === 'met') return '**met**';
  if (g.verdict === 'missed') return `**missed** ${g.detail}`;
  return g.detail || 'n/a';
}

export function goalsTable(goals: readonly Goal[]): string {
  if (goals.length === 0) return '';
  const rows = goals.map((g) => `| ${g.measure} | ${g.peer} | ${g.ours} | ${g.goal} | ${goalCell(g)} |`);
  return [
    '| measure | peer / target | opa-sync | goal | verdict |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
  ].join('\n');
}

/** The text as the project's prettier settings format it, so that `npm run format:check` passes. */
async function formatted(file: string, text: string): Promise<string> {
  const config = (await prettier.resolveConfig(file)) ?? {};
  return prettier.format(text, { ...config, filepath: file });
}

export class Reporter {
  constructor(
    readonly mdFile: string,
    readonly jsonDir: string,
    private readonly header: string,
    private readonly notes: Readonly<Record<string, string>>,
  ) {}

  read(scenario: string): ScenarioFile {
    const file = path.join(this.jsonDir, `${scenario}.json`);
    if (!existsSync(file)) return { scenario, points: {} };
    return JSON.parse(readFileSync(file, 'utf8')) as ScenarioFile;
  }

  /** Stores the new points of a scenario (replacing those with the same key) and rewrites its section and the summary. */
  async save(
    scenario: string,
    points: readonly Point[],
    render: (file: ScenarioFile) => string,
    order: readonly string[],
  ): Promise<ScenarioFile> {
    mkdirSync(this.jsonDir, { recursive: true });
    const file = this.read(scenario);
    for (const p of points) file.points[p.key] = p;
    const jsonFile = path.join(this.jsonDir, `${scenario}.json`);
    writeFileSync(jsonFile, await formatted(jsonFile, JSON.stringify(file, null, 2)));
    let doc = existsSync(this.mdFile) ? readFileSync(this.mdFile, 'utf8') : skeleton(this.header, this.notes);
    doc = replaceSection(doc, scenario, render(file), this.notes[scenario]);
    doc = replaceSection(doc, 'header', this.header);
    doc = replaceSection(doc, 'summary', this.summary(order));
    writeFileSync(this.mdFile, await formatted(this.mdFile, doc));
    return file;
  }

  /** Every goal of every scenario measured so far, in scenario order. */
  summary(order: readonly string[]): string {
    const goals: Goal[] = [];
    const dates: string[] = [];
    const files = existsSync(this.jsonDir)
      ? readdirSync(this.jsonDir).filter((f) => f.endsWith('.json'))
      : [];
    const ids = [...order, ...files.map((f) => f.slice(0, -5)).filter((id) => !order.includes(id))];
    for (const id of ids) {
      if (!files.includes(`${id}.json`)) continue;
      const points = Object.values(this.read(id).points);
      points.sort((a, b) => comparePoints(id, a.key, b.key));
      for (const p of points) {
        goals.push(...p.goals);
        dates.push(p.machine.date);
      }
    }
    if (goals.length === 0) return '(no goal measured yet)';
    dates.sort();
    const first = dates[0]?.slice(0, 10) ?? '';
    const last = dates[dates.length - 1]?.slice(0, 10) ?? '';
    return [
      '## Goals at a glance',
      '',
      `Measured ${first === last ? first : `${first} … ${last}`}; medians of the runs; each scenario's section below has the runs, the command and the machine.`,
      '',
      '"peer / target": for start-up and P1–P9, the figure of kube-mgmt 11.0.7 measured for issue 12 (a fixed',
      'target, not runnable here); for serve, polls and rebuild, the peer measured alternately with opa-sync',
      'in the same invocation (nginx, a bare node:http server, a cold `opa build`), named in the cell.',
      '',
      goalsTable(goals),
    ].join('\n');
  }
}
