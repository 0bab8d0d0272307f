// The bench's command line: `npm run bench -- [scenario …] [--size N[,N…]] [--runs K] [--rate R[,R…]]
// [--interval MS[,MS…]] [--duration S] [--edits E] [--count C] [--node-args 'FLAGS'] [--profile DIR] [--keep-logs]
// [--render-only]`. Pure, so that it is unit-tested.

export interface BenchArgs {
  scenarios: string[];
  sizes?: number[];
  runs?: number;
  rates?: number[];
  intervals?: number[];
  durationS?: number;
  edits?: number;
  count?: number;
  /** Flags for the node running opa-sync in the serving scenarios (space-separated), e.g. `--max-semi-space-size=2`. */
  nodeArgs?: string[];
  keepLogs: boolean;
  /**
   * --profile DIR: CPU profiles, heap snapshots (P1) and event-loop delays of every opa-sync the sidecar
   * scenarios start, in DIR; serve also profiles opa-sync and the bare node:http server and summarises.
   */
  profileDir?: string;
  /** Only rewrite the sections from the stored JSON (after a change of the report's layout). */
  renderOnly: boolean;
  help: boolean;
}

const LISTS = { '--size': 'sizes', '--rate': 'rates', '--interval': 'intervals' } as const;
const NUMBERS = {
  '--runs': 'runs',
  '--duration': 'durationS',
  '--edits': 'edits',
  '--count': 'count',
} as const;

function positive(flag: string, text: string): number {
  const n = Number(text.replace(/_/g, ''));
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`${flag}: not a positive number: ${JSON.stringify(text)}`);
  return n;
}

export function parseArgs(argv: readonly string[], known: readonly string[]): BenchArgs {
  const out: BenchArgs = {
    scenarios: [],
    keepLogs: false,
    renderOnly: false,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=')
        ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
        : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--help' || flag === '-h') out.help = true;
    else if (flag === '--keep-logs') out.keepLogs = true;
    else if (flag === '--render-only') out.renderOnly = true;
    else if (flag === '--profile') out.profileDir = value();
    else if (flag === '--node-args') {
      // Its value starts with "--": taken as is, never as an option of the bench.
      out.nodeArgs = value()
        .split(' ')
        .filter((s) => s !== '');
      if (out.nodeArgs.some((a) => !a.startsWith('-')))
        throw new Error(
          `--node-args: node flags only (each starting with -): ${JSON.stringify(out.nodeArgs.join(' '))}`,
        );
    } else if (flag in LISTS) {
      out[LISTS[flag as keyof typeof LISTS]] = value()
        .split(',')
        .filter((s) => s !== '')
        .map((s) => positive(flag, s));
    } else if (flag in NUMBERS) out[NUMBERS[flag as keyof typeof NUMBERS]] = positive(flag, value());
    else if (flag.startsWith('-')) throw new Error(`unknown option ${flag}`);
    else {
      const id = flag.toLowerCase() === 'p7' ? 'p1' : flag.toLowerCase();
      if (!known.includes(id))
        throw new Error(`unknown scenario ${flag}: one of ${known.join(', ')} (p7 is part of p1)`);
      if (!out.scenarios.includes(id)) out.scenarios.push(id);
    }
  }
  if (out.scenarios.length === 0) out.scenarios = [...known];
  return out;
}
