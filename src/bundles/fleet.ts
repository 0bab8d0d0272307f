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
  errors: unknown[] | undefined;
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
}

const MAX_STRING = 1024;
const MAX_LABELS = 64;
const MAX_BUNDLES = 64;
const MAX_ERRORS = 20;
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

function bundleStatus(name: string, raw: Json): FleetBundleStatus {
  const activation = optionalString(raw.last_successful_activation);
  return {
    name: cut(name),
    activeRevision: optionalString(raw.active_revision),
    lastSuccessfulActivation: activation === undefined || ZERO_TIME.test(activation) ? undefined : activation,
    errors: Array.isArray(raw.errors) && raw.errors.length > 0 ? raw.errors.slice(0, MAX_ERRORS) : undefined,
    code: optionalString(raw.code),
    message: optionalString(raw.message),
    httpCode:
      typeof raw.http_code === 'number' && Number.isInteger(raw.http_code) ? raw.http_code : undefined,
  };
}

/** The instance a status report describes; throws InvalidInputError when the report cannot be used. */
export function parseStatusReport(
  report: unknown,
  partition: string | undefined,
  lastSeen: string,
): FleetInstance {
  if (!isObject(report))
    throw new InvalidInputError('invalid_status_report', 'a status report must be a JSON object');
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
  const keptLabels: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels).slice(0, MAX_LABELS)) {
    if (typeof value === 'string') keptLabels[cut(key)] = cut(value);
  }
  keptLabels.id = id;

  const bundles: FleetBundleStatus[] = [];
  if (report.bundles !== undefined && report.bundles !== null) {
    if (!isObject(report.bundles)) {
      throw new InvalidInputError(
        'invalid_status_report',
        '"bundles" of the status report must be an object',
      );
    }
    for (const [name, raw] of Object.entries(report.bundles).slice(0, MAX_BUNDLES)) {
      if (isObject(raw)) bundles.push(bundleStatus(name, raw));
    }
  }
  // Configurations with the legacy single `bundle` section report it apart from `bundles`.
  if (isObject(report.bundle) && typeof report.bundle.name === 'string' && report.bundle.name !== '') {
    const legacy = report.bundle.name;
    if (!bundles.some((b) => b.name === legacy)) bundles.push(bundleStatus(legacy, report.bundle));
  }
  bundles.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { id, labels: keptLabels, partition, lastSeen, bundles };
}

export class Fleet {
  private readonly instances = new Map<string, { instance: FleetInstance; seenMs: number }>();
  private readonly staleAfterMs: number;
  private readonly maxInstances: number;

  constructor(
    private readonly metrics: Metrics,
    private readonly currentRevision: (bundle: string) => string | undefined,
    private readonly clock: () => Date = () => new Date(),
    options: FleetOptions = {},
  ) {
    this.staleAfterMs = options.staleAfterMs ?? 10 * 60_000;
    this.maxInstances = options.maxInstances ?? 10_000;
  }

  /** Records one status report; throws InvalidInputError on a report without `labels.id`. */
  record(report: unknown, partition: string | undefined): void {
    const now = this.clock();
    const instance = parseStatusReport(report, partition, now.toISOString());
    // Re-inserting keeps the Map in order of last report, oldest first: eviction takes from the front.
    this.instances.delete(instance.id);
    this.instances.set(instance.id, { instance, seenMs: now.getTime() });
    while (this.instances.size > this.maxInstances) {
      const oldest = this.instances.keys().next();
      if (oldest.done === true) break;
      this.instances.delete(oldest.value);
    }
    this.updateGauges();
  }

  /** The instances heard from recently, sorted by id. */
  list(): FleetInstance[] {
    this.prune();
    return [...this.instances.values()]
      .map((entry) => entry.instance)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /**
   * Recounts the fleet gauges: instances, and per bundle the instances that run the revision published
   * now. Call it after publishing a new revision too (reports alone do not see that change).
   */
  updateGauges(): void {
    this.prune();
    this.metrics.fleetInstances.set(this.instances.size);
    const current = new Map<string, string | undefined>();
    const onCurrent = new Map<string, number>();
    for (const { instance } of this.instances.values()) {
      for (const bundle of instance.bundles) {
        if (!current.has(bundle.name)) current.set(bundle.name, this.currentRevision(bundle.name));
        const revision = current.get(bundle.name);
        // Only bundles we publish get a series: names in reports are the reporter's to choose, and
        // a label per invented name would grow the metrics without bound.
        if (revision === undefined) continue;
        const count = onCurrent.get(bundle.name) ?? 0;
        onCurrent.set(bundle.name, count + (bundle.activeRevision === revision ? 1 : 0));
      }
    }
    // Reset first, so a bundle no instance reports any more leaves no stale series behind.
    this.metrics.fleetInstancesCurrent.reset();
    for (const [bundle, count] of onCurrent) this.metrics.fleetInstancesCurrent.set({ bundle }, count);
  }

  private prune(): void {
    const cutoff = this.clock().getTime() - this.staleAfterMs;
    for (const [id, entry] of this.instances) {
      if (entry.seenMs >= cutoff) break; // ordered by last report: the rest are newer
      this.instances.delete(id);
    }
  }
}
