// The bundle sink: turns the desired state into OPA bundles (one per bundle name), validates each with
// the real OPA compiler before publishing, and reports each origin's outcome. A ConfigMap that breaks
// compilation is left out and its last good version (if any) stays in the bundle, so a published
// bundle never holds code that does not compile. Changes that arrive during a rebuild are built together
// in the next one; the publisher waits for no quiet time of its own (the folder source has one).
//
// Rebuilds are incremental: per bundle, a RegoChecker (rego-checker.ts) compiles only what an edit can
// affect, and a BundleBuilder (build.ts) encodes and compresses only what changed, both giving exactly
// what a from-scratch check and build give. Their work folder is made by run() and removed when it ends;
// every opa they start is a short-lived process, started from a small helper process (opa-runner.ts)
// that run() owns and stops, and killed if run() is stopped.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Metrics } from '../http/metrics.js';
import type { DesiredState, OriginState } from '../model/desired-state.js';
import { ownError, type LoadError, type Outcome } from '../model/outcome.js';
import { describeOrigin, originKey } from '../model/origin.js';
import type { Part } from '../lifecycle/part.js';
import { Wake } from '../lifecycle/wake.js';
import { sleep } from '../util/backoff.js';
import { OpaSyncError, isSystemError, messageOf } from '../util/errors.js';
import { LastValues } from '../util/unchanged.js';
import type { Logger } from '../util/logger.js';
import { bundleEntryProblem, bundleNameProblem, dataPathProblem } from '../util/safe-names.js';
import { BundleBuilder, deriveRoots, type BundleDocument, type BundleModule } from './build.js';
import { OpaRunner } from './opa-runner.js';
import { overlapRefusals } from './overlaps.js';
import { opaMajorVersion } from './opa-rego-flags.js';
import { RegoChecker } from './rego-checker.js';
import type { BundleRegistry } from './registry.js';
import type { SigningOptions } from './signing-key.js';
import type { CheckResult, PackagePath } from './validate.js';
import { writeBundleFile } from './bundles-dir.js';

export interface PublisherOptions {
  state: DesiredState;
  registry: BundleRegistry;
  logger: Logger;
  opaBin: string;
  defaultBundle: string;
  regoVersion?: 0 | 1 | undefined;
  signing?: SigningOptions | undefined;
  /** Also write `<dir>/<name>.tar.gz` (atomic rename), for static hosting. */
  dir?: string | undefined;
  onOutcome: (outcome: Outcome) => void;
  metrics?: Metrics | undefined;
  /**
   * Waits this long after a change before building (default 0: the sources' own quiet times are the
   * one debounce; changes that come during a rebuild are built together in the next one anyway).
   */
  debounceMs?: number;
  /** Called after a bundle was published (e.g. to refresh the fleet's "on the current revision" gauge). */
  onPublished?: () => void;
}

/** What the web page shows of one bundle (read-only, made on request). */
export interface BundleSnapshot {
  name: string;
  /** Undefined until the bundle was first published. */
  revision: string | undefined;
  bytes: number | undefined;
  roots: readonly string[];
  signed: boolean;
  /** The last change of an origin that was refused (left out of the bundle), with its errors. */
  lastRefused: { origin: string; errors: readonly LoadError[]; at: string } | undefined;
}

/** What the web page shows of the bundle builds. */
export interface BundlesSnapshot {
  /** When the last build (of every bundle) ended (ISO 8601), and how long it took. */
  lastBuildAt: string | undefined;
  lastBuildMs: number | undefined;
  bundles: BundleSnapshot[];
}

/** One origin's contribution to a bundle, with what it was refused for. */
interface Entry {
  key: string;
  state: OriginState;
  bundle: string;
  modules: BundleModule[];
  documents: BundleDocument[];
  errors: LoadError[];
}

/** What an origin's version gives (an Entry without its build's own errors): made once per version. */
const entryParts = new WeakMap<OriginState, Readonly<Entry>>();

