// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: the functions with the most
// self time, and the share of the process's busy time each top-level area took (our src/, express,
// prom-client, node:http's JavaScript, native code and GC). Used by `npm run bench -- serve --profile DIR`.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  busyMs: number;
  idleMs: number;
  top: { name: string; selfMs: number; share: number }[];
  areas: { area: string; selfMs: number; share: number }[];
}

function areaOf(url: string, functionName: string): string {
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(garbage collector)') return 'gc';
  if (functionName === '(program)' || url === '') return 'native / program';
  if (url.includes('/src/') || url.includes('/dist/')) return 'opa-sync';
  if (url.includes('node_modules/express') || url.includes('node_modules/router')) return 'express';
  if (url.includes('node_modules/prom-client')) return 'prom-client';
  if (url.includes('node_modules/pino')) return 'pino';
  if (url.includes('node_modules/')) return 'other packages';
  if (url.startsWith('node:')) return `node (${url.replace(/^node:internal\//, '').split('/')[0]})`;
  return 'other';
}

export function summarize(file: string, topN = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i += 1) {
    const id = profile.samples[i] as number;
    // timeDeltas[i] is the time before sample i: charge it to the sample that follows it.
    const delta = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  }
  const byName = new Map<string, number>();
  const byArea = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const area = areaOf(url, functionName);
    if (area === 'idle') {
      idle += us;
      continue;
    }
    busy += us;
    const where = url === '' ? '' : ` ${url.replace(/^.*\/(src|node_modules)\//, '$1/')}:${lineNumber + 1}`;
    const name = `${functionName || '(anonymous)'}${where}`;
    byName.set(name, (byName.get(name) ?? 0) + us);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const ranked = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k, us]) => [k, us / 1000, us / busy] as const);
  return {
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    top: ranked(byName)
      .slice(0, topN)
      .map(([name, selfMs, share]) => ({ name, selfMs, share })),
    areas: ranked(byArea).map(([area, selfMs, share]) => ({ area, selfMs, share })),
  };
}

/** The summary as markdown tables: the largest areas (the rest in one row), then the top functions. */
export function summaryTables(s: ProfileSummary, areas = 8): string[] {
  const pct = (share: number): string => `${(share * 100).toFixed(1)} %`;
  const rest = s.areas.slice(areas);
  const restMs = rest.reduce((sum, a) => sum + a.selfMs, 0);
  const restShare = rest.reduce((sum, a) => sum + a.share, 0);
  return [
    `busy ${s.busyMs.toFixed(0)} ms, idle ${s.idleMs.toFixed(0)} ms`,
    '',
    '| area | self ms | share of busy |',
    '| --- | ---: | ---: |',
    ...s.areas.slice(0, areas).map((a) => `| ${a.area} | ${a.selfMs.toFixed(0)} | ${pct(a.share)} |`),
    ...(rest.length ? [`| ${rest.length} more areas | ${restMs.toFixed(0)} | ${pct(restShare)} |`] : []),
    '',
    '| function (self time) | ms | share of busy |',
    '| --- | ---: | ---: |',
    ...s.top.map((t) => `| \`${t.name.replace(/\|/g, '\\|')}\` | ${t.selfMs.toFixed(0)} | ${pct(t.share)} |`),
  ];
}
