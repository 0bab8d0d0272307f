// opa-sync's Prometheus metrics (prom-client), on a registry of its own so tests can make many.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  /** Loads into OPA, by kind (policy, data) and result (ok, error). */
  readonly loads = new Counter({
    name: 'opa_sync_loads_total',
    help: 'Policy modules and data documents loaded into OPA, by kind and result',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });

  /** Errors of loads, by error code (OPA's code, or ours such as opa_unavailable or invalid_json). */
  readonly loadErrors = new Counter({
    name: 'opa_sync_load_errors_total',
    help: 'Errors while loading into OPA, by error code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly loadDuration = new Histogram({
    name: 'opa_sync_opa_request_duration_seconds',
    help: 'Duration of calls to OPA that load or remove policies and data',
    labelNames: ['kind'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly opaRestarts = new Counter({
    name: 'opa_sync_opa_restarts_detected_total',
    help: 'Times OPA was found to have lost what opa-sync pushed (it restarted), whether or not opa-sync saw it down meanwhile',
    registers: [this.registry],
  });

  readonly queueDepth = new Gauge({
    name: 'opa_sync_queue_depth',
    help: 'Origins waiting to be pushed into OPA',
    registers: [this.registry],
  });

  readonly partFailures = new Counter({
    name: 'opa_sync_part_failures_total',
    help: 'Times a part of opa-sync (a source, sink or server) stopped with an unexpected error, by part',
    labelNames: ['part'] as const,
    registers: [this.registry],
  });

  readonly partUp = new Gauge({
    name: 'opa_sync_part_up',
    help: '1 while a part of opa-sync is running, 0 while it waits to restart or has failed',
    labelNames: ['part'] as const,
    registers: [this.registry],
  });

  readonly watchErrors = new Counter({
    name: 'opa_sync_watch_errors_total',
    help: 'Failed Kubernetes list or watch requests (each is retried with backoff)',
    registers: [this.registry],
  });

  readonly statusWrites = new Counter({
    name: 'opa_sync_status_writes_total',
    help: 'Status annotation writes, by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly replicatedObjects = new Gauge({
    name: 'opa_sync_replicated_objects',
    help: 'Objects of each replicated collection that OPA holds',
    labelNames: ['collection'] as const,
    registers: [this.registry],
  });

  readonly replicationConflicts = new Gauge({
    name: 'opa_sync_replication_conflicts',
    help: 'Replicated objects left out of OPA because a loaded policy defines a rule at their path, by collection',
    labelNames: ['collection'] as const,
    registers: [this.registry],
  });

  readonly replicationCollisions = new Counter({
    name: 'opa_sync_replication_name_collisions_total',
    help: 'Objects left out of a --replicate-cluster-by-name collection because another namespace has one of the same name',
    labelNames: ['collection'] as const,
    registers: [this.registry],
  });

  /** Bundle GET/HEAD answers of the bundle server, by bundle ('' when unknown or not checked) and status. */
  readonly bundleRequests = new Counter({
    name: 'opa_sync_bundle_requests_total',
    help: 'Bundle requests answered by the bundle server, by bundle and result (HTTP status)',
    labelNames: ['bundle', 'result'] as const,
    registers: [this.registry],
  });

  /** Delta bundles sent instead of a snapshot, and their bytes, by bundle. */
  readonly bundleDeltas = new Counter({
    name: 'opa_sync_bundle_deltas_total',
    help: 'Delta bundles sent instead of the snapshot (200 answers counted in opa_sync_bundle_requests_total too), by bundle',
    labelNames: ['bundle'] as const,
    registers: [this.registry],
  });

  readonly bundleDeltaBytes = new Counter({
    name: 'opa_sync_bundle_delta_bytes_total',
    help: 'Bytes of the delta bundles sent, by bundle',
    labelNames: ['bundle'] as const,
    registers: [this.registry],
  });

  readonly bundleLongPollsHeld = new Gauge({
    name: 'opa_sync_bundle_long_polls_held',
    help: 'Long-polling bundle requests currently held open by the bundle server',
    registers: [this.registry],
  });

  /** Status reports received from OPAs, by result (ok, invalid). */
  readonly statusReports = new Counter({
    name: 'opa_sync_status_reports_total',
    help: 'OPA status reports received by the bundle server, by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly fleetInstances = new Gauge({
    name: 'opa_sync_fleet_instances',
    help: 'OPA instances that sent a status report recently',
    registers: [this.registry],
  });

  readonly fleetEvictions = new Counter({
    name: 'opa_sync_fleet_evictions_total',
    help: 'Instances dropped from the fleet view to keep it within its memory budget (the longest silent first)',
    registers: [this.registry],
  });

  readonly fleetInstancesCurrent = new Gauge({
    name: 'opa_sync_fleet_instances_current_revision',
    help: 'OPA instances whose active revision of a bundle is the one published now, by bundle',
    labelNames: ['bundle'] as const,
    registers: [this.registry],
  });

  /** AdmissionReview requests the admission webhook answered, by verdict (allowed, warned, denied, invalid). */
  readonly admissionRequests = new Counter({
    name: 'opa_sync_admission_requests_total',
    help: 'AdmissionReview requests answered by the admission webhook, by verdict (allowed, warned, denied, invalid)',
    labelNames: ['verdict'] as const,
    registers: [this.registry],
  });

  readonly admissionDuration = new Histogram({
    name: 'opa_sync_admission_duration_seconds',
    help: 'Time the admission webhook took to answer an AdmissionReview request, compilation included',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  /** Pushes of bundle revisions to OCI registries, by bundle and result (pushed, unchanged, error). */
  readonly ociPushes = new Counter({
    name: 'opa_sync_oci_pushes_total',
    help: 'Bundle revisions pushed to an OCI registry, by bundle and result (pushed, unchanged, error)',
    labelNames: ['bundle', 'result'] as const,
    registers: [this.registry],
  });

  readonly ociPushErrors = new Counter({
    name: 'opa_sync_oci_push_errors_total',
    help: 'Failed OCI pushes, by error code (each is retried with backoff)',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly ociPushDuration = new Histogram({
    name: 'opa_sync_oci_push_duration_seconds',
    help: 'Duration of successful OCI pushes of one bundle revision (blobs, manifest and tags)',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  constructor({ processMetrics = true }: { processMetrics?: boolean } = {}) {
    if (processMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