/** The entry of an origin's version: a fresh object (with its own errors) on every rebuild. */
function entryOf(state: OriginState, defaultBundle: string): Entry {
  let parts = entryParts.get(state);
  if (parts === undefined || parts.bundle !== (state.bundle ?? defaultBundle)) {
    parts = makeEntry(state, defaultBundle);
    entryParts.set(state, parts);
  }
  return { ...parts, errors: [...parts.errors] };
}

function makeEntry(state: OriginState, defaultBundle: string): Entry {
  const errors: LoadError[] = state.problems.map((p) => ({ code: p.code, message: p.message }));
  const bundle = state.bundle ?? defaultBundle;
  const nameProblem = bundleNameProblem(bundle);
  const entry: Entry = { key: originKey(state.origin), state, bundle, modules: [], documents: [], errors };
  if (nameProblem !== undefined) {
    errors.push(ownError('invalid_bundle_name', nameProblem));
    return entry;
  }
  for (const m of state.modules) {
    const modulePath = `/${m.id}`;
    const problem = modulePath.endsWith('.rego')
      ? bundleEntryProblem(modulePath)
      : `${m.id}: a bundle holds policies as .rego files only (OPA ignores other files), so rename the key to end in .rego`;
    if (problem === undefined) entry.modules.push({ path: modulePath, text: m.text });
    else errors.push(ownError('invalid_bundle_path', problem));
  }
  for (const d of state.documents) {
    const problem = dataPathProblem(d.path);
    if (problem === undefined) entry.documents.push({ path: d.path, value: d.value });
    else errors.push(ownError('invalid_bundle_path', problem));
  }
  return entry;
}

/** A root's segments ('' is the whole tree, []): roots hold no '/' or '' in a segment (deriveRoots). */
function rootPath(root: string): string[] {
  return root === '' ? [] : root.split('/');
}

/** What a bundle's rebuilds keep: the incremental checker and builder, and the checker's folder. */
interface BundleWork {
  checker: RegoChecker;
  builder: BundleBuilder;
  folder: string;
}

export class BundlePublisher implements Part {
  readonly name = 'bundles';
  /**
   * Every pass builds from the whole desired state (the caches only save work): a restart loses
   * nothing but the pass it was in.
   */
  readonly onFailure = 'restart';
  /** The last version of each origin that went into a published bundle. */
  private readonly lastGood = new Map<string, Entry>();
  /** What was last reported for each origin, and for which version of it. */
  private readonly reported = new LastValues<string, { state: OriginState; rendered: string }>(
    (a, b) => a.state === b.state && a.rendered === b.rendered,
  );
  private readonly known = new Set<string>();
  private dirty = true;
  private readonly wake = new Wake();
  private readonly work = new Map<string, BundleWork>();
  /** The folder of this run's checkers, removed when run() ends. */
  private workDir: string | undefined;
  private signal: AbortSignal | undefined;
  /** Runs this run's opa commands from a small helper process (see opa-runner.ts). */
  private runner: OpaRunner | undefined;

  /** Per bundle: the roots of its last published version. */
  private readonly roots = new Map<string, readonly string[]>();
  /** Per bundle: the last refused change of one of its origins. */
  private readonly refused = new Map<string, NonNullable<BundleSnapshot['lastRefused']>>();
  private lastBuild: { at: string; ms: number } | undefined;

  constructor(private readonly options: PublisherOptions) {
    this.known.add(options.defaultBundle);
  }

  /** What the web page shows: each bundle's revision, size, roots and last refusal, the last build. */
  snapshot(): BundlesSnapshot {
    const { registry } = this.options;
    const names = [...new Set([...this.known, ...registry.names()])].sort();
    return {
      lastBuildAt: this.lastBuild?.at,
      lastBuildMs: this.lastBuild?.ms,
      bundles: names.map((name) => {
        const published = registry.get(name);
        return {
          name,
          revision: published?.revision,
          bytes: published?.bytes.length,
          roots: this.roots.get(name) ?? [],
          signed: this.options.signing !== undefined,
          lastRefused: this.refused.get(name),
        };
      }),
    };
  }

