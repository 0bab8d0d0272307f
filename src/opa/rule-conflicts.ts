// Rules that two policy modules define differently. OPA accepts two modules of one package that both
// define a complete rule (`x := 1` in one ConfigMap, `x := 2` in another) and only finds the conflict
// when it evaluates: from then on every query that reaches the rule, `GET /v1/data` among them, answers
// 500, and every decision that reads the data tree fails. Two `default` rules for one rule OPA refuses
// at compile time, but which one it keeps depends on which was loaded first.
//
// opa-sync settles both the same way, whatever the order of loads (ConfigMaps created, opa-sync or OPA
// restarted): of the modules that define one rule differently, the one whose id (`<ns>/<name>/<key>`)
// sorts first stays loaded; the others are not loaded while it is, and both sides' status says so.
//
// Finding eval-time conflicts stays cheap: each module's text is scanned for its package and the heads
// of its rules (no call to OPA), and only a rule that more than one loaded module defines is evaluated,
// once, after a load that touched it.
import type { LoadError } from '../model/outcome.js';

/** A data path joined with '/', e.g. `e2e/conflict/x` for `data.e2e.conflict.x`. */
export type RuleKey = string;

const IDENT = '[A-Za-z_][A-Za-z0-9_]*';
const PACKAGE_LINE = new RegExp(`^package\\s+(${IDENT}(?:\\.${IDENT})*)\\s*(?:#.*)?$`);
// A rule head at the start of a line: `x := …`, `x = …`, `x if …`, `x {`, `x[k] := …`, `a.b := …`,
// `default x := …`. Functions (`f(x)`) conflict only when called, and `contains` rules never do.
const RULE_HEAD = new RegExp(`^(?:default\\s+)?(${IDENT}(?:\\.${IDENT})*)\\s*(?::=|=(?!=)|if\\b|\\{|\\[)`);
const NOT_RULES = new Set(['package', 'import', 'else', 'not', 'some', 'every', 'with', 'default']);

/**
 * The data paths of the rules a module's text defines, as far as a scan of its lines tells: its package
 * and the heads that start a line. It may name a rule that is not one (the cost is one evaluation) and
 * miss one written unusually (that conflict is then found by OPA alone, as without this scan).
 *
 * @example
 * ruleKeysOf('package a.b\n\nx := 1\ny if input.z\n') // ['a/b/x', 'a/b/y']
 */
export function ruleKeysOf(text: string): RuleKey[] {
  const lines = text.split('\n');
  let pkg: string | undefined;
  const keys = new Set<RuleKey>();
  for (const raw of lines) {
    const line = raw.replace(/\r$/, '');
    if (pkg === undefined) {
      const match = PACKAGE_LINE.exec(line.trim());
      if (match?.[1] !== undefined) pkg = match[1].split('.').join('/');
      continue;
    }
    const head = RULE_HEAD.exec(line);
    const name = head?.[1];
    if (name === undefined || NOT_RULES.has(name)) continue;
    keys.add(`${pkg}/${name.split('.').join('/')}`);
  }
  return [...keys].sort();
}

/** Which loaded modules define which rules: the one input of "which rules are worth evaluating". */
export class RuleIndex {
  private readonly byModule = new Map<string, RuleKey[]>();
  private readonly byRule = new Map<RuleKey, Set<string>>();

  /** The module is loaded with this text. */
  set(moduleId: string, text: string): void {
    this.remove(moduleId);
    const keys = ruleKeysOf(text);
    this.byModule.set(moduleId, keys);
    for (const key of keys) {
      let ids = this.byRule.get(key);
      if (ids === undefined) this.byRule.set(key, (ids = new Set()));
      ids.add(moduleId);
    }
  }

  /** The module is no longer loaded. */
  remove(moduleId: string): void {
    for (const key of this.byModule.get(moduleId) ?? []) {
      const ids = this.byRule.get(key);
      ids?.delete(moduleId);
      if (ids?.size === 0) this.byRule.delete(key);
    }
    this.byModule.delete(moduleId);
  }

  /** The rules of this module that another loaded module defines too. */
  shared(moduleId: string): RuleKey[] {
    return (this.byModule.get(moduleId) ?? []).filter((key) => (this.byRule.get(key)?.size ?? 0) > 1);
  }

  /** The loaded modules that define this rule. */
  definers(key: RuleKey): string[] {
    return [...(this.byRule.get(key) ?? [])].sort();
  }
}

/** What OPA's error says two or more modules define differently: the rule, and the modules' ids. */
export interface ConflictReport {
  /** `data.a.b.x`, as OPA names it. */
  rule: string;
  files: string[];
  /** OPA's own error (code, message, location), as OPA sent it. */
  opaError: LoadError;
}

interface OpaDetail {
  code?: unknown;
  message?: unknown;
  location?: { file?: unknown };
}

