// The admission webhook's judgement: would the desired policy set still compile with this ConfigMap
// as it is about to be (created, updated, deleted)? It compiles, with the real OPA compiler (the
// bundle pipeline's incremental RegoChecker, through its own OpaRunner helper process, with the Rego
// version the sinks use: the bundles', or the pushed OPA's, asked once), the set that compiles today with this ConfigMap's modules put in place.
//
// - Parse errors, and compile errors in its own modules: refused (the policy id, row:col and OPA's
//   message); errors that only say that something of another package is not loaded yet: admitted with
//   a warning, so that ConfigMaps that depend on each other can be created in any order.
// - Errors in other ConfigMaps that compile today (they depend on what this change removes or
//   changes): admitted with a warning naming them, or refused with `protectDependents`.
// - Data ConfigMaps: invalid JSON, not an object or too deep: refused with the annotation's message.
// - `mode: 'warn'` admits what would be refused, with the refusal as a warning.
//
// "Compiles today": the desired set minus the origins that fail in it (found by compiling it again
// after each change of the desired state, in the background, so that the checker stays warm and a
// request only compiles what its change can affect). Checks run one at a time.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { OpaRunner } from '../bundles/opa-runner.js';
import { RegoChecker } from '../bundles/rego-checker.js';
import type { CandidateModule } from '../bundles/validate.js';
import type { DesiredState, OriginState } from '../model/desired-state.js';
import { describeOrigin, originKey, type ConfigMapOrigin } from '../model/origin.js';
import type { LoadError } from '../model/outcome.js';
import { contentOf, fingerprint, type ConfigMapRules } from '../sources/configmap-content.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import {
  declaredPackage,
  describeRegoErrors,
  firstFew,
  isMissingDependency,
  regoErrorsOf,
  type RegoError,
} from './messages.js';
import type { AdmissionAnswer, AdmissionRequest } from './review.js';

/** A check that takes longer is given up (admitted with a warning): the API server waits 10 s at most. */
const CHECK_TIMEOUT_MS = 8000;
/** Problems of data ConfigMaps that the annotation would carry as errors: refused. */
const DATA_REFUSALS = new Set(['invalid_json', 'invalid_data', 'data_too_deep']);

export interface AdmissionValidatorOptions {
  state: DesiredState;
  rules: ConfigMapRules;
  namespaces: { all: boolean; names: readonly string[] };
  opaBin: string;
  /** The sinks' Rego version, or how to ask the pushed OPA for it (once, before the first check). */
  regoVersion: 0 | 1 | ((signal: AbortSignal) => Promise<0 | 1>);
  mode: 'deny' | 'warn';
  protectDependents: boolean;
  logger: Logger;
}

/** The answer, and which of the three it is (for the metrics and the log). */
export interface Judgement extends AdmissionAnswer {
  verdict: 'allowed' | 'warned' | 'denied';
}

/** A module in the checker's folder, and whose it is. */
interface Placed {
  id: string;
  origin: string;
  text: string;
}

/**
 * @example
 * const validator = new AdmissionValidator({ state, rules, namespaces, opaBin, regoVersion: 1, mode: 'deny', protectDependents: false, logger });
 * const judgement = await validator.judge(request); // { allowed, message, warnings, verdict }
 * await validator.close();
 */
