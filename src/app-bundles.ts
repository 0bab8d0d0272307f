// The bundle half of the wiring (publisher, registry, bundle server) and the folder source, in a module
// of their own so that app.ts loads them (tar, YAML, the file watcher, …) only when bundles or a folder
// are configured: a sidecar that only pushes to OPA does not pay for them.
import type { OutcomeReporter } from './app.js';
import { BundlePublisher } from './bundles/publisher.js';
import { BundleRegistry } from './bundles/registry.js';
import { createBundleApp, listenBundleServer } from './bundles/server.js';
import { Fleet } from './bundles/fleet.js';
import { TokenFile } from './bundles/tokens.js';
import { loadSigningKey } from './bundles/signing-key.js';
import type { Config } from './config.js';
import type { Metrics } from './http/metrics.js';
import { ServerPart } from './http/server-part.js';
import type { Part } from './lifecycle/part.js';
import type { DesiredState } from './model/desired-state.js';
import { FolderSource } from './sources/folder.js';
import { OpaSyncError } from './util/errors.js';
import { findOnPath } from './util/find-binary.js';
import type { Logger } from './util/logger.js';

export interface BundleParts {
  servers: Part[];
  sinks: Part[];
  sources: Part[];
  closers: (() => void)[];
}

export interface BundleWiring {
  state: DesiredState;
  metrics: Metrics;
  logger: Logger;
  report: OutcomeReporter;
  /** Where the OPA configuration snippet of local mode is printed. */
  stdout: NodeJS.WritableStream;
  searchPath: string | undefined;
}

/** The bundle publisher and server, and the folder source, that `config` asks for. Starts nothing. */
export function bundleParts(config: Config, env: BundleWiring): BundleParts {
  const { state, metrics, logger, report } = env;
  const servers: Part[] = [];
  const sinks: Part[] = [];
  const sources: Part[] = [];
  const closers: (() => void)[] = [];
  const b = config.bundles;
  if (b.addr !== undefined || b.dir !== undefined) {
    const opaBin = b.opaBin ?? findOnPath('opa', env.searchPath);
    if (opaBin === undefined) {
      throw new OpaSyncError(
        'opa_binary_missing',
        'bundles are validated with the opa binary, which is not on PATH: pass --opa-bin=FILE, or run `npm run tools` (it builds opa into ~/.cache/opa-sync/tools/)',
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
            if (config.folder !== undefined) printOpaSnippet(env.stdout, addr.host, port, b.defaultName);
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
  return { servers, sinks, sources, closers };
}

/** Prints, for people, how to point an OPA at the bundle server (local mode's first minute). */
function printOpaSnippet(out: NodeJS.WritableStream, host: string, port: number, bundle: string): void {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host;
  out.write(
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
