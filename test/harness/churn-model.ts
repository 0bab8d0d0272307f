// The churn test's own prediction of opa-sync's outcome: random steps (create / update / relabel /
// delete of policy and data ConfigMaps, NetworkPolicy churn) over a few ConfigMap "slots", the Rego and
// JSON texts they hold, and, after a round of steps settled, what every status annotation and OPA must
// show. It follows the README's rules ("Policies", "Data", "Status", "Dependency order"):
// - each key of a policy ConfigMap is one module; a parse or compile error leaves OPA with the text it
//   held before (when it held one), and the status names OPA's error code and the module;
// - a module that calls the function of the `lib` slot loads while OPA holds a lib that defines it, and
//   fails otherwise (OPA's rego_type_error, or dependency_removed when the lib was removed under it);
// - a data ConfigMap's keys each hold a JSON object, or fail with invalid_json / invalid_data and are
//   then absent from OPA; a ConfigMap with neither label has no status annotation and nothing in OPA.
// What a round's intermediate states were is not known (opa-sync may coalesce them): where that
// matters the prediction is a set of allowed outcomes, checked against what OPA holds at the end.
import fc from 'fast-check';

export const SLOTS = ['lib', 'a', 'b', 'd'] as const;
export type Slot = (typeof SLOTS)[number];
export type Labels = 'policy' | 'data' | 'none';

/** What one ConfigMap key holds; rendered to text by `render`. */
export type Variant =
  | { kind: 'ok'; v: number }
  | { kind: 'uses'; v: number }
  | { kind: 'lib'; v: number }
  | { kind: 'parse' }
  | { kind: 'compile' }
  | { kind: 'json'; v: number }
  | { kind: 'badjson' }
  | { kind: 'array' };

export type Step =
  | { op: 'put'; slot: Slot; labels: 'policy' | 'data'; data: Record<string, Variant> }
  | { op: 'relabel'; slot: Slot; labels: Labels }
  | { op: 'delete'; slot: Slot }
  | { op: 'putNp'; np: number; v: number }
  | { op: 'deleteNp'; np: number };

/** A run: rounds of steps, each round followed by a settle and a check. */
export type Run = Step[][];

// ---------------------------------------------------------------------------------------------------
// Generators

const small = fc.integer({ min: 1, max: 3 });
const userVariant: fc.Arbitrary<Variant> = fc.oneof(
  { weight: 3, arbitrary: small.map((v) => ({ kind: 'ok', v }) as const) },
  { weight: 3, arbitrary: small.map((v) => ({ kind: 'uses', v }) as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'parse' } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'compile' } as const) },
);
// The lib's main.rego always defines f, or fails on its own: a lib that compiles without f would make
// the outcome depend on the order opa-sync happened to see the steps in.
const libVariant: fc.Arbitrary<Variant> = fc.oneof(
  { weight: 4, arbitrary: small.map((v) => ({ kind: 'lib', v }) as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'parse' } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'compile' } as const) },
);
const jsonVariant: fc.Arbitrary<Variant> = fc.oneof(
  { weight: 4, arbitrary: small.map((v) => ({ kind: 'json', v }) as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'badjson' } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'array' } as const) },
);

function keyed(
  keys: readonly string[],
  variant: fc.Arbitrary<Variant>,
): fc.Arbitrary<Record<string, Variant>> {
  return fc
    .tuple(fc.subarray([...keys], { minLength: 1 }), fc.array(variant, { minLength: 2, maxLength: 2 }))
    .map(([ks, vs]) => Object.fromEntries(ks.map((k, i) => [k, vs[i] as Variant])));
}

const slot = fc.constantFrom(...SLOTS);
const putPolicy: fc.Arbitrary<Step> = slot.chain((s) =>
  (s === 'lib' ? keyed(['main.rego'], libVariant) : keyed(['main.rego', 'more.rego'], userVariant)).map(
    (data) => ({ op: 'put', slot: s, labels: 'policy', data }) as const,
  ),
);
const putData: fc.Arbitrary<Step> = fc
  .tuple(slot, keyed(['a.json', 'b.json'], jsonVariant))
  .map(([s, data]) => ({ op: 'put', slot: s, labels: 'data', data }) as const);