  /** True once every bundle has been built for the first time (the server answers 503 until then). */
  ready(): boolean {
    return this.options.registry.isBuilt();
  }

  async run(signal: AbortSignal): Promise<void> {
    this.dirty = true;
    const unsubscribe = this.options.state.subscribe((change) => {
      // Replicated collections are not in these bundles; origins are, and the first build waits for
      // every source to have listed (OPAs never get a partial first bundle).
      if (change.kind === 'origin') this.dirty = true;
      if (change.kind === 'origin' || change.kind === 'sources-synced') this.wake.wake();
    });
    this.signal = signal;
    this.runner = new OpaRunner();
    void this.warnOfOpa0RegoV1();
    try {
      while (!signal.aborted) {
        if (!this.dirty || !this.options.state.sourcesSynced()) {
          await this.wake.wait(signal);
          continue;
        }
        const debounceMs = this.options.debounceMs ?? 0;
        if (debounceMs > 0) await sleep(debounceMs, signal).catch(() => undefined);
        if (signal.aborted) break;
        this.dirty = false;
        try {
          await this.rebuild();
        } catch (err) {
          if (signal.aborted) break; // opa was stopped with the run
          // Anything else is a bug: the supervisor logs it, counts it and runs this part again.
          if (!(err instanceof OpaSyncError) && !isSystemError(err)) throw err;
          // The compiler could not run, or a bundle could not be written: keep serving the last bundles.
          this.options.logger.error(
            { err: messageOf(err) },
            'bundle build failed; serving the previous bundles',
          );
          this.dirty = true;
          await sleep(5000, signal).catch(() => undefined);
        }
      }
    } finally {
      unsubscribe();
      await this.runner.stop();
      this.runner = undefined;
      this.signal = undefined;
      const dir = this.workDir;
      this.workDir = undefined;
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * OPA 0.x activates a bundle whose manifest says `rego_version: 1` once, then parses the next revision
   * of it as Rego v0 and refuses it (seen with OPA 0.70.0): said at start when --opa-bin is a 0.x.
   */
  private async warnOfOpa0RegoV1(): Promise<void> {
    if (this.options.regoVersion !== 1) return;
    const major = await opaMajorVersion(this.options.opaBin);
    if (major !== 0) return;
    this.options.logger.warn(
      { opaBin: this.options.opaBin, regoVersion: 1 },
      'the opa binary is OPA 0.x, which parses a bundle update as Rego v0 whatever its manifest says: for OPA 0.x, add `import rego.v1` to each module (and leave --bundle-rego-version unset) or run OPA with --v1-compatible',
    );
  }

  /** The checker and builder of a bundle, and the name of its checker's folder. */
  private workOf(bundle: string): BundleWork {
    let work = this.work.get(bundle);
    if (work === undefined) {
      work = {
        checker: new RegoChecker({
          opaBin: this.options.opaBin,
          // Not set: the binary's own default, as an OPA of its version without flags parses the bundle.
          v0: this.options.regoVersion === undefined ? undefined : this.options.regoVersion === 0,
        }),
        builder: new BundleBuilder(),
        // Bundle names may hold '/': the folder is named by number.
        folder: `b${this.work.size}`,
      };
      this.work.set(bundle, work);
    }
    return work;
  }

  /** Builds every bundle from the current desired state; publishes the ones that changed. */
  async rebuild(): Promise<void> {
    const started = performance.now();
    const current = this.options.state
      .keys()
      .map((k) => this.options.state.get(k))
      .filter((s): s is OriginState => s !== undefined)
      .map((s) => entryOf(s, this.options.defaultBundle));
    for (const e of current) this.known.add(e.bundle);

    const byBundle = new Map<string, Entry[]>([...this.known].map((b) => [b, []]));
    for (const e of current) byBundle.get(e.bundle)?.push(e);

    const included = new Map<string, Map<string, Entry>>();
    const packages = new Map<string, PackagePath>();
    const failures = new Map<string, LoadError[]>();
    for (const [bundle, entries] of byBundle) {
      included.set(bundle, await this.validate(bundle, entries, packages, failures));
    }
    if (this.refuseOverlaps(included, packages)) {
      // Refusing an origin may leave a module that needs it uncompiled: validate those bundles again.
      for (const [bundle, entries] of included) {
        included.set(bundle, await this.validate(bundle, [...entries.values()], packages, failures));
      }
    }
    for (const e of current) e.errors.push(...(failures.get(e.key) ?? []));
    const checked = performance.now();

    for (const [bundle, entries] of included) await this.publish(bundle, [...entries.values()], packages);
    this.options.registry.markBuilt();
    const published = performance.now();

    for (const e of current) {
      const chosen = included.get(e.bundle)?.get(e.key);
      if (chosen === e) this.lastGood.set(e.key, e);
      this.report(e);
    }
    for (const key of [...this.lastGood.keys()])
      if (this.options.state.get(key) === undefined) this.lastGood.delete(key);
    for (const key of [...this.reported.keys()]) {
      if (this.options.state.get(key) === undefined) this.reported.forget(key);
    }
    const ms = (from: number, to: number): number => Math.round((to - from) * 10) / 10;
    const done = performance.now();
    this.lastBuild = { at: new Date().toISOString(), ms: ms(started, done) };
    this.options.logger.debug(
      {
        tookMs: ms(started, done),
        checkMs: ms(started, checked),
        publishMs: ms(checked, published),
        origins: current.length,
      },
      'bundles rebuilt',
    );
  }

  /**
   * Compiles the bundle's candidate modules together. An origin whose modules fail is replaced by its
   * last good version, or left out, until the rest compiles. Returns the origins that go in.
   */
  private async validate(
    bundle: string,
    entries: Entry[],
    packages: Map<string, PackagePath>,
    failures: Map<string, LoadError[]>,
  ): Promise<Map<string, Entry>> {
    const chosen = new Map(entries.map((e) => [e.key, e]));
    for (let round = 0; round <= entries.length + 1; round += 1) {
      const modules = [...chosen.values()].flatMap((e) => e.modules);
      const result = await this.check(bundle, modules);
      if (result.errors.size === 0) {
        for (const [p, pkg] of result.packages) packages.set(p, pkg);
        return chosen;
      }
      for (const [key, e] of chosen) {
        const failed = e.modules.flatMap((m) => result.errors.get(m.path) ?? []);
        if (failed.length === 0) continue;
        // Only the current version's errors are the origin's to report; a last good version that fails
        // (because of something else that changed) is just left out.
        if (e.state === this.options.state.get(key)) failures.set(key, failed);
        const good = this.lastGood.get(key);
        if (good !== undefined && good !== e && good.bundle === bundle) chosen.set(key, good);
        else chosen.delete(key);
      }
    }
    this.options.logger.error({ bundle }, 'bundle never compiled; publishing it without policies');
    return new Map([...chosen].filter(([, e]) => e.modules.length === 0));
  }

  /** `checkModules`' answer for a bundle's candidate modules, from its incremental checker. */
  private async check(bundle: string, modules: BundleModule[]): Promise<CheckResult> {
    if (modules.length === 0) return { errors: new Map(), packages: new Map() };
    const work = this.workOf(bundle);
    this.workDir ??= await mkdtemp(path.join(tmpdir(), 'opa-sync-bundles-'));
    const dir = path.join(this.workDir, work.folder);
    const result = await work.checker.check(modules, dir, { signal: this.signal, exec: this.runner?.exec });
    this.options.logger.debug({ bundle, ...work.checker.lastCheck }, 'modules checked');
    return result;
  }

  /** Roots of different bundles must not overlap: the origin that comes later (by key) is refused. */
  private refuseOverlaps(
    included: Map<string, Map<string, Entry>>,
    packages: Map<string, PackagePath>,
  ): boolean {
    const owners = [...included].flatMap(([bundle, entries]) =>
      [...entries.values()].map((e) => ({ bundle, e, roots: this.rootsOf([e], packages) })),
    );
    owners.sort((a, b) => (a.e.key < b.e.key ? -1 : a.e.key > b.e.key ? 1 : 0));
    const refusals = overlapRefusals(owners);
    for (const [index, clashIndex] of refusals) {
      const owner = owners[index];
      const clash = owners[clashIndex];
      if (owner === undefined || clash === undefined) continue;
      included.get(owner.bundle)?.delete(owner.e.key);
      const message =
        `roots [${owner.roots.join(', ')}] of ${describeOrigin(owner.e.state.origin)} in bundle "${owner.bundle}" overlap ` +
        `roots [${clash.roots.join(', ')}] of ${describeOrigin(clash.e.state.origin)} in bundle "${clash.bundle}": OPA cannot activate both`;
      const current = this.options.state.get(owner.e.key);
      if (current === owner.e.state) owner.e.errors.push(ownError('bundle_roots_overlap', message));
    }
    return refusals.size > 0;
  }

  /**
   * The roots of the entries: those of each entry (made once per origin version: a module's package
   * is a function of its text) brought together, which gives the roots of all their packages and data.
   */
  private rootsOf(entries: Entry[], packages: Map<string, PackagePath>): string[] {
    if (entries.length === 1 && entries[0] !== undefined) return this.entryRoots(entries[0], packages);
    const each = entries.flatMap((e) => this.entryRoots(e, packages).map(rootPath));
    return deriveRoots(each, []);
  }

  private readonly rootsByState = new WeakMap<OriginState, string[]>();

  private entryRoots(e: Entry, packages: Map<string, PackagePath>): string[] {
    const cached = this.rootsByState.get(e.state);
    if (cached !== undefined) return cached;
    const pkgs = e.modules.map((m) => packages.get(m.path));
    const known = pkgs.filter((p): p is PackagePath => p !== undefined);
    const roots = deriveRoots(
      known,
      e.documents.map((d) => d.path),
    );
    // Only once every module's package is known (always, for an entry that compiled).
    if (known.length === pkgs.length) this.rootsByState.set(e.state, roots);
    return roots;
  }

  private async publish(bundle: string, entries: Entry[], packages: Map<string, PackagePath>): Promise<void> {
    const { builder } = this.workOf(bundle);
    const roots = this.rootsOf(entries, packages);
    const built = await builder.build({
      modules: entries.flatMap((e) => e.modules),
      documents: entries.flatMap((e) => e.documents),
      roots,
      regoVersion: this.options.regoVersion,
      signing: this.options.signing,
    });
    this.options.logger.debug({ bundle, ...builder.lastPack }, 'bundle built');
    if (this.options.registry.get(bundle)?.etag === built.etag) return;
    this.roots.set(bundle, roots);
    this.options.registry.publish({
      name: bundle,
      bytes: built.bytes,
      etag: built.etag,
      revision: built.revision,
    });
    this.options.logger.info(
      { bundle, revision: built.revision, bytes: built.bytes.length, files: built.files.length },
      'bundle published',
    );
    this.options.onPublished?.();
    if (this.options.dir !== undefined) await writeBundleFile(this.options.dir, bundle, built.bytes);
  }

  /**
   * Reports an origin's outcome after each change of the origin itself (its status may have been wiped
   * with it), and whenever the outcome changed because of something else.
   */
  private report(e: Entry): void {
    if (!this.reported.changed(e.key, { state: e.state, rendered: JSON.stringify(e.errors) })) return;
    if (e.errors.length > 0) {
      const at = new Date().toISOString();
      this.refused.set(e.bundle, { origin: describeOrigin(e.state.origin), errors: e.errors, at });
    }
    this.options.onOutcome({ origin: e.state.origin, errors: e.errors });
  }
}
