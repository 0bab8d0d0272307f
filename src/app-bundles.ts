// The bundle half of the wiring (publisher, registry, bundle server) and the folder source, in a module
// of their own so that app.ts loads them (tar, YAML, the file watcher, …) only when bundles or a folder
// are configured: a sidecar that only pushes to OPA does not pay for them.
import type { OutcomeReporter } from './app.js';
import { BundlePublisher } from './bundles/publisher.js';
import { BundleRegistry } from './bundles/registry.js';
import { ReplicatedBundlePublisher } from './bundles/replicated-bundle.js';
import { serverUrl, showOpaHowTo } from './bundles/opa-howto.js';
import { createBundleApp, listenBundleServer } from './bundles/server.js';
import { Fleet } from './bundles/fleet.js';
import { TokenFile } from './bundles/tokens.js';
import { loadSigningKey } from './bundles/signing-key.js';
import type { Config, OciConfig } from './config.js';
import type { Metrics } from './http/metrics.js';
import { ServerPart } from './http/server-part.js';
import type { Part } from './lifecycle/part.js';
import type { DesiredState } from './model/desired-state.js';
import { OciClient } from './oci/client.js';
import { Credentials } from './oci/credentials.js';
import { OciPublisher, type OciBundleState } from './oci/oci-publisher.js';
import { FolderSource } from './sources/folder.js';
import type { UiSources } from './ui/snapshot.js';
import { createUiRoute } from './ui/ui-route.js';
import { OpaSyncError } from './util/errors.js';
import { findOpa } from './util/find-binary.js';
import type { Logger } from './util/logger.js';

export interface BundleParts {
  servers: Part[];
  sinks: Part[];
  sources: Part[];
  closers: (() => void)[];
  /** What the web page shows of the bundles, when they are built. */
  publisher: BundlePublisher | undefined;
  fleet: Fleet | undefined;
  /** The bundle server's tokens (the web page is behind them too). */
  tokens: TokenFile | undefined;
  /** What OCI publishing did last, per bundle (read-only); undefined without --oci-repository. */
  ociState?: (() => OciBundleState[]) | undefined;
}

export interface BundleWiring {
  state: DesiredState;
  metrics: Metrics;
  logger: Logger;
  report: OutcomeReporter;
  /** Where the OPA configuration snippet of local mode is printed. */
  stdout: NodeJS.WritableStream;
  searchPath: string | undefined;
  /** The opa `npm run tools` builds, used when --opa-bin is not given and none is on PATH. */
  cachedOpa?: string | undefined;
  /** What the web page shows, asked for when the server starts (served here without --health-endpoint). */
  uiSources: () => UiSources;
}

/** The bundle publisher and server, and the folder source, that `config` asks for. Starts nothing. */
export function bundleParts(config: Config, env: BundleWiring): BundleParts {
  const { state, metrics, logger, report } = env;
  const servers: Part[] = [];
  const sinks: Part[] = [];
  const sources: Part[] = [];
  const closers: (() => void)[] = [];
  let publisher: BundlePublisher | undefined;
  let fleet: Fleet | undefined;
  let tokens: TokenFile | undefined;
  let ociState: (() => OciBundleState[]) | undefined;
  const b = config.bundles;
  if (b.addr !== undefined || b.dir !== undefined) {
    const opaBin = findOpa({ opaBin: b.opaBin, searchPath: env.searchPath, cachedOpa: env.cachedOpa });
    if (opaBin === undefined) {
      throw new OpaSyncError(
        'opa_binary_missing',
        `bundles are validated with the opa binary, which is not on PATH${env.cachedOpa === undefined ? '' : ` nor at ${env.cachedOpa}`}: pass --opa-bin=FILE, or run \`npm run tools\` (it builds opa into ~/.cache/opa-sync/tools/)`,
      );
    }
    const registry = new BundleRegistry();
    const theFleet = new Fleet(metrics, (name) => registry.get(name)?.revision);
    fleet = theFleet;
    const oci = config.oci === undefined ? undefined : ociPublisher(config.oci, registry, env);
    const signing =
      b.signingKeyFile === undefined
        ? undefined
        : loadSigningKey(b.signingKeyFile, b.signingAlg, b.signingKeyId);
    const onPublished = (): void => {
      theFleet.updateGauges();
      oci?.notify();
    };
    publisher = new BundlePublisher({
      state,
      registry,
      logger: logger.child({ component: 'bundles' }),
      opaBin,
      defaultBundle: b.defaultName,
      regoVersion: b.regoVersion,
      signing,
      dir: b.dir,
      onOutcome: report('bundle'),
      metrics,
      onPublished,
    });
    sinks.push(publisher);
    if (b.replicated !== undefined) {
      sinks.push(
        new ReplicatedBundlePublisher({
          state,
          registry,
          name: b.replicated,
          deltas: b.deltas,
          logger: logger.child({ component: 'replicated-bundle' }),
          signing,
          dir: b.dir,
          onPublished,
        }),
      );
    }
    if (oci !== undefined) {
      sinks.push(oci);
      ociState = () => oci.snapshot();
    }
    const addr = b.addr;
    if (addr !== undefined) {
      const fileTokens =
        b.tokenFile === undefined
          ? undefined
          : new TokenFile(b.tokenFile, logger.child({ component: 'bundle-tokens' }));
      tokens = fileTokens;
      if (fileTokens !== undefined) closers.push(() => fileTokens.close());
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
              createBundleApp({
                registry,
                fleet: theFleet,
                tokens: fileTokens,
                metrics,
                logger: bundleLogger,
                // The page goes on the ops port when there is one.
                ui:
                  config.healthEndpoint === undefined
                    ? createUiRoute({
                        sources: env.uiSources(),
                        tokens: fileTokens,
                        secure: tls !== undefined,
                      })
                    : undefined,
              }),
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
                  fileTokens === undefined || b.tokenFile === undefined
                    ? undefined
                    : { tokenFile: b.tokenFile, tokens: fileTokens.count() },
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
  return { servers, sinks, sources, closers, publisher, fleet, tokens, ociState };
}

/** The OCI sink of --oci-repository: one client per registry host, all with the same credentials. */
function ociPublisher(oci: OciConfig, registry: BundleRegistry, env: BundleWiring): OciPublisher {
  const credentials = new Credentials({
    tokenFile: oci.tokenFile,
    username: oci.username,
    passwordFile: oci.passwordFile,
    dockerConfig: oci.dockerConfig,
  });
  return new OciPublisher({
    registry,
    targets: oci.targets,
    movingTag: oci.movingTag,
    clientFor: (host) => new OciClient(host, { credentials, plainHttp: oci.plainHttp, caFile: oci.caFile }),
    logger: env.logger.child({ component: 'oci' }),
    metrics: env.metrics,
  });
}