export const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: putPolicy },
  { weight: 2, arbitrary: putData },
  {
    weight: 2,
    arbitrary: fc
      .tuple(slot, fc.constantFrom<Labels>('policy', 'data', 'none'))
      .map(([s, labels]) => ({ op: 'relabel', slot: s, labels }) as const),
  },
  { weight: 2, arbitrary: slot.map((s) => ({ op: 'delete', slot: s }) as const) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.integer({ min: 0, max: 2 }), small)
      .map(([np, v]) => ({ op: 'putNp', np, v }) as const),
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 }).map((np) => ({ op: 'deleteNp', np }) as const) },
);

/** Two or three rounds of one to six steps. */
export const runArb: fc.Arbitrary<Run> = fc.array(fc.array(stepArb, { minLength: 1, maxLength: 6 }), {
  minLength: 2,
  maxLength: 3,
});

/** One line per step, for failure messages. */
export function describeRun(run: Run): string {
  return run
    .map((round, i) => `round ${i + 1}:\n${round.map((s) => `    ${JSON.stringify(s)}`).join('\n')}`)
    .join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Names and texts

/** The names of one run's objects: its ConfigMaps, NetworkPolicies and Rego packages are its own. */
export class RunNames {
  constructor(
    readonly namespace: string,
    readonly run: number,
  ) {}

  configMap(s: Slot): string {
    return `r${this.run}-${s}`;
  }

  networkPolicy(np: number): string {
    return `r${this.run}-np${np}`;
  }

  moduleId(s: Slot, key: string): string {
    return `${this.namespace}/${this.configMap(s)}/${key}`;
  }

  /** The module whose function `uses` modules call. */
  get libId(): string {
    return this.moduleId('lib', 'main.rego');
  }

  private pkg(s: Slot, key: string): string {
    return `churn.r${this.run}.${s}.${key.replace(/\..*$/, '')}`;
  }

  render(s: Slot, key: string, variant: Variant): string {
    const head = `package ${this.pkg(s, key)}\n\n`;
    switch (variant.kind) {
      case 'ok':
        return `${head}value := ${variant.v}\n`;
      case 'uses':
        return `${head}value := data.churn.r${this.run}.lib.main.f(${variant.v})\n`;
      case 'lib':
        return `${head}f(x) := x + ${variant.v}\n`;
      case 'parse':
        return `${head}value := {\n`;
      case 'compile':
        return `${head}value := x\n`;
      case 'json':
        return JSON.stringify({ v: variant.v });
      case 'badjson':
        return '{"v":';
      case 'array':
        return '[1,2]';
    }
  }
}

/** Whether a module text held by OPA defines the lib's function. */
export const definesF = (text: string | undefined): boolean => text?.includes('\nf(x) := ') === true;

// ---------------------------------------------------------------------------------------------------
// The model

interface SlotState {
  labels: Labels;
  data: Record<string, Variant>;
}

/** A key that failed: its error is about one of these (a module id or data key, with one of the codes). */
type Failure = readonly { what: string; codes: readonly string[] }[];

/** What a key must end as: loaded, or failed with one of these error codes. */
type KeyOutcome = { ok: true } | { ok: false; codes: readonly string[] };

/** What opa-sync saw of the cluster, and what this round could have left OPA holding. */
export class ChurnModel {
  readonly slots = new Map<Slot, SlotState>();
  readonly networkPolicies = new Map<number, number>();
  /** Policy id → text OPA held at the start of the round (from OPA itself). */
  private startHeld = new Map<string, string>();
  /** Policy id → texts of it during this round that OPA could have loaded. */
  private loadable = new Map<string, Set<string>>();
  /** Policy ids that stopped being wanted at some point in this round. */
  private removed = new Set<string>();
  private libRemovedInRound = false;
  private libEverRemoved = false;

  constructor(readonly names: RunNames) {}

  /** Starts a round from what OPA holds now (policy id → text, this run's only). */
  startRound(held: ReadonlyMap<string, string>): void {
    this.startHeld = new Map(held);
    this.loadable = new Map();
    this.removed = new Set();
    this.libRemovedInRound = false;
  }

  /** Policy id → text wanted now. */
  policyTexts(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [s, state] of this.slots) {
      if (state.labels !== 'policy') continue;
      for (const [key, variant] of Object.entries(state.data))
        out.set(this.names.moduleId(s, key), this.names.render(s, key, variant));
    }
    return out;
  }

  /** Applies a step to the model; returns false when the step changes nothing in the cluster. */
  apply(step: Step): boolean {
    const before = this.policyTexts();
    let changed = true;
    switch (step.op) {
      case 'put': {
        const old = this.slots.get(step.slot);
        changed = old === undefined || old.labels !== step.labels || !sameData(old.data, step.data);
        this.slots.set(step.slot, { labels: step.labels, data: step.data });
        break;
      }
      case 'relabel': {
        const old = this.slots.get(step.slot);
        changed = old !== undefined && old.labels !== step.labels;
        if (old !== undefined) this.slots.set(step.slot, { labels: step.labels, data: old.data });
        break;
      }
      case 'delete':
        changed = this.slots.delete(step.slot);
        break;
      case 'putNp':
        changed = this.networkPolicies.get(step.np) !== step.v;
        this.networkPolicies.set(step.np, step.v);
        break;
      case 'deleteNp':
        changed = this.networkPolicies.delete(step.np);
        break;
    }
    const after = this.policyTexts();
    for (const id of before.keys()) {
      if (after.has(id)) continue;
      this.removed.add(id);
      if (id === this.names.libId) this.libRemovedInRound = this.libEverRemoved = true;
    }
    for (const [s, state] of this.slots) {
      if (state.labels !== 'policy') continue;
      for (const [key, variant] of Object.entries(state.data)) {
        if (variant.kind !== 'ok' && variant.kind !== 'uses' && variant.kind !== 'lib') continue;
        const id = this.names.moduleId(s, key);
        const texts = this.loadable.get(id) ?? new Set<string>();
        texts.add(this.names.render(s, key, variant));
        this.loadable.set(id, texts);
      }
    }
    return changed;
  }

  /** How one policy key must end, given whether OPA holds a lib that defines f. */
  private policyOutcome(variant: Variant, libLoaded: boolean): KeyOutcome {
    switch (variant.kind) {
      case 'ok':
      case 'lib':
        return { ok: true };
      case 'uses':
        return libLoaded
          ? { ok: true }
          : {
              ok: false,
              codes: this.libEverRemoved ? ['rego_type_error', 'dependency_removed'] : ['rego_type_error'],
            };
      case 'compile':
        return { ok: false, codes: ['rego_unsafe_var_error'] };
      default:
        return { ok: false, codes: ['rego_parse_error'] };
    }
  }

  /**
   * Everything that differs from the prediction, one line each ([] when all is as predicted): the
   * status annotation of every ConfigMap of the run, and the policies and documents OPA holds for it.
   */
  check(actual: ActualState): string[] {
    const out: string[] = [];
    const { names } = this;
    const libLoaded = definesF(actual.policies.get(names.libId));
    const wanted = this.policyTexts();
    for (const id of actual.policies.keys())
      if (!wanted.has(id)) out.push(`policy ${id}: in OPA, but no policy ConfigMap has it`);
    for (const s of SLOTS) {
      const name = names.configMap(s);
      const state = this.slots.get(s);
      const status = actual.statuses.get(name);
      const docs = actual.documents.get(name);
      if (state === undefined) {
        if (actual.statuses.has(name)) out.push(`ConfigMap ${name}: exists, but was deleted`);
        continue;
      }
      if (state.labels !== 'data' && docs !== undefined)
        out.push(`ConfigMap ${name}: not data, but OPA holds data.${names.namespace}.${name}`);
      if (state.labels === 'none') {
        if (status !== undefined) out.push(`ConfigMap ${name}: unlabelled, but has status ${status}`);
        continue;
      }
      const failures: Failure[] = [];
      for (const key of Object.keys(state.data).sort()) {
        const variant = state.data[key] as Variant;
        if (state.labels === 'data') {
          const held = docs?.[key];
          if (variant.kind === 'json') {
            if (JSON.stringify(held) !== JSON.stringify({ v: variant.v }))
              out.push(`document ${name}/${key}: OPA holds ${JSON.stringify(held)}, want {"v":${variant.v}}`);
            continue;
          }
          if (held !== undefined)
            out.push(`document ${name}/${key}: not loadable, but OPA holds ${JSON.stringify(held)}`);
          failures.push([{ what: key, codes: [variant.kind === 'array' ? 'invalid_data' : 'invalid_json'] }]);
          continue;
        }
        const id = names.moduleId(s, key);
        const text = names.render(s, key, variant);
        const held = actual.policies.get(id);
        const outcome = this.policyOutcome(variant, libLoaded);
        if (outcome.ok) {
          if (held !== text) out.push(`policy ${id}: OPA holds ${show(held)}, want ${show(text)}`);
          continue;
        }
        failures.push([{ what: id, codes: outcome.codes }, ...this.brokenLibErrors(id, variant, actual)]);
        const allowed = this.heldAfterFailure(id);
        if (!allowed.texts.has(held ?? '') && !(held === undefined && allowed.absent))
          out.push(
            `policy ${id} (failed): OPA holds ${show(held)}, want one of ${[...allowed.texts].map(show).join(', ')}` +
              (allowed.absent ? ' or nothing' : ''),
          );
      }
      out.push(...checkStatus(name, status, failures));
    }
    return out;
  }

  /**
   * A lib that no longer defines f (its compile-error text) while OPA holds modules that call it: OPA
   * reports those modules' undefined function (an earlier stage of its compiler) instead of the lib's
   * own error. Either is right, depending on what OPA holds when the lib is last tried.
   */
  private brokenLibErrors(id: string, variant: Variant, actual: ActualState): Failure {
    if (id !== this.names.libId || variant.kind !== 'compile') return [];
    return [...actual.policies]
      .filter(([, text]) => text.includes('.lib.main.f('))
      .map(([user]) => ({ what: user, codes: ['rego_type_error'] }));
  }

  /** What OPA may hold for a module that failed: a text it held or could load this round, or nothing. */
  private heldAfterFailure(id: string): { texts: Set<string>; absent: boolean } {
    const texts = new Set(this.loadable.get(id) ?? []);
    const start = this.startHeld.get(id);
    if (start !== undefined) texts.add(start);
    const hadUses = [...texts].some((t) => t.includes('.lib.main.f('));
    const absent = start === undefined || this.removed.has(id) || (this.libRemovedInRound && hadUses);
    return { texts, absent };
  }
}

