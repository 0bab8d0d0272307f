#!/usr/bin/env node
// opa-sync's command line and only composition root: parses the configuration once, builds the parts
// the flags ask for, runs them under one AbortController and shuts them down in order on SIGTERM.
import { parseArgs, type Config } from './config.js';
import { createOpsApp, listen, type RunningServer } from './http/ops-server.js';
import { Metrics } from './http/metrics.js';
import { DesiredState } from './model/desired-state.js';
import { OpaClient } from './opa/client.js';
import { OpaPusher } from './opa/pusher.js';
import { StatusWriter } from './kube/status-writer.js';
import { ConfigMapSource } from './sources/configmaps.js';
import { FolderSource } from './sources/folder.js';
import { describeOrigin } from './model/origin.js';
import { ReplicationSource } from './sources/replication.js';
import type { KubeAdapters } from './kube/ports.js';
import type { Part } from './lifecycle/part.js';
import { usage } from './usage.js';
import { BundlePublisher } from './bundles/publisher.js';
import { BundleRegistry } from './bundles/registry.js';
import {
  createBundleApp,
  listenBundleServer,
  type RunningServer as BundleRunningServer,
} from './bundles/server.js';
import { Fleet } from './bundles/fleet.js';
import { TokenFile } from './bundles/tokens.js';
import { loadSigningKey } from './bundles/sign.js';
import { findOnPath } from './util/find-binary.js';
import type { Outcome } from './model/outcome.js';
import { ConfigError, messageOf } from './util/errors.js';
import { createLogger, type Logger } from './util/logger.js';
import { version } from './version.js';

/** Bound on each Kubernetes API call that opa-sync makes itself (discovery, lists, status patches). */
const KUBE_CALL_TIMEOUT_MS = 15_000;

/** client-node is loaded only when a Kubernetes source is configured: folder mode does not pay for it. */
async function kubeAdapters(config: Config): Promise<KubeAdapters> {
  const { createKubeAdapters } = await import('./kube/client-node-adapter.js');
  return createKubeAdapters(
    config.kubeconfig === undefined ? { kind: 'in-cluster' } : { kind: 'file', path: config.kubeconfig },
    { timeoutMs: KUBE_CALL_TIMEOUT_MS },
  );
}

/** The bundle side (publisher, registry, server), when --bundle-addr or --bundles-dir asks for it. */
function startBundles(
  config: Config,
  state: DesiredState,
  metrics: Metrics,
  logger: Logger,
  onOutcome: (outcome: Outcome) => void,
  searchPath: string | undefined,
):
  | {
      publisher: BundlePublisher;
      registry: BundleRegistry;
      tokens: TokenFile | undefined;
      serve(): Promise<BundleRunningServer | undefined>;
    }
  | undefined {
  const b = config.bundles;
  if (b.addr === undefined && b.dir === undefined) return undefined;
  const opaBin = b.opaBin ?? findOnPath('opa', searchPath);
  if (opaBin === undefined) {
    throw new ConfigError([
      'bundles are validated with the opa binary, which is not on PATH: pass --opa-bin=FILE, or run `npm run tools` (it builds opa into ~/.cache/opa-sync/tools/)',
    ]);
  }
  const registry = new BundleRegistry();
  const fleet = new Fleet(metrics, (name) => registry.get(name)?.revision);
  const publisher = new BundlePublisher({
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
    onOutcome,
    metrics,
    onPublished: () => fleet.updateGauges(),
  });
  const tokens =
    b.tokenFile === undefined
      ? undefined
      : new TokenFile(b.tokenFile, logger.child({ component: 'bundle-tokens' }));
  const serve = async (): Promise<BundleRunningServer | undefined> => {
    if (b.addr === undefined) return undefined;
    const app = createBundleApp({
      registry,
      fleet,
      tokens,
      metrics,
      logger: logger.child({ component: 'bundle-server' }),
    });
    const tls =
      b.tlsCertFile !== undefined && b.tlsKeyFile !== undefined
        ? { certFile: b.tlsCertFile, keyFile: b.tlsKeyFile }
        : undefined;
    const server = await listenBundleServer(app, b.addr.host, b.addr.port, tls);
    logger.info(
      { host: b.addr.host, port: server.port, tls: tls !== undefined },
      'serving bundles at /bundles/<name>',
    );
    return server;
  };
  return { publisher, registry, tokens, serve };
}

