// The web page's one picture of opa-sync: a read-only snapshot of each area (policies, bundles, fleet,
// replication, OPA push, parts), taken on request from the parts' own snapshot functions. The page is
// rendered from it and nothing else, so what it shows is what these functions return.
import type { BundlesSnapshot } from '../bundles/publisher.js';
import type { FleetError, FleetInstance } from '../bundles/fleet.js';
import type { OciPublishStatus, OciStatusSource } from '../bundles/oci-status.js';
import type { PartHealth } from '../lifecycle/supervisor.js';
import type { DesiredState } from '../model/desired-state.js';
import type { LoadError } from '../model/outcome.js';
import type { OpaPushSnapshot } from '../opa/pusher.js';
import type { ReplicationSnapshot } from '../sources/replication.js';
import type { OutcomeBook, SinkOutcome } from './outcome-book.js';

/** Where the snapshot comes from; an area that is not configured is undefined. */
export interface UiSources {
  state: DesiredState;
  book: OutcomeBook;
  health: () => { healthy: boolean; parts: Record<string, PartHealth> };
  opa?: { snapshot(): OpaPushSnapshot } | undefined;
  bundles?: { snapshot(): BundlesSnapshot } | undefined;
  oci?: OciStatusSource | undefined;
  fleet?: { list(): FleetInstance[] } | undefined;
  replication?: { snapshot(): ReplicationSnapshot[] } | undefined;
  clock?: () => Date;
}

/** One error as the page shows it: OPA's detailed errors are one each, with the offending line. */
export interface ErrorView {
  code: string;
  message: string;
  file?: string | undefined;
  row?: number | undefined;
  col?: number | undefined;
  /** The module's line at `row`, when the module is known. */
  line?: string | undefined;
}

export interface SinkView {
  sink: string;
  errors: ErrorView[];
  at: string;
}

export interface PolicyView {
  key: string;
  kind: 'configmap' | 'file';
  role: 'policy' | 'data';
  /** `<namespace>/<name>` or the file's path. */
  name: string;
  namespace: string | undefined;
  bundle: string | undefined;
  modules: string[];
  documents: number;
  sinks: SinkView[];
  changedAt: string | undefined;
  retryPending: boolean;
  hasErrors: boolean;
}

export interface BundleView {
  name: string;
  revision: string | undefined;
  bytes: number | undefined;
  roots: readonly string[];
  signed: boolean;
  lastRefused: { origin: string; errors: ErrorView[]; at: string } | undefined;
  oci: OciPublishStatus;
}

export interface FleetBundleView {
  name: string;
  activeRevision: string | undefined;
  /** The revision opa-sync serves now; undefined for a bundle it does not serve. */
  currentRevision: string | undefined;
  drifted: boolean;
  lastSuccessfulActivation: string | undefined;
  errors: ErrorView[];
}

export interface FleetView {
  id: string;
  labels: Record<string, string>;
  version: string | undefined;
  lastSeen: string;
  bundles: FleetBundleView[];
  drifted: boolean;
}

export interface UiSnapshot {
  generatedAt: string;
  healthy: boolean;
  parts: { name: string; health: PartHealth }[];
  policies: PolicyView[];
  bundles:
    { lastBuildAt: string | undefined; lastBuildMs: number | undefined; list: BundleView[] } | undefined;
  fleet: FleetView[] | undefined;
  replication: ReplicationSnapshot[] | undefined;
  opa: OpaPushSnapshot | undefined;
}

/** The errors of an outcome, one per OPA detail (with the module line at its row), else the error itself. */
export function errorViews(
  errors: readonly LoadError[],
  moduleText: (id: string) => string | undefined,
): ErrorView[] {
  const views: ErrorView[] = [];
  for (const error of errors) {
    const details = (error.errors ?? []).filter(
      (d): d is FleetError => typeof d === 'object' && d !== null && !Array.isArray(d),
    );
    if (details.length === 0) {
      views.push({ code: error.code, message: error.message });
      continue;
    }
    for (const d of details) views.push(detailView(d, error.code, moduleText));
  }
  return views;
}

