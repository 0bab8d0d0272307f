// The application: builds, from one parsed Config, every part the configuration asks for, and runs
// them under one supervisor. Importing it starts nothing; src/cli.ts is the command line around it.
// This is only wiring: what each part does lives in its own module, what happens when one fails in
// lifecycle/supervisor.ts. Kubernetes modules (app-kube.ts) are loaded only when a Kubernetes source is
// configured, and the bundle and folder modules (app-bundles.ts) only when bundles or a folder are.
import { ociStatusOf } from './bundles/oci-status.js';
import type { OciBundleState } from './oci/oci-publisher.js';
import type { Config } from './config.js';
import { Metrics } from './http/metrics.js';
import { createOpsApp, listen } from './http/ops-server.js';
import { ServerPart } from './http/server-part.js';
import type { Part } from './lifecycle/part.js';
import { Supervisor } from './lifecycle/supervisor.js';
import { DesiredState } from './model/desired-state.js';
import { describeOrigin } from './model/origin.js';
import type { Outcome } from './model/outcome.js';
import { OpaClient } from './opa/client.js';
import { OpaPusher } from './opa/pusher.js';
import { OutcomeBook } from './ui/outcome-book.js';
import type { UiSources } from './ui/snapshot.js';
import { createUiRoute } from './ui/ui-route.js';
import type { Logger } from './util/logger.js';

export interface AppEnvironment {
  logger: Logger;
  /** Where the OPA configuration snippet of local mode is printed (people read it). */
  stdout: NodeJS.WritableStream;
  /** PATH-style folders searched for the `opa` binary when --opa-bin is not given. */
  searchPath: string | undefined;
  /** The opa `npm run tools` builds, used when --opa-bin is not given and none is on PATH. */
  cachedOpa?: string | undefined;
}

/** Where a sink's outcome for an origin goes: the status annotation, or the log for folder files. */
export type OutcomeReporter = (sink: string) => (outcome: Outcome) => void;

export interface App {
  readonly state: DesiredState;
  readonly metrics: Metrics;
  readonly supervisor: Supervisor;
  /** The parts, in start order. */
  readonly parts: readonly Part[];
  /**
   * What OCI publishing did last, per bundle (last pushed revision and digest, last error, times), as
   * a read-only copy; undefined without --oci-repository.
   */
  readonly ociState: (() => OciBundleState[]) | undefined;
  /** Runs everything until the signal aborts; rejects with the failure that stopped it. */
  run(signal: AbortSignal): Promise<void>;
}

/**
 * Builds the parts for `config`. Throws OpaSyncError for what can be told before anything runs (the opa
 * binary missing, a signing key unusable); starts nothing.
 *
 * @example
 * const app = await createApp(config, { logger, stdout: process.stdout, searchPath: process.env.PATH });
 * await app.run(controller.signal);
 */
