// The fleet view: what each OPA that pulls our bundles says about itself in its status reports
// (OPA's status API, POST /status[/<partition>]): its id and labels, and per bundle the revision it
// runs and its last error. Bundle GETs cannot identify an OPA; these reports can. Reports are hostile
// input: only known fields are kept, strings and lists are cut to a size, and instances that stop
// reporting (an OPA's id changes on every restart) are forgotten after a while.
import type { Metrics } from '../http/metrics.js';
import { InvalidInputError } from '../util/errors.js';

export interface FleetBundleStatus {
  name: string;
  activeRevision: string | undefined;
  lastSuccessfulActivation: string | undefined;
  /** The first few errors, with only OPA's fields (`code`, `message`, `location`). */
  errors: FleetError[] | undefined;
  code: string | undefined;
  message: string | undefined;
  /** The HTTP status of the OPA's last failed download (e.g. 401, 404), when it reported one. */
  httpCode: number | undefined;
}

export interface FleetInstance {
  id: string;
  labels: Record<string, string>;
  partition: string | undefined;
  /** When the last report arrived (ISO 8601). */
  lastSeen: string;
  bundles: FleetBundleStatus[];
}

export interface FleetOptions {
  /** Instances silent for longer are dropped from the view. Default 10 minutes (OPA reports on every poll). */
  staleAfterMs?: number;
  /** At most this many instances are kept; the longest silent go first. Default 10 000. */
  maxInstances?: number;
  /** At most this many bytes (an estimate of what is kept) for the whole view; the longest silent go first. Default 64 MiB. */
  maxBytes?: number;
}

const MAX_STRING = 1024;
const MAX_LABELS = 64;
const MAX_BUNDLES = 64;
const MAX_ERRORS = 5;
/** What one instance may keep, estimated in bytes of its strings: the rest of a large report is dropped. */
const MAX_INSTANCE_BYTES = 16 * 1024;
/** Reports nested deeper than this are refused: OPA's own reports are a few levels deep. */
export const MAX_REPORT_DEPTH = 32;
// OPA reports the zero time for "never".
const ZERO_TIME = /^0001-01-01T00:00:00(\.0+)?Z$/;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function cut(value: string): string {
  return value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value;
}

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? cut(value) : undefined;
}

/**
 * How deep `value` nests, counted without recursion (so a hostile report cannot overflow the stack),
 * stopping as soon as it is past `limit`.
 */
export function nestingDepth(value: unknown, limit: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number];
    if (typeof node !== 'object' || node === null) continue;
    deepest = Math.max(deepest, depth);
    if (deepest > limit) return deepest;
    for (const child of Array.isArray(node) ? node : Object.values(node)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/** One error of a bundle, as OPA reports it (`code`, `message`, `location`); anything else is dropped. */
export interface FleetError {
  code?: string;
  message?: string;
  location?: { file?: string; row?: number; col?: number };
}

function fleetError(raw: unknown): FleetError | undefined {
  if (!isObject(raw)) return undefined;
  const error: FleetError = {};
  const code = optionalString(raw.code);
  const message = optionalString(raw.message);
  if (code !== undefined) error.code = code;
  if (message !== undefined) error.message = message;
  if (isObject(raw.location)) {
    const { file, row, col } = raw.location;
    const location: NonNullable<FleetError['location']> = {};
    const f = optionalString(file);
    if (f !== undefined) location.file = f;
    if (typeof row === 'number' && Number.isInteger(row)) location.row = row;
    if (typeof col === 'number' && Number.isInteger(col)) location.col = col;
    error.location = location;
  }
  return error.code === undefined && error.message === undefined ? undefined : error;
}

/** A rough size of what is kept: the characters of its strings (numbers count for 8). */
function sizeOf(value: unknown): number {
  if (typeof value === 'string') return value.length;
  if (typeof value === 'number') return 8;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + sizeOf(v), 0);
  if (isObject(value)) return Object.entries(value).reduce((n, [k, v]) => n + k.length + sizeOf(v), 0);
  return 1;
}