function detailView(
  d: FleetError,
  fallbackCode: string,
  moduleText: (id: string) => string | undefined,
): ErrorView {
  const { file, row, col } = d.location ?? {};
  const text = file === undefined ? undefined : moduleText(file.replace(/^\//, ''));
  const line =
    text !== undefined && row !== undefined && row >= 1
      ? text.split('\n')[row - 1]?.replace(/\r$/, '')
      : undefined;
  return { code: d.code ?? fallbackCode, message: d.message ?? '', file, row, col, line };
}

/** The text of any module of the desired state, by id (looked up only for errors that name a row). */
function moduleTexts(state: DesiredState): (id: string) => string | undefined {
  let texts: Map<string, string> | undefined;
  return (id) => {
    texts ??= new Map(
      state.keys().flatMap((key) => (state.get(key)?.modules ?? []).map((m) => [m.id, m.text] as const)),
    );
    return texts.get(id);
  };
}

function policyViews(sources: UiSources): PolicyView[] {
  const { state, book } = sources;
  const pending = new Set(sources.opa?.snapshot().retriesPending ?? []);
  const views: PolicyView[] = [];
  for (const key of state.keys()) {
    const s = state.get(key);
    if (s === undefined) continue;
    const texts = new Map(s.modules.map((m) => [m.id, m.text]));
    const record = book.get(key);
    const sinks = [...(record?.sinks ?? new Map<string, SinkOutcome>())]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([sink, outcome]) => ({
        sink,
        errors: errorViews(outcome.errors, (id) => texts.get(id)),
        at: outcome.at,
      }));
    const { origin } = s;
    views.push({
      key,
      kind: origin.kind,
      role: origin.role,
      name: origin.kind === 'configmap' ? `${origin.namespace}/${origin.name}` : origin.path,
      namespace: origin.kind === 'configmap' ? origin.namespace : undefined,
      bundle: s.bundle,
      modules: s.modules.map((m) => m.id),
      documents: s.documents.length,
      sinks,
      changedAt: record?.changedAt,
      retryPending: pending.has(key),
      hasErrors: sinks.some((x) => x.errors.length > 0),
    });
  }
  return views;
}

function fleetViews(
  instances: FleetInstance[],
  current: (bundle: string) => string | undefined,
): FleetView[] {
  const views = instances.map((instance): FleetView => {
    const bundles = instance.bundles.map((b): FleetBundleView => {
      const currentRevision = current(b.name);
      const errors: ErrorView[] = (b.errors ?? []).map((e) => ({
        code: e.code ?? b.code ?? 'error',
        message: e.message ?? '',
        file: e.location?.file,
        row: e.location?.row,
        col: e.location?.col,
      }));
      if (errors.length === 0 && (b.code !== undefined || b.message !== undefined)) {
        errors.push({
          code: b.code ?? (b.httpCode === undefined ? 'error' : `http ${b.httpCode}`),
          message: b.message ?? '',
        });
      }
      return {
        name: b.name,
        activeRevision: b.activeRevision,
        currentRevision,
        drifted: currentRevision !== undefined && b.activeRevision !== currentRevision,
        lastSuccessfulActivation: b.lastSuccessfulActivation,
        errors,
      };
    });
    return {
      id: instance.id,
      labels: instance.labels,
      version: instance.labels.version,
      lastSeen: instance.lastSeen,
      bundles,
      drifted: bundles.some((b) => b.drifted),
    };
  });
  // Who is not on the current revision comes first; then by id (the fleet's own order).
  return views.sort(
    (a, b) => Number(b.drifted) - Number(a.drifted) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

/**
 * Takes the picture. Cheap enough to take per request and per live update: it walks the origins once
 * and asks each configured part for its own snapshot.
 *
 * @example
 * const snapshot = takeSnapshot({ state, book, health: () => supervisor.health(), opa: pusher });
 */
export function takeSnapshot(sources: UiSources): UiSnapshot {
  const now = (sources.clock ?? (() => new Date()))();
  const { healthy, parts } = sources.health();
  const built = sources.bundles?.snapshot();
  const oci = sources.oci;
  const revisions = new Map((built?.bundles ?? []).map((b) => [b.name, b.revision]));
  return {
    generatedAt: now.toISOString(),
    healthy,
    parts: Object.entries(parts).map(([name, health]) => ({ name, health })),
    policies: policyViews(sources),
    bundles:
      built === undefined
        ? undefined
        : {
            lastBuildAt: built.lastBuildAt,
            lastBuildMs: built.lastBuildMs,
            list: built.bundles.map((b) => ({
              ...b,
              lastRefused:
                b.lastRefused === undefined
                  ? undefined
                  : {
                      ...b.lastRefused,
                      errors: errorViews(b.lastRefused.errors, moduleTexts(sources.state)),
                    },
              oci: oci === undefined ? { configured: false } : oci.ociStatus(b.name),
            })),
          },
    fleet:
      sources.fleet === undefined ? undefined : fleetViews(sources.fleet.list(), (n) => revisions.get(n)),
    replication: sources.replication?.snapshot(),
    opa: sources.opa?.snapshot(),
  };
}
