// The application: builds, from one parsed Config, every part the configuration asks for, and runs
// them under one supervisor. Importing it starts nothing; src/cli.ts is the command line around it.
// This is only wiring: what each part does lives in its own module, what happens when one fails in
// lifecycle/supervisor.ts. Kubernetes modules are loaded only when a Kubernetes source is configured.
import type { Config } from './config.js';
import { BundlePublisher } from './bundles/publisher.js';
import { BundleRegistry } from './bundles/registry.js';
import { serverUrl, showOpaHowTo } from './bundles/opa-howto.js';
import { createBundleApp, listenBundleServer } from './bundles/server.js';
import { Fleet } from './bundles/fleet.js';
import { TokenFile } from './bundles/tokens.js';
import { loadSigningKey } from './bundles/signing-key.js';
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
import { FolderSource } from './sources/folder.js';
import { OpaSyncError } from './util/errors.js';
import { findOnPath, isExecutable } from './util/find-binary.js';
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
  const report: OutcomeReporter = (sink) => (outcome) => {
    if (kube?.statusWriter !== undefined) kube.statusWriter.report(outcome, sink);
    else if (outcome.errors.length > 0) {
      logger.warn({ origin: describeOrigin(outcome.origin), sink, errors: outcome.errors }, 'not loaded');
    }
  };

  if (config.opa.push) {
    const client = new OpaClient({
      ...config.opa,
      token: config.opa.authToken,
      tokenFile: config.opa.authTokenFile,
      logger: logger.child({ component: 'opa-client' }),
    });
    closers.push(() => client.close());
    sinks.push(
      new OpaPusher({
        client,
        state,
        logger: logger.child({ component: 'opa-pusher' }),
        onOutcome: report('opa'),
        resyncIntervalMs: config.opa.resyncIntervalMs,
        target: config.opa.url,
        metrics,
        // Policy ids under a watched namespace are opa-sync's: what no ConfigMap backs is removed at start.
        ownedPolicyPrefixes:
          config.configmaps && config.policies.enabled && !config.namespaces.all
            ? config.namespaces.names.map((ns) => `${ns}/`)
            : [],
      }),
    );
  } else if (replicating) {
    logger.warn('replicated resources go to a pushed OPA only: add --opa-url');
  }

  const b = config.bundles;
  if (b.addr !== undefined || b.dir !== undefined) {
    const opaBin =
      b.opaBin ??
      findOnPath('opa', env.searchPath) ??
      (env.cachedOpa !== undefined && isExecutable(env.cachedOpa) ? env.cachedOpa : undefined);
    if (opaBin === undefined) {
      throw new OpaSyncError(
        'opa_binary_missing',
        `bundles are validated with the opa binary, which is not on PATH${env.cachedOpa === undefined ? '' : ` nor at ${env.cachedOpa}`}: pass --opa-bin=FILE, or run \`npm run tools\` (it builds opa into ~/.cache/opa-sync/tools/)`,
      );
    }
    const registry = new BundleRegistry();
    const fleet = new Fleet(metrics, (name) => registry.get(name)?.revision);
    sinks.push(
      new BundlePublisher({
        state,
        registry,
        logger: logger.child({ component: 'bundles' }),
        opaBin,
        defaultBundle: b.defaultName,
        regoVersion: b.regoVersion,
        signing:
          b.signingKeyFile === undefined
            ? undefined
            : loadSigningKey(b.signingKeyFile, b.signingAlg, b.signingKeyId),
        dir: b.dir,
        onOutcome: report('bundle'),
        metrics,
        onPublished: () => fleet.updateGauges(),
      }),
    );
    const addr = b.addr;
    if (addr !== undefined) {
      const tokens =
        b.tokenFile === undefined
          ? undefined
          : new TokenFile(b.tokenFile, logger.child({ component: 'bundle-tokens' }));
      if (tokens !== undefined) closers.push(() => tokens.close());
      const bundleLogger = logger.child({ component: 'bundle-server' });
      const tls =
        b.tlsCertFile !== undefined && b.tlsKeyFile !== undefined
          ? { certFile: b.tlsCertFile, keyFile: b.tlsKeyFile }
          : undefined;
      servers.push(
        new ServerPart({
          name: 'bundle-server',
          flag: '--bundle-addr',
          host: addr.host,
          port: addr.port,
          listen: () =>
            listenBundleServer(
              createBundleApp({ registry, fleet, tokens, metrics, logger: bundleLogger }),
              addr.host,
              addr.port,
              tls,
            ),
          onListening: (port) => {
            bundleLogger.info(
              { host: addr.host, port, tls: tls !== undefined },
              'serving bundles at /bundles/<name>',
            );
            if (config.folder !== undefined) {
              showOpaHowTo({
                out: env.stdout,
                logger: bundleLogger,
                url: serverUrl(addr.host, port, tls !== undefined),
                bundle: b.defaultName,
                opaBin,
                dir: b.dir,
                folder: config.folder,
                credentials:
                  tokens === undefined || b.tokenFile === undefined
                    ? undefined
                    : { tokenFile: b.tokenFile, tokens: tokens.count() },
              });
            }
          },
        }),
      );
    }
  }

  if (config.folder !== undefined) {
    sources.push(
      new FolderSource({ dir: config.folder, state, logger: logger.child({ component: 'folder' }) }),
    );
  }
  if (kube !== undefined) sources.push(...kube.sources);

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
        listen: () => listen(createOpsApp(metrics, views, opsLogger), health.host, health.port),
        onListening: (port) =>
          opsLogger.info({ host: health.host, port }, 'serving /health, /ready and /metrics'),
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
    async run(signal) {
      try {
        await supervisor.run(signal);
      } finally {
        for (const close of closers) close();
      }
    },
  };
}
