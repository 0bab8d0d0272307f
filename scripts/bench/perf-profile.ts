// Reads what `npm run bench -- <scenario> --profile DIR` leaves for each opa-sync it started
// (DIR/opa-sync-N/): a V8 .cpuprofile (self time by package and by frame), a .heapsnapshot (self sizes
// summed by node type and by constructor, the largest strings), and the event loop delay (eld.json).
//
//   npx tsx scripts/bench/perf-profile.ts <file.cpuprofile | file.heapsnapshot | folder> [--top 25]
//     [--until-ms T: only the profile's first T ms, e.g. the start-up]
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

interface CpuNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: CpuNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}

function packageOf(url: string): string {
  if (url === '') return '(native/vm)';
  if (url.startsWith('node:')) return 'node:*';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1]}` : (rest[0] ?? '?');
  }
  if (url.includes('/dist/')) return 'opa-sync';
  return url;
}

function cpu(file: string, top: number, untilMs: number): void {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let t = 0;
  // Per 100 ms of the profile: busy time by package, to see the phases (start-up, list, PUT).
  const buckets: Map<string, number>[] = [];
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (t / 1000 > untilMs) return;
    self.set(id, (self.get(id) ?? 0) + dt);
    const f = byId.get(id)?.callFrame;
    if (f === undefined || f.functionName === '(idle)') return;
    const b = (buckets[Math.floor(t / 100_000)] ??= new Map());
    const pkg = f.url === '' ? `(${f.functionName})` : packageOf(f.url);
    b.set(pkg, (b.get(pkg) ?? 0) + dt);
  });
  if (untilMs !== Infinity) {
    console.log('-- busy ms per 100 ms (top packages)');
    buckets.forEach((b, i) => {
      if (b === undefined) return;
      const busy = [...b.values()].reduce((x, y) => x + y, 0) / 1000;
      const leaders = [...b]
        .sort((x, y) => y[1] - x[1])
        .slice(0, 4)
        .map(([k, v]) => `${k} ${(v / 1000).toFixed(0)}`)
        .join(', ');
      console.log(`${String(i * 100).padStart(6)} ms: ${busy.toFixed(0).padStart(3)} busy: ${leaders}`);
    });
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFrame = new Map<string, number>();
  const byPackage = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
    byFrame.set(key, (byFrame.get(key) ?? 0) + us);
    const pkg = f.url === '' ? `(${f.functionName})` : packageOf(f.url);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us);
  }
  const ms = (us: number): string => (us / 1000).toFixed(1).padStart(8);
  console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled`);
  console.log('-- self time by package');
  for (const [k, v] of [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${ms(v)} ms ${((100 * v) / total).toFixed(1).padStart(5)} %  ${k}`);
  console.log('-- self time by frame');
  for (const [k, v] of [...byFrame].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${ms(v)} ms ${((100 * v) / total).toFixed(1).padStart(5)} %  ${k}`);
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

function heap(file: string, top: number): void {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const width = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const bigStrings: { size: number; text: string }[] = [];
  const byName = new Map<string, { size: number; count: number }>();
  const byType = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType] as number] ?? '?';
    const size = s.nodes[i + iSize] as number;
    total += size;
    if (type === 'string' && size > 20_000) {
      bigStrings.push({ size, text: (s.strings[s.nodes[i + iName] as number] ?? '').slice(0, 70) });
    }
    byType.set(type, (byType.get(type) ?? 0) + size);
    let name =
      type === 'object' || type === 'closure'
        ? (s.strings[s.nodes[i + iName] as number] ?? '?')
        : `(${type})`;
    if (name.length > 60) name = `${name.slice(0, 57)}…`;
    const e = byName.get(name) ?? { size: 0, count: 0 };
    e.size += size;
    e.count += 1;
    byName.set(name, e);
  }
  const mb = (b: number): string => (b / 1048576).toFixed(2).padStart(8);
  console.log(`${file}: ${mb(total)} MB of self sizes`);
  console.log('-- by node type');
  for (const [k, v] of [...byType].sort((a, b) => b[1] - a[1])) console.log(`${mb(v)} MB  ${k}`);
  console.log('-- by constructor (objects, closures) or type');
  for (const [k, v] of [...byName].sort((a, b) => b[1].size - a[1].size).slice(0, top))
    console.log(`${mb(v.size)} MB ${String(v.count).padStart(9)}  ${k}`);
  const big = bigStrings.reduce((a, b) => a + b.size, 0);
  console.log(`-- ${bigStrings.length} strings over 20 KB: ${mb(big)} MB; the largest:`);
  for (const b of bigStrings.sort((x, y) => y.size - x.size).slice(0, 8))
    console.log(`${mb(b.size)} MB  ${JSON.stringify(b.text)}`);
}

const argv = process.argv.slice(2);
const topAt = argv.indexOf('--top');
const top = topAt >= 0 ? Number(argv[topAt + 1]) : 25;
const untilAt = argv.indexOf('--until-ms');
const untilMs = untilAt >= 0 ? Number(argv[untilAt + 1]) : Infinity;
const targets = argv.filter(
  (a, i) => !a.startsWith('--') && (topAt < 0 || i !== topAt + 1) && (untilAt < 0 || i !== untilAt + 1),
);
/** The file itself, or every file below the folder (one level of opa-sync-N folders, or more). */
function filesOf(target: string): string[] {
  if (!statSync(target).isDirectory()) return [target];
  return readdirSync(target)
    .sort()
    .flatMap((f) => filesOf(path.join(target, f)));
}

for (const target of targets) {
  for (const f of filesOf(target)) {
    if (f.endsWith('.cpuprofile')) cpu(f, top, untilMs);
    else if (f.endsWith('.heapsnapshot')) heap(f, top);
    else if (f.endsWith('eld.json')) console.log(`${f}: event loop delay (ms) ${readFileSync(f, 'utf8')}`);
  }
}
