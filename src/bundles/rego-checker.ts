// The incremental Rego checker of one bundle: gives, for a candidate set of modules, exactly what
// `checkModules` (validate.ts) gives from scratch — OPA's errors per module, or every module's package —
// while running the real compiler only over the modules an edit can affect.
//
// It keeps, between checks:
// - the last set that compiled (path → text): a set that compiled stays clean wherever nothing changed;
// - each module's footprint and package, read once per text from OPA's parser (`opa eval` of
//   `rego.parse_module`, one process for every new text of a check), see rego-footprint.ts;
// - a folder holding the candidate set (only changed files are written), where `opa check` runs.
//
// Then a check is: the changed modules (new, edited, removed) against the last clean set; the modules
// related to them, closed transitively; `opa check` over those (fresh processes, ~10 ms for a few files:
// measured, a long-running `opa run --server` is slower here, since each policy PUT compiles every
// loaded module again, 1–3 s with 1,000 loaded). This equals a check of the whole set, because the
// compiler's result for the rest is what it was (clean) and does not meet the checked part: errors of
// the checked part are the whole set's errors, in the same order, under the same error limit.
//
// Most edits touch modules that nothing else is related to, so `opa check` of the changed modules alone
// starts at once, beside the parser, and is the answer when the footprints then say that nothing else
// is affected (otherwise the affected set is checked). It also keeps a typo cheap: OPA reports parse
// errors alone (nothing is compiled when a module does not parse), and only changed modules can fail to
// parse, so when OPA's parser refused a changed module, that check is the whole set's answer if it
// reports parse errors only.
//
// v0 modules (`--bundle-rego-version=0`, or not set with an OPA 0.x binary, which parses v0 by default)
// and any OPA 0.x binary: `rego.parse_module` of 1.x reads v1 only, that of 0.x v0 only, so footprints
// are unknown and every check is a whole-set check, with packages from `opa inspect` as before (per
// text, cached).
import { mkdir, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { LoadError } from '../model/outcome.js';
import { comparePaths } from '../util/paths.js';
import { affectedBy, footprintOf, type Footprint } from './rego-footprint.js';
import {
  errorCodes,
  moduleArg,
  moduleFile,
  runCheck,
  runInspect,
  type CandidateModule,
  execHere,
  type CheckResult,
  type OpaExec,
  type OpaRun,
  type PackagePath,
} from './validate.js';
import { opaMajorVersion, parsesV0 } from './opa-rego-flags.js';

/** Files written (or removed) at once when the folder is brought to a candidate set. */
const WRITE_CONCURRENCY = 16;
/** Above this many targets `opa check` is given the folder ('.') rather than a list of files. */
const MAX_TARGETS = 500;

export interface RegoCheckerOptions {
  opaBin: string;
  /** Parse and compile as Rego v0 (true), v1 (false), or as the binary does by default (undefined). */
  v0?: boolean | undefined;
  timeoutMs?: number | undefined;
}

/** What one check did: for logs, benchmarks and tests. */
export interface CheckStats {
  /** Modules that differ from the last set that compiled (new, edited or removed). */
  changed: number;
  /** Modules `opa check` was run over (0: nothing to check). */
  checked: number;
  /** Whether that was the whole set. */
  whole: boolean;
  /** New texts read by OPA's parser for their footprint and package. */
  parsed: number;
}

/** What is known of one text of one module. */
interface Known {
  /** Undefined: OPA's parser refused the text, or it is v0. */
  footprint: Footprint | undefined;
  parsed: boolean;
  pkg?: PackagePath | undefined;
}

/** The answer of a check, or the modules `opa check` must see for it. */
type Plan = { targets: string[] } | { answer: Map<string, LoadError[]> };

/**
 * @example
 * const checker = new RegoChecker({ opaBin });
 * const first = await checker.check(modules, dir); // the whole set (everything is new)
 * const next = await checker.check(edited, dir); // only what the edit can affect
 */
export class RegoChecker {
  /** The last candidate set that compiled, by path. */
  private clean = new Map<string, string>();
  /** By path, then text (texts are the desired state's own strings: no key is built per check). */
  private known = new Map<string, Map<string, Known>>();
  /** Texts seen in checks since the last set that compiled, by path: kept in `known` until the next one. */
  private recent = new Map<string, Set<string>>();
  /** What the folder holds, by path; reset when the folder changes. */
  private written = new Map<string, string>();
  private dir: string | undefined;
  private readonly v0: boolean | undefined;
  /** No footprints, every check a whole-set check: v0 Rego, or an OPA 0.x binary (known at the first check). */
  private wholeSets: boolean | undefined;
  private readonly timeoutMs: number;
  lastCheck: CheckStats = { changed: 0, checked: 0, whole: false, parsed: 0 };

  constructor(private readonly options: RegoCheckerOptions) {
    this.v0 = options.v0;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  private knownOf(modulePath: string, text: string): Known | undefined {
    return this.known.get(modulePath)?.get(text);
  }

  private remember(modulePath: string, text: string, known: Known): void {
    let texts = this.known.get(modulePath);
    if (texts === undefined) {
      texts = new Map();
      this.known.set(modulePath, texts);
    }
    texts.set(text, known);
  }

  /**
   * The same result as `checkModules(opaBin, modules, { v0 })`. `dir` is a folder of the checker's own
   * (created if missing; another folder than last time is filled again). `signal` stops opa; `exec`
   * runs it (default: from this process).
   */
  async check(
    modules: readonly CandidateModule[],
    dir: string,
    { signal, exec }: { signal?: AbortSignal | undefined; exec?: OpaExec | undefined } = {},
  ): Promise<CheckResult> {
    const result: CheckResult = { errors: new Map(), packages: new Map() };
    const candidate = new Map<string, string>();
    const changed: string[] = [];
    for (const m of modules) {
      candidate.set(m.path, m.text);
      if (this.clean.get(m.path) !== m.text) changed.push(m.path);
    }
    for (const p of changed) {
      const texts = this.recent.get(p) ?? new Set<string>();
      texts.add(candidate.get(p) ?? '');
      this.recent.set(p, texts);
    }
    const removed = [...this.clean].filter(([p, t]) => candidate.get(p) !== t);
    const gone = removed.filter(([p]) => !candidate.has(p)).length;
    this.lastCheck = { changed: changed.length + gone, checked: 0, whole: false, parsed: 0 };
    if (candidate.size === 0) {
      this.compiled(candidate);
      return result;
    }
    const opa: OpaRun = { opaBin: this.options.opaBin, cwd: dir, timeoutMs: this.timeoutMs, signal, exec };
    if (this.wholeSets === undefined) {
      // OPA 0.x's `rego.parse_module` reads v0 only, and its v0 parser refuses the footprint query.
      const major = await opaMajorVersion(this.options.opaBin);
      this.wholeSets = parsesV0(major, this.v0) || major === 0;
    }
    if (changed.length > 0 || removed.length > 0) {
      await this.syncFolder(candidate, dir);
      const reading = this.readNew(candidate, changed, opa);
      let plan: Plan;
      if (this.clean.size === 0 || this.wholeSets) {
        // Nothing compiled yet, or v0 (no footprints): the whole set is checked, while the parser reads it.
        plan = { targets: [...candidate.keys()] };
      } else {
        // The changed modules alone are what most edits must check: checked while the parser reads
        // them, and taken as the answer only if the footprints say they are all there is to check.
        const speculative = this.runCheck(changed, candidate.size, opa);
        speculative.catch(() => undefined); // awaited below, unless the plan does without it
        await reading;
        plan = await this.plan(candidate, changed, removed, speculative);
      }
      const [errors] = await Promise.all([
        'answer' in plan ? plan.answer : this.runCheck(plan.targets, candidate.size, opa),
        reading,
      ]);
      if (errors.size > 0) {
        result.errors = errors;
        return result;
      }
    }
    this.compiled(candidate);
    result.packages = await this.packagesOf(candidate, opa);
    return result;
  }

  /** `opa check` over the targets (none: nothing to check), named as a walk of the folder names them. */
  private async runCheck(
    targets: readonly string[],
    whole: number,
    opa: OpaRun,
  ): Promise<Map<string, LoadError[]>> {
    if (targets.length === 0) return new Map();
    this.lastCheck.checked = targets.length;
    this.lastCheck.whole = targets.length === whole;
    if (this.lastCheck.whole && targets.length > MAX_TARGETS) return runCheck(opa, ['.'], { v0: this.v0 });
    const args = targets.map((p) => ({ arg: moduleArg(p), segments: moduleArg(p).split('/') }));
    args.sort((a, b) => comparePaths(a.segments, b.segments));
    return runCheck(
      opa,
      args.map((a) => a.arg),
      { v0: this.v0 },
    );
  }

  /**
   * What `opa check` must see for the whole set's answer: the modules related to the changed ones, or
   * the answer itself when the changed modules' own check (`changedOnly`) is it: when those are all
   * there is to check, or when OPA's parser refused one of them and that check found parse errors only
   * (only changed modules can fail to parse, and OPA reports parse errors alone, compiling nothing).
   */
  private async plan(
    candidate: Map<string, string>,
    changed: readonly string[],
    removed: readonly (readonly [string, string])[],
    changedOnly: Promise<Map<string, LoadError[]>>,
  ): Promise<Plan> {
    if (changed.some((p) => this.knownOf(p, candidate.get(p) ?? '')?.parsed === false && !this.wholeSets)) {
      const errors = await changedOnly;
      const codes = errorCodes(errors);
      if (codes.length > 0 && codes.every((c) => c === 'rego_parse_error')) return { answer: errors };
    }
    const footprints = new Map<string, Footprint | undefined>();
    for (const [p, t] of candidate) footprints.set(p, this.knownOf(p, t)?.footprint);
    const seeds = [
      ...changed.map((p) => footprints.get(p)),
      ...removed.map(([p, t]) => this.knownOf(p, t)?.footprint),
    ];
    const affected = affectedBy(footprints, seeds);
    if (affected === 'all') return { targets: [...candidate.keys()] };
    for (const p of changed) affected.add(p);
    if (affected.size === changed.length) return { answer: await changedOnly };
    return { targets: [...candidate.keys()].filter((p) => affected.has(p)) };
  }

  /** Reads the footprint and package of every changed text not known yet, with OPA's parser. */
  private async readNew(
    candidate: Map<string, string>,
    changed: readonly string[],
    opa: OpaRun,
  ): Promise<void> {
    const fresh = changed.filter((p) => this.knownOf(p, candidate.get(p) ?? '') === undefined);
    if (fresh.length === 0) return;
    if (this.wholeSets !== true) this.lastCheck.parsed = fresh.length;
    const asts =
      this.wholeSets === true ? new Map<string, unknown>() : await this.parse(fresh, candidate, opa);
    for (const p of fresh) {
      const ast = asts.get(p);
      const footprint = ast === undefined ? undefined : footprintOf(ast);
      this.remember(p, candidate.get(p) ?? '', { footprint, parsed: ast !== undefined, pkg: footprint?.pkg });
    }
  }

  /**
   * Each module's AST from OPA's parser (`rego.parse_module`), by path; a module it refuses is left
   * out. One `opa eval`, the texts in its input. A failure leaves every footprint unknown (whole-set
   * checks), never a wrong one.
   */
  private async parse(
    paths: readonly string[],
    candidate: Map<string, string>,
    opa: OpaRun,
  ): Promise<Map<string, unknown>> {
    const dir = this.dir;
    if (dir === undefined) return new Map();
    const input = path.join(path.dirname(dir), `${path.basename(dir)}-parse.json`);
    await writeFile(input, JSON.stringify({ modules: paths.map((p) => ({ p, t: candidate.get(p) ?? '' })) }));
    try {
      const query = 'asts := {m.p: rego.parse_module(m.p, m.t) | some m in input.modules}';
      const { code, stdout } = await (opa.exec ?? execHere)(
        opa.opaBin,
        ['eval', '--format', 'json', '--input', input, query],
        opa,
      );
      if (code !== 0) return new Map();
      const parsed = JSON.parse(stdout) as {
        result?: { bindings?: { asts?: Record<string, unknown> } }[];
      };
      return new Map(Object.entries(parsed.result?.[0]?.bindings?.asts ?? {}));
    } catch {
      if (opa.signal?.aborted) throw opa.signal.reason;
      return new Map();
    } finally {
      await rm(input, { force: true });
    }
  }

  /** Packages of the set that compiled: from the parser, or else from `opa inspect` of the folder. */
  private async packagesOf(candidate: Map<string, string>, opa: OpaRun): Promise<Map<string, PackagePath>> {
    const packages = new Map<string, PackagePath>();
    let missing = false;
    for (const [p, t] of candidate) {
      const pkg = this.knownOf(p, t)?.pkg;
      if (pkg === undefined) missing = true;
      else packages.set(p, pkg);
    }
    if (!missing) return packages;
    // The folder holds exactly the candidate set (syncFolder), as `checkModules`' folder does.
    await this.syncFolder(candidate, opa.cwd);
    const inspected = await runInspect(opa, { v0: this.v0 });
    for (const [p, t] of candidate) {
      const pkg = inspected.get(p);
      if (pkg === undefined) continue;
      packages.set(p, pkg);
      this.remember(p, t, { footprint: undefined, parsed: false, ...this.knownOf(p, t), pkg });
    }
    return packages;
  }

  /** The candidate set compiled: it is the clean set now; only its texts (and recent ones) stay known. */
  private compiled(candidate: Map<string, string>): void {
    this.clean = candidate;
    for (const [p, texts] of [...this.known]) {
      const keep = this.recent.get(p);
      const current = candidate.get(p);
      for (const t of [...texts.keys()]) if (t !== current && keep?.has(t) !== true) texts.delete(t);
      if (texts.size === 0) this.known.delete(p);
    }
    this.recent = new Map();
  }

  /** Makes the folder hold exactly the candidate set, writing only what differs. */
  private async syncFolder(candidate: Map<string, string>, dir: string): Promise<void> {
    if (this.dir !== dir) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      this.dir = dir;
      this.written = new Map();
    }
    const removals = [...this.written.keys()].filter((p) => !candidate.has(p));
    await forEachLimited(removals, async (p) => {
      this.written.delete(p);
      await unlink(moduleFile(dir, p)).catch((err: unknown) => {
        if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
      });
    });
    const writes = [...candidate].filter(([p, t]) => this.written.get(p) !== t);
    const folders = new Set(writes.map(([p]) => path.dirname(moduleFile(dir, p))));
    await forEachLimited([...folders], (folder) => mkdir(folder, { recursive: true }));
    await forEachLimited(writes, async ([p, t]) => {
      // Forgotten first: a write that fails leaves the file unknown, so the next sync writes it again.
      this.written.delete(p);
      await writeFile(moduleFile(dir, p), t);
      this.written.set(p, t);
    });
  }
}

async function forEachLimited<T>(items: readonly T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next] as T;
      next += 1;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, items.length) }, () => worker()));
}