/** What OPA and the cluster show for one run's objects. */
export interface ActualState {
  /** Policy id → text, this run's modules only. */
  policies: Map<string, string>;
  /** ConfigMap name → data.<namespace>.<name> (this run's only). */
  documents: Map<string, Record<string, unknown>>;
  /** ConfigMap name → status annotation (absent: the ConfigMap has none); only existing ConfigMaps. */
  statuses: Map<string, string | undefined>;
}

function sameData(a: Record<string, Variant>, b: Record<string, Variant>): boolean {
  const canon = (r: Record<string, Variant>): string =>
    JSON.stringify(
      Object.keys(r)
        .sort()
        .map((k) => [k, r[k]]),
    );
  return canon(a) === canon(b);
}

const show = (text: string | undefined): string =>
  text === undefined ? 'nothing' : JSON.stringify(text.length > 90 ? `${text.slice(0, 90)}…` : text);

interface StatusError {
  code?: string;
  message?: string;
  errors?: { code?: string; location?: { file?: string } }[];
}

/** Whether an error of the status is about `what` (a module id, or a data key) with one of `codes`. */
function errorMatches(error: StatusError, failure: Failure): boolean {
  return failure.some(({ what, codes }) => errorMatchesOne(error, what, codes));
}

function errorMatchesOne(error: StatusError, what: string, codes: readonly string[]): boolean {
  if (error.code === 'dependency_removed')
    return codes.includes('dependency_removed') && (error.message ?? '').includes(`module ${what} `);
  if (codes.includes(error.code ?? '')) return (error.message ?? '').includes(JSON.stringify(what));
  // OPA's own error body: the codes and modules are in its errors[].
  return (error.errors ?? []).some((e) => codes.includes(e.code ?? '') && e.location?.file === what);
}