export class AdmissionValidator {
  private checker: RegoChecker | undefined;
  private readonly runner = new OpaRunner();
  private workDir: Promise<string> | undefined;
  /** The checks, one after the other. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Origin keys that fail in the desired set as it was at `baselineOf` (left out of candidates). */
  private failing = new Set<string>();
  private version = 0;
  private baselineOf = -1;
  private readonly unsubscribe: () => void;
  private refreshTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: AdmissionValidatorOptions) {
    this.unsubscribe = options.state.subscribe((change) => {
      if (change.kind !== 'origin' && change.kind !== 'sources-synced') return;
      this.version += 1;
      // Soon after a change (bursts coalesce), so that a request finds the checker warm.
      this.refreshTimer ??= setTimeout(() => {
        this.refreshTimer = undefined;
        this.enqueue(() => this.refreshBaseline()).catch((err: unknown) =>
          this.options.logger.warn({ err: messageOf(err) }, 'could not compile the desired policy set'),
        );
      }, 200);
      this.refreshTimer.unref();
    });
  }

  /** Stops the helper process and removes the checker's folder. */
  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe();
    clearTimeout(this.refreshTimer);
    await this.queue.catch(() => undefined);
    await this.runner.stop();
    const dir = this.workDir;
    if (dir !== undefined) await rm(await dir, { recursive: true, force: true });
  }

  /** The answer to one AdmissionReview request. */
  async judge(request: AdmissionRequest): Promise<Judgement> {
    const { namespaces } = this.options;
    if (request.resource !== '/v1/configmaps') return allow([]);
    if (!namespaces.all && !namespaces.names.includes(request.namespace)) return allow([]);
    if (request.operation === 'CONNECT') return allow([]);
    if (!this.options.state.sourcesSynced()) {
      return allow([
        'opa-sync has not listed the policy ConfigMaps yet: this change was not checked (the status annotation will tell)',
      ]);
    }
    // Annotations only (opa-sync's own status patches among them): the policy set cannot change.
    if (
      request.operation === 'UPDATE' &&
      request.object !== undefined &&
      request.oldObject !== undefined &&
      fingerprint(request.object) === fingerprint(request.oldObject)
    ) {
      return allow([]);
    }
    const next = request.operation === 'DELETE' ? undefined : request.object;
    const content = next === undefined ? undefined : this.contentOf(next, request);
    const origin: ConfigMapOrigin = {
      kind: 'configmap',
      role: 'policy',
      namespace: request.namespace,
      name: request.name,
    };
    const verdict =
      content?.origin.role === 'data'
        ? this.judgeData(content)
        : await this.judgePolicy(origin, content, request);
    return this.options.mode === 'warn' && !verdict.allowed
      ? {
          allowed: true,
          warnings: [`would be refused: ${verdict.message ?? ''}`, ...verdict.warnings],
          verdict: 'warned',
        }
      : verdict;
  }

  /** What the ConfigMap is to opa-sync by its rules, named as the request names it. */
  private contentOf(cm: V1ConfigMap, request: AdmissionRequest): OriginState | undefined {
    const named: V1ConfigMap = {
      ...cm,
      metadata: { ...cm.metadata, namespace: request.namespace, name: request.name },
    };
    return contentOf(named, this.options.rules);
  }

  private judgeData(content: OriginState): Judgement {
    const what = describeOrigin(content.origin);
    const refused = content.problems.filter((p) => DATA_REFUSALS.has(p.code));
    const warnings = content.problems
      .filter((p) => !DATA_REFUSALS.has(p.code))
      .map((p) => `${what}: ${p.code}: ${p.message}`);
    if (refused.length === 0) return allow(warnings);
    // The message of the annotation's error for each key.
    const message = `${what}: ${firstFew(refused.map((p) => `${p.code}: ${p.message}`))}`;
    return { allowed: false, message, warnings, verdict: 'denied' };
  }

  private async judgePolicy(
    origin: ConfigMapOrigin,
    content: OriginState | undefined,
    request: AdmissionRequest,
  ): Promise<Judgement> {
    const key = originKey(origin);
    // Neither a policy now nor loaded as one: nothing of the policy set changes.
    if (content === undefined && this.options.state.get(key) === undefined) return allow([]);
    const what = describeOrigin(origin);
    const warnings = (content?.problems ?? []).map((p) => `${what}: ${p.code}: ${p.message}`);
    let result: { own: RegoError[]; others: Map<string, RegoError[]>; texts: Map<string, string> };
    let timer: NodeJS.Timeout | undefined;
    try {
      const checked = this.enqueue(async () => {
        if (this.baselineOf !== this.version) await this.refreshBaseline();
        return this.checkWith(key, content?.modules ?? []);
      });
      checked.catch(() => undefined); // a check given up below still ends in the queue
      // Waiting in the queue counts too: the API server gives up after its timeoutSeconds.
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS / 1000} s`)),
          CHECK_TIMEOUT_MS,
        );
      });
      result = await Promise.race([checked, deadline]);
    } catch (err) {
      this.options.logger.warn(
        { err: messageOf(err), configmap: `${request.namespace}/${request.name}` },
        'admission check failed',
      );
      return allow([
        ...warnings,
        `opa-sync could not compile the policy set, so this change was not checked: ${messageOf(err)}`,
      ]);
    } finally {
      clearTimeout(timer);
    }
    const ownPackages = (content?.modules ?? [])
      .map((m) => declaredPackage(m.text))
      .filter((p): p is string => p !== undefined);
    const textOf = (file: string): string | undefined => result.texts.get(file);
    const refusing = result.own.filter((e) => !isMissingDependency(e, ownPackages));
    if (refusing.length > 0) {
      return {
        allowed: false,
        message: `${what} does not compile: ${describeRegoErrors(refusing, textOf)}`,
        warnings,
        verdict: 'denied',
      };
    }
    if (result.own.length > 0) {
      warnings.push(
        `${what} needs what is not loaded yet (admitted: it loads once that arrives): ${describeRegoErrors(result.own, textOf)}`,
      );
    }
    if (result.others.size > 0) {
      const broken = [...result.others].map(
        ([other, errors]) => `${other} (${describeRegoErrors(errors.slice(0, 1), textOf)})`,
      );
      const line = `this ${request.operation === 'DELETE' ? 'delete' : 'change'} of ${what} breaks ${result.others.size === 1 ? 'a ConfigMap that compiles' : `${result.others.size} ConfigMaps that compile`} today: ${firstFew(broken)}`;
      if (this.options.protectDependents)
        return { allowed: false, message: line, warnings, verdict: 'denied' };
      warnings.push(line);
    }
    return allow(warnings);
  }

  /**
   * Compiles what compiles today with the origin's modules replaced by `modules`; OPA's errors in
   * those modules (`own`) and in other origins' (`others`, by their description).
   */
  private async checkWith(
    key: string,
    modules: readonly { id: string; text: string }[],
  ): Promise<{ own: RegoError[]; others: Map<string, RegoError[]>; texts: Map<string, string> }> {
    const placed = new Map<string, Placed>();
    for (const other of this.options.state.keys()) {
      if (other === key || this.failing.has(other)) continue;
      for (const m of this.options.state.get(other)?.modules ?? [])
        placed.set(modulePath(m.id), { id: m.id, origin: other, text: m.text });
    }
    for (const m of modules) placed.set(modulePath(m.id), { id: m.id, origin: key, text: m.text });
    const errors = await this.check(placed);
    const own: RegoError[] = [];
    const others = new Map<string, RegoError[]>();
    const idOf = (file: string): string => placed.get(`/${file}`)?.id ?? file;
    for (const [p, loadErrors] of errors) {
      const where = placed.get(p);
      const list = loadErrors.flatMap((e: LoadError) => regoErrorsOf(e, idOf));
      if (where === undefined || where.origin === key) own.push(...list);
      else {
        const name = this.describe(where.origin);
        others.set(name, [...(others.get(name) ?? []), ...list]);
      }
    }
    const texts = new Map([...placed.values()].map((m) => [m.id, m.text]));
    return { own, others, texts };
  }

  /** Finds the origins that fail in the desired set, so that candidates are built on what compiles. */
  private async refreshBaseline(): Promise<void> {
    const version = this.version;
    const failing = new Set<string>();
    const keys = this.options.state.keys();
    for (let round = 0; round <= keys.length; round += 1) {
      const placed = new Map<string, Placed>();
      for (const key of keys) {
        if (failing.has(key)) continue;
        for (const m of this.options.state.get(key)?.modules ?? [])
          placed.set(modulePath(m.id), { id: m.id, origin: key, text: m.text });
      }
      const errors = await this.check(placed);
      if (errors.size === 0) break;
      for (const p of errors.keys()) {
        const where = placed.get(p);
        if (where !== undefined) failing.add(where.origin);
      }
    }
    this.failing = failing;
    this.baselineOf = version;
  }

  /** The checker, made once the Rego version is known (asked of the pushed OPA if need be). */
  private async checkerOf(): Promise<RegoChecker> {
    if (this.checker !== undefined) return this.checker;
    const { regoVersion } = this.options;
    const version =
      typeof regoVersion === 'number'
        ? regoVersion
        : await regoVersion(AbortSignal.timeout(CHECK_TIMEOUT_MS));
    this.options.logger.info({ regoVersion: version }, 'admission webhook compiles Rego with this version');
    this.checker = new RegoChecker({
      opaBin: this.options.opaBin,
      v0: version === 0,
      timeoutMs: CHECK_TIMEOUT_MS,
    });
    return this.checker;
  }

  private async check(placed: Map<string, Placed>): Promise<Map<string, LoadError[]>> {
    const candidate: CandidateModule[] = [...placed].map(([p, m]) => ({ path: p, text: m.text }));
    this.workDir ??= mkdtemp(path.join(tmpdir(), 'opa-sync-admission-'));
    const dir = path.join(await this.workDir, 'set');
    const checker = await this.checkerOf();
    const result = await checker.check(candidate, dir, {
      exec: this.runner.exec,
      signal: AbortSignal.timeout(CHECK_TIMEOUT_MS + 1000),
    });
    return result.errors;
  }

  private describe(key: string): string {
    const state = this.options.state.get(key);
    return state === undefined ? key : describeOrigin(state.origin);
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the admission webhook is stopping'));
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

function allow(warnings: string[]): Judgement {
  return { allowed: true, warnings, verdict: warnings.length > 0 ? 'warned' : 'allowed' };
}

/** Where a module goes in the checker's folder: its id, as a `.rego` file (opa check reads only those). */
function modulePath(id: string): string {
  const safe = id
    .split('/')
    // Kubernetes' key rules keep '', '.' and '..' out of ids; never let one leave the folder anyway.
    .map((s) => (s === '' ? '%' : /^\.+$/.test(s) ? s.replace(/\./g, '%2E') : s))
    .join('/');
  return `/${safe}${safe.endsWith('.rego') ? '' : '.rego'}`;
}