function bundleStatus(name: string, raw: Json): FleetBundleStatus {
  const activation = optionalString(raw.last_successful_activation);
  const errors = Array.isArray(raw.errors)
    ? raw.errors
        .slice(0, MAX_ERRORS)
        .map(fleetError)
        .filter((e): e is FleetError => e !== undefined)
    : [];
  return {
    name: cut(name),
    activeRevision: optionalString(raw.active_revision),
    lastSuccessfulActivation: activation === undefined || ZERO_TIME.test(activation) ? undefined : activation,
    errors: errors.length > 0 ? errors : undefined,
    code: optionalString(raw.code),
    message: optionalString(raw.message),
    httpCode:
      typeof raw.http_code === 'number' && Number.isInteger(raw.http_code) ? raw.http_code : undefined,
  };
}

/**
 * The instance a status report describes, with only what the fleet view shows (strings cut, lists
 * capped, at most MAX_INSTANCE_BYTES kept); throws InvalidInputError when the report cannot be used.
 */
export function parseStatusReport(
  report: unknown,
  partition: string | undefined,
  lastSeen: string,
): FleetInstance {
  if (!isObject(report))
    throw new InvalidInputError('invalid_status_report', 'a status report must be a JSON object');
  if (nestingDepth(report, MAX_REPORT_DEPTH) > MAX_REPORT_DEPTH) {
    throw new InvalidInputError(
      'invalid_status_report',
      `the status report is nested deeper than ${MAX_REPORT_DEPTH} levels; OPA's reports are not`,
    );
  }
  const labels = report.labels;
  if (!isObject(labels)) {
    throw new InvalidInputError('invalid_status_report', 'the status report has no "labels" object');
  }
  const id = labels.id;
  if (typeof id !== 'string' || id === '') {
    throw new InvalidInputError('invalid_status_report', 'the status report has no "labels.id" string');
  }
  if (id.length > MAX_STRING) {
    throw new InvalidInputError(
      'invalid_status_report',
      `"labels.id" is longer than ${MAX_STRING} characters`,
    );
  }
  let budget = MAX_INSTANCE_BYTES - id.length;
  const keptLabels: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels).slice(0, MAX_LABELS)) {
    if (typeof value !== 'string' || key === 'id') continue;
    const k = cut(key);
    const v = cut(value);
    if (k.length + v.length > budget) break;
    budget -= k.length + v.length;
    keptLabels[k] = v;
  }
  keptLabels.id = id;

  const candidates: FleetBundleStatus[] = [];
  if (report.bundles !== undefined && report.bundles !== null) {
    if (!isObject(report.bundles)) {
      throw new InvalidInputError(
        'invalid_status_report',
        '"bundles" of the status report must be an object',
      );
    }
    for (const [name, raw] of Object.entries(report.bundles).slice(0, MAX_BUNDLES)) {
      if (isObject(raw)) candidates.push(bundleStatus(name, raw));
    }
  }
  // Configurations with the legacy single `bundle` section report it apart from `bundles`.
  if (isObject(report.bundle) && typeof report.bundle.name === 'string' && report.bundle.name !== '') {
    const legacy = report.bundle.name;
    if (!candidates.some((b) => b.name === legacy)) candidates.push(bundleStatus(legacy, report.bundle));
  }
  candidates.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const bundles: FleetBundleStatus[] = [];
  for (const bundle of candidates) {
    const size = sizeOf(bundle);
    if (size > budget) {
      // Keep the bundle and its revision (what the fleet view is for); drop its errors if they do not fit.
      const lean = { ...bundle, errors: undefined };
      const leanSize = sizeOf(lean);
      if (leanSize > budget) break;
      budget -= leanSize;
      bundles.push(lean);
      continue;
    }
    budget -= size;
    bundles.push(bundle);
  }
  return { id, labels: keptLabels, partition, lastSeen, bundles };
}

interface Kept {
  instance: FleetInstance;
  seenMs: number;
  bytes: number;
}

/**
 * The instances heard from, in order of their last report (oldest first), within a count and a memory
 * budget, with the gauges kept up to date per report: a report costs what it holds, never a walk of
 * the fleet.
 */