/** A source of desired state: started, awaited for its initial sync, and stopped in order. */
interface Source {
  name: string;
  start(): void | Promise<void>;
  readonly synced: Promise<void>;
  isSynced(): boolean;
  stop(): Promise<void>;
}

/** Prints, for people, how to point an OPA at the bundle server (local mode's first minute). */
function printOpaSnippet(host: string, port: number, bundle: string): void {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host;
  process.stdout.write(
    [
      '',
      `opa-sync serves the bundle "${bundle}" at http://${shown}:${port}/bundles/${bundle}`,
      'Point an OPA at it with this configuration (opa run --server --config-file=opa-config.yaml):',
      '',
      'services:',
      '  opa-sync:',
      `    url: http://${shown}:${port}`,
      'bundles:',
      `  ${bundle}:`,
      '    service: opa-sync',
      `    resource: bundles/${bundle}`,
      '    polling:',
      '      long_polling_timeout_seconds: 60',
      'status:',
      '  service: opa-sync',
      '',
      '',
    ].join('\n'),
  );
}

/** Runs what the configuration asks for until the signal aborts; resolves once everything has stopped. */
async function runOpaSync(
  config: Config,
  logger: Logger,
  outer: AbortSignal,
  searchPath: string | undefined,
): Promise<void> {
  // A loop that fails for good stops everything else too, and the process exits non-zero.
  const controller = new AbortController();
  const signal = controller.signal;
  outer.addEventListener('abort', () => controller.abort(), { once: true });
  let failure: Error | undefined;
  const supervise = (name: string, loop: Promise<void>): Promise<void> =>
    loop.catch((err: unknown) => {
      logger.error({ component: name, err: messageOf(err) }, 'stopped by an unexpected error');
      failure ??= err instanceof Error ? err : new Error(messageOf(err));
      controller.abort();
    });
  const metrics = new Metrics();
  const state = new DesiredState();
  const rep = config.replication;
  const replicating = rep.namespaced.length + rep.cluster.length > 0;
  // Kubernetes is contacted only when a Kubernetes source is asked for.
  const kube = config.configmaps || replicating ? await kubeAdapters(config) : undefined;

  const statusWriter =
    kube === undefined || !config.configmaps
      ? undefined
      : new StatusWriter({
          patcher: kube.patcher,
          annotations: config.statusAnnotations,
          logger: logger.child({ component: 'status' }),
          metrics,
        });
  const report = (sink: string) => (outcome: Outcome) => {
    if (statusWriter !== undefined) statusWriter.report(outcome, sink);
    else if (outcome.errors.length > 0) {
      logger.warn({ origin: describeOrigin(outcome.origin), sink, errors: outcome.errors }, 'not loaded');
    }
  };

  const client = config.opa.push
    ? new OpaClient({
        ...config.opa,
        token: config.opa.authToken,
        tokenFile: config.opa.authTokenFile,
        logger: logger.child({ component: 'opa-client' }),
      })
    : undefined;
  const pusher =
    client === undefined
      ? undefined
      : new OpaPusher({
          client,
          state,
          logger: logger.child({ component: 'opa-pusher' }),
          onOutcome: report('opa'),
          resyncIntervalMs: config.opa.resyncIntervalMs,
          metrics,
        });
  const bundles = startBundles(config, state, metrics, logger, report('bundle'), searchPath);

  const sources: Source[] = [];
  if (config.folder !== undefined) {
    const folder = new FolderSource({
      dir: config.folder,
      state,
      logger: logger.child({ component: 'folder' }),
    });
    sources.push({
      name: 'folder',
      start: () => folder.start(),
      synced: folder.synced,
      isSynced: () => folder.isSynced(),
      stop: () => folder.stop(),
    });
  }
  // The Kubernetes sources are Parts: they register themselves with the state when constructed.
  const sourceParts: Part[] = [];
  if (kube !== undefined && replicating) {
    if (pusher === undefined) logger.warn('replicated resources go to a pushed OPA only: add --opa-url');
    const replication = new ReplicationSource({
      api: kube.api,
      watcher: kube.watcher,
      state,
      logger: logger.child({ component: 'replication' }),
      metrics,
      namespaced: rep.namespaced,
      cluster: rep.cluster,
      path: rep.path,
      ignoreNamespaces: rep.ignoreNamespaces,
      clusterByName: rep.clusterByName,
      keepManagedFields: rep.keepManagedFields,
    });
    sourceParts.push(replication);
  }
  if (kube !== undefined && config.configmaps) {
    sourceParts.push(
      new ConfigMapSource({
        watcher: kube.watcher,
        state,
        logger: logger.child({ component: 'configmaps' }),
        namespaces: config.namespaces,
        policies: config.policies,
        data: config.data,
        metrics,
      }),
    );
  }

  // Registered before any sink starts: no sink may take "no source yet" for "every source listed".
  const registered = sources.map((src) => [src, state.registerSource(src.name)] as const);

  let ops: RunningServer | undefined;
  if (config.healthEndpoint !== undefined) {
    const { host, port } = config.healthEndpoint;
    const app = createOpsApp(
      metrics,
      () => ({
        ...Object.fromEntries(sources.map((src) => [src.name, src.isSynced()])),
        ...Object.fromEntries(sourceParts.map((part) => [part.name, part.ready()])),
        ...(pusher === undefined ? {} : { opa: pusher.ready() }),
        ...(bundles === undefined ? {} : { bundles: bundles.registry.isBuilt() }),
      }),
      logger.child({ component: 'ops' }),
    );
    ops = await listen(app, host, port);
    logger.info({ host, port: ops.port }, 'serving /health, /ready and /metrics');
  }

  const sinks: Promise<void>[] = [];
  if (statusWriter !== undefined) sinks.push(supervise('status', statusWriter.run(signal)));
  if (pusher !== undefined) sinks.push(supervise('opa-pusher', pusher.run(signal)));
  if (bundles !== undefined) sinks.push(supervise('bundles', bundles.publisher.run(signal)));
  const bundleServer = bundles === undefined ? undefined : await bundles.serve();
  if (bundleServer !== undefined && config.folder !== undefined && config.bundles.addr !== undefined) {
    printOpaSnippet(config.bundles.addr.host, bundleServer.port, config.bundles.defaultName);
  }

  // The Kubernetes sources stop first, under their own signal, as the other sources do.
  const sourceController = new AbortController();
  signal.addEventListener('abort', () => sourceController.abort(), { once: true });
  const sourceRuns = sourceParts.map((part) => supervise(part.name, part.run(sourceController.signal)));
  const stopAll = async (): Promise<void> => {
    sourceController.abort();
    await Promise.all(sourceRuns);
    for (const src of sources) await src.stop();
    controller.abort();
    await Promise.all(sinks);
    client?.close();
    await bundleServer?.close();
    bundles?.tokens?.close();
    await ops?.close();
  };
  try {
    for (const src of sources) await src.start();
  } catch (err) {
    await stopAll();
    throw err;
  }
  for (const [src, listed] of registered) void src.synced.then(listed);
  void Promise.all(sources.map((src) => src.synced)).then(() => {
    logger.info({ origins: state.size }, 'sources listed');
  });

  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  logger.info('stopping');
  await stopAll();
  logger.info('stopped');
  if (failure !== undefined) throw failure;
}

export async function main(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(argv, { localDefault: true });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`opa-sync: ${err.message}\n\nRun opa-sync --help for the flags.\n`);
      return 2;
    }
    throw err;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`opa-sync ${version()}\n`);
    return 0;
  }
  const { config, warnings } = parsed;
  const replicationProblems = ReplicationSource.check(
    config.replication.namespaced,
    config.replication.cluster,
  );
  if (replicationProblems.length > 0) {
    process.stderr.write(`opa-sync: ${new ConfigError(replicationProblems).message}\n`);
    return 2;
  }
  const logger = createLogger(config.log.level, config.log.format);
  for (const warning of warnings) logger.warn(warning);
  logger.info({ version: version(), ...(config.opa.push ? { opaUrl: config.opa.url } : {}) }, 'starting');

  const controller = new AbortController();
  const stop = (sig: string): void => {
    logger.info({ signal: sig }, 'signal received');
    controller.abort();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  try {
    // The only place that reads the environment: where to look for the opa binary.
    await runOpaSync(config, logger, controller.signal, process.env.PATH);
    return 0;
  } catch (err) {
    logger.error({ err: messageOf(err) }, 'opa-sync failed');
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Everything was stopped in order; should a library still hold a handle, do not hang on it.
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`opa-sync: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