function details(body: { errors?: unknown[] | undefined }): OpaDetail[] {
  return (body.errors ?? []).filter((e): e is OpaDetail => typeof e === 'object' && e !== null);
}

function asLoadError(e: OpaDetail): LoadError {
  return { code: String(e.code), message: String(e.message) };
}

/** Every `<file>:<row>` in a message of OPA's, in order, without repeats. */
function filesIn(text: string): string[] {
  return [...new Set([...text.matchAll(/([^\s,:]+):\d+/g)].map((m) => m[1] as string))];
}

/**
 * The eval-time conflict in an error answer of OPA's (500 `internal_error` with an `eval_conflict_error`:
 * `rule data.t.x produced conflicting values:\n  1 at a.rego:3\n  2 at b.rego:3`), or undefined.
 */
export function parseEvalConflict(body: { errors?: unknown[] | undefined }): ConflictReport | undefined {
  for (const e of details(body)) {
    if (e.code !== 'eval_conflict_error' || typeof e.message !== 'string') continue;
    const rule = /\b(data(?:\.[^\s.]+)+)/.exec(e.message)?.[1];
    const files = filesIn(e.message.split('\n').slice(1).join('\n'));
    const where = typeof e.location?.file === 'string' ? e.location.file : undefined;
    if (where !== undefined && !files.includes(where)) files.push(where);
    if (rule === undefined || files.length === 0) continue;
    return { rule, files: files.sort(), opaError: asLoadError(e) };
  }
  return undefined;
}

/**
 * The compile-time conflict of two `default` rules in OPA's refusal of a module (`rego_type_error`:
 * `multiple default rules data.u.y found at a.rego:3, b.rego:3`), or undefined.
 */
export function parseDefaultConflict(body: { errors?: unknown[] | undefined }): ConflictReport | undefined {
  for (const e of details(body)) {
    if (typeof e.message !== 'string') continue;
    const match = /^multiple default rules (data\.\S+) found at (.+)$/.exec(e.message);
    if (match?.[1] === undefined || match[2] === undefined) continue;
    const files = filesIn(match[2]);
    if (files.length < 2) continue;
    return { rule: match[1], files: files.sort(), opaError: asLoadError(e) };
  }
  return undefined;
}

/** One module held back because another, sorting first, defines one of its rules differently. */
export interface HeldBack {
  kind: 'value' | 'default';
  rule: string;
  loser: string;
  /** The text it was held back with: a new text is tried again. */
  loserText: string | undefined;
  /** The origin key and description of the loser's origin. */
  loserKey: string;
  loserOrigin: string;
  winner: string;
  /** The winner's text then: held back while the winner is loaded with this text. */
  winnerText: string | undefined;
  winnerKey: string;
  winnerOrigin: string;
  opaError: LoadError;
}

/** The modules held back, by the loser's id; the winners' side looked up from them. */
export class HeldBackModules {
  private readonly byLoser = new Map<string, HeldBack>();

  add(held: HeldBack): void {
    this.byLoser.set(held.loser, held);
  }

  all(): HeldBack[] {
    return [...this.byLoser.values()];
  }

  of(loser: string): HeldBack | undefined {
    return this.byLoser.get(loser);
  }

  /** The modules this one keeps out. */
  keptOutBy(winner: string): HeldBack[] {
    return [...this.byLoser.values()].filter((h) => h.winner === winner);
  }

  /** Forgets the records of this module, as the loser and as the winner; returns them. */
  release(id: string): HeldBack[] {
    const released = [...this.byLoser.values()].filter((h) => h.loser === id || h.winner === id);
    for (const h of released) this.byLoser.delete(h.loser);
    return released;
  }

  delete(loser: string): void {
    this.byLoser.delete(loser);
  }
}

const HOW = 'of modules that define one rule differently, the one whose id sorts first is loaded';

function what(kind: HeldBack['kind'], rule: string): string {
  return kind === 'default' ? `a default rule for ${rule}` : `rule ${rule} with a conflicting value`;
}

/** The status error of a held-back module, naming the one kept and its origin, with OPA's error. */
export function loserError(held: HeldBack): LoadError {
  return {
    code: 'rule_conflict',
    message:
      `module ${held.loser} is not loaded: module ${held.winner} (${held.winnerOrigin}) also defines ` +
      `${what(held.kind, held.rule)} (${HOW})`,
    errors: [held.opaError],
  };
}

/** The status error of the module kept, naming the one it keeps out and its origin, with OPA's error. */
export function winnerError(held: HeldBack): LoadError {
  return {
    code: 'rule_conflict',
    message:
      `module ${held.loser} (${held.loserOrigin}) also defines ${what(held.kind, held.rule)}: it is not ` +
      `loaded while module ${held.winner} is (${HOW})`,
    errors: [held.opaError],
  };
}

/** `data.a.b.x` → `['a', 'b', 'x']`. */
export function rulePath(key: RuleKey): string[] {
  return key.split('/');
}