export class Fleet {
  private readonly instances = new Map<string, Kept>();
  private readonly staleAfterMs: number;
  private readonly maxInstances: number;
  private readonly maxBytes: number;
  private bytes = 0;
  /** Per published bundle: the revision the counts are for, and how many instances run it. */
  private readonly current = new Map<string, { revision: string | undefined; count: number }>();

  constructor(
    private readonly metrics: Metrics,
    private readonly currentRevision: (bundle: string) => string | undefined,
    private readonly clock: () => Date = () => new Date(),
    options: FleetOptions = {},
  ) {
    this.staleAfterMs = options.staleAfterMs ?? 10 * 60_000;
    this.maxInstances = options.maxInstances ?? 10_000;
    this.maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
  }

  /** Records one status report; throws InvalidInputError (and keeps nothing) when it cannot be used. */
  record(report: unknown, partition: string | undefined): void {
    const now = this.clock();
    const instance = parseStatusReport(report, partition, now.toISOString());
    this.prune();
    const previous = this.instances.get(instance.id);
    if (previous !== undefined) this.remove(instance.id, previous);
    // Inserted last: the Map stays in order of last report, oldest first, and eviction takes from the front.
    const kept: Kept = { instance, seenMs: now.getTime(), bytes: sizeOf(instance) };
    this.instances.set(instance.id, kept);
    this.bytes += kept.bytes;
    this.count(instance, 1);
    while (this.instances.size > this.maxInstances || this.bytes > this.maxBytes) {
      const oldest = this.instances.entries().next();
      if (oldest.done === true) break;
      this.remove(oldest.value[0], oldest.value[1]);
      this.metrics.fleetEvictions.inc();
    }
    this.setGauges();
  }

  /** The instances heard from recently, sorted by id. */
  list(): FleetInstance[] {
    this.prune();
    this.setGauges();
    return [...this.instances.values()]
      .map((entry) => entry.instance)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Estimated bytes the view holds, for tests and the memory budget. */
  get size(): { instances: number; bytes: number } {
    return { instances: this.instances.size, bytes: this.bytes };
  }

  /**
   * Recounts the "on the current revision" gauge after a bundle was published (the one time the whole
   * fleet is walked: a publish is rare, reports are not).
   */
  updateGauges(): void {
    this.prune();
    this.current.clear();
    for (const { instance } of this.instances.values()) this.count(instance, 1);
    this.setGauges();
  }

  private setGauges(): void {
    this.metrics.fleetInstances.set(this.instances.size);
    // Reset first, so a bundle no instance reports any more leaves no stale series behind.
    this.metrics.fleetInstancesCurrent.reset();
    for (const [bundle, { revision, count }] of this.current) {
      if (revision !== undefined) this.metrics.fleetInstancesCurrent.set({ bundle }, count);
    }
  }

  /** Adds (+1) or takes away (-1) an instance's contribution to the per-bundle counts. */
  private count(instance: FleetInstance, sign: 1 | -1): void {
    for (const bundle of instance.bundles) {
      // Only bundles we publish are counted: names in reports are the reporter's to choose, and a
      // series per invented name would grow the metrics without bound.
      let entry = this.current.get(bundle.name);
      // Taking away what was never counted: the bundle was not published when the instance came.
      if (entry === undefined && sign < 0) continue;
      if (entry === undefined) {
        const revision = this.currentRevision(bundle.name);
        if (revision === undefined) continue;
        entry = { revision, count: 0 };
        this.current.set(bundle.name, entry);
      }
      if (bundle.activeRevision === entry.revision) entry.count += sign;
    }
  }

  private remove(id: string, kept: Kept): void {
    this.instances.delete(id);
    this.bytes -= kept.bytes;
    this.count(kept.instance, -1);
  }

  private prune(): void {
    const cutoff = this.clock().getTime() - this.staleAfterMs;
    for (const [id, entry] of this.instances) {
      if (entry.seenMs >= cutoff) break; // ordered by last report: the rest are newer
      this.remove(id, entry);
    }
  }
}