/** The status annotation must be ok with no failures, else list exactly these failures in order. */
function checkStatus(name: string, status: string | undefined, failures: readonly Failure[]): string[] {
  if (status === undefined) return [`ConfigMap ${name}: no status annotation`];
  if (failures.length === 0)
    return status === '{"status":"ok"}' ? [] : [`ConfigMap ${name}: status ${status}, want ok`];
  const want = failures
    .map((f) => f.map(({ what, codes }) => `${what} ${codes.join('|')}`).join(' or '))
    .join(', ');
  let parsed: { status?: string; error?: StatusError | StatusError[] };
  try {
    parsed = JSON.parse(status) as typeof parsed;
  } catch {
    return [`ConfigMap ${name}: status is not JSON: ${status}`];
  }
  const errors =
    parsed.error === undefined ? [] : Array.isArray(parsed.error) ? parsed.error : [parsed.error];
  const shapeOk = failures.length === 1 ? !Array.isArray(parsed.error) : Array.isArray(parsed.error);
  const matches =
    parsed.status === 'error' &&
    shapeOk &&
    errors.length === failures.length &&
    failures.every((f, i) => errorMatches(errors[i] as StatusError, f));
  return matches ? [] : [`ConfigMap ${name}: status ${status.slice(0, 400)}, want errors of ${want}`];
}