export async function createApp(config: Config, env: AppEnvironment): Promise<App> {
  const { logger } = env;
  const metrics = new Metrics();
  const state = new DesiredState();
  const closers: (() => void)[] = [];
  const servers: Part[] = [];
  const sinks: Part[] = [];
  const sources: Part[] = [];

  // Kubernetes: sources and the status writer, from a module loaded only when one is asked for.
  const rep = config.replication;
  const replicating = rep.namespaced.length + rep.cluster.length > 0;
  const kube =
    config.configmaps || replicating
      ? (await import('./app-kube.js')).kubeParts(config, { state, metrics, logger })
      : undefined;
  if (kube?.statusWriter !== undefined) sinks.push(kube.statusWriter);
  // Every outcome passes here: the web page's book keeps the last one per origin and sink.
  const book = new OutcomeBook(state);
  closers.push(() => book.close());
  const report: OutcomeReporter = (sink) => (outcome) => {
    book.report(sink, outcome);
    if (kube?.statusWriter !== undefined) kube.statusWriter.report(outcome, sink);
    else if (outcome.errors.length > 0) {
      logger.warn({ origin: describeOrigin(outcome.origin), sink, errors: outcome.errors }, 'not loaded');
    }
  };

  let pusher: OpaPusher | undefined;
  if (config.opa.push) {
    const client = new OpaClient({
      ...config.opa,
      token: config.opa.authToken,
      tokenFile: config.opa.authTokenFile,
      logger: logger.child({ component: 'opa-client' }),
    });
    closers.push(() => client.close());
    pusher = new OpaPusher({
      client,
      state,
      logger: logger.child({ component: 'opa-pusher' }),
      onOutcome: report('opa'),
      resyncIntervalMs: config.opa.resyncIntervalMs,
      target: config.opa.url,
      metrics,
      // A module id `<ns>/…` under a watched namespace is opa-sync's own (leftovers removed at start).
      ownedPolicyPrefixes:
        config.configmaps && config.policies.enabled && !config.namespaces.all
          ? config.namespaces.names.map((ns) => `${ns}/`)
          : [],
      // And the documents `data.<ns>.<name>` of data ConfigMaps (leftovers removed at start too).
      ownedDataNamespaces:
        config.configmaps && config.data.enabled && !config.namespaces.all ? config.namespaces.names : [],
    });
    sinks.push(pusher);
  } else if (replicating && config.bundles.replicated === undefined) {
    logger.warn('replicated resources go to a pushed OPA or to --bundle-replicated: add one of them');
  }

  let ociState: (() => OciBundleState[]) | undefined;
  // What the web page shows: asked for when a server starts, once every part exists.
  const uiSources = (): UiSources => ({
    state,
    book,
    health: () => supervisor.health(),
    opa: pusher,
    bundles: local?.publisher,
    fleet: local?.fleet,
    replication: kube?.replication,
    oci: ociState === undefined ? undefined : ociStatusOf(ociState),
  });

  // Bundles and the folder source: from a module loaded only when one of them is asked for.
  let local: Awaited<ReturnType<typeof import('./app-bundles.js').bundleParts>> | undefined;
  if (config.bundles.addr !== undefined || config.bundles.dir !== undefined || config.folder !== undefined) {
    local = (await import('./app-bundles.js')).bundleParts(config, {
      ...env,
      state,
      metrics,
      report,
      uiSources,
    });
    ociState = local.ociState;
    closers.push(...local.closers);
    servers.push(...local.servers);
    sinks.push(...local.sinks);
    sources.push(...local.sources);
  }
  if (kube !== undefined) sources.push(...kube.sources);

  // The admission webhook: compiles would-be policy sets, from a module loaded only when asked for.
  if (config.admission.addr !== undefined) {
    const webhook = (await import('./app-admission.js')).admissionPart(config, { ...env, state, metrics });
    if (webhook !== undefined) servers.push(webhook);
  }

  // The ops server reads the supervisor's views per request, so only once it exists (below).
  const health = config.healthEndpoint;
  if (health !== undefined) {
    const opsLogger = logger.child({ component: 'ops' });
    const views = {
      readiness: () => supervisor.readiness(),
      health: () => supervisor.health(),
    };
    servers.unshift(
      new ServerPart({
        name: 'ops',
        flag: '--health-endpoint',
        host: health.host,
        port: health.port,
        listen: () => {
          const ui = createUiRoute({ sources: uiSources(), tokens: local?.tokens });
          return listen(createOpsApp(metrics, views, opsLogger, ui), health.host, health.port);
        },
        onListening: (port) =>
          opsLogger.info(
            { host: health.host, port },
            'serving /health, /ready, /metrics and the web page /ui',
          ),
      }),
    );
  }

  // Start order: servers, sinks, sources; the supervisor stops them the other way round, so that no
  // source feeds a stopped sink and /health answers until the end.
  const parts = [...servers, ...sinks, ...sources];
  const supervisor = new Supervisor(parts, { logger: logger.child({ component: 'supervisor' }), metrics });
  return {
    state,
    metrics,
    supervisor,
    parts,
    ociState,
    async run(signal) {
      try {
        await supervisor.run(signal);
      } finally {
        for (const close of closers) close();
      }
    },
  };
}
