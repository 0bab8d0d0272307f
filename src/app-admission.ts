// The admission webhook's wiring (--admission-addr): the validator and its HTTPS server as one Part,
// in a module of its own so that app.ts loads it only when the webhook is asked for.
import { createAdmissionHandler, listenAdmission } from './admission/server.js';
import { AdmissionValidator } from './admission/validator.js';
import type { Config } from './config.js';
import type { Metrics } from './http/metrics.js';
import { ServerPart } from './http/server-part.js';
import type { DesiredState } from './model/desired-state.js';
import { OpaClient } from './opa/client.js';
import { OpaSyncError } from './util/errors.js';
import { findOpa } from './util/find-binary.js';
import type { Logger } from './util/logger.js';

export interface AdmissionWiring {
  state: DesiredState;
  metrics: Metrics;
  logger: Logger;
  searchPath: string | undefined;
  cachedOpa?: string | undefined;
}

/** The webhook server Part, or undefined without --admission-addr. Throws if no opa binary is found. */
export function admissionPart(config: Config, env: AdmissionWiring): ServerPart | undefined {
  const { addr, tlsCertFile, tlsKeyFile, mode, protectDependents, regoVersion } = config.admission;
  if (addr === undefined || tlsCertFile === undefined || tlsKeyFile === undefined) return undefined;
  const opaBin = findOpa({
    opaBin: config.bundles.opaBin,
    searchPath: env.searchPath,
    cachedOpa: env.cachedOpa,
  });
  if (opaBin === undefined) {
    throw new OpaSyncError(
      'opa_binary_missing',
      `the admission webhook compiles with the opa binary, which is not on PATH${env.cachedOpa === undefined ? '' : ` nor at ${env.cachedOpa}`}: pass --opa-bin=FILE, or run \`npm run tools\``,
    );
  }
  const logger = env.logger.child({ component: 'admission' });
  return new ServerPart({
    name: 'admission',
    flag: '--admission-addr',
    host: addr.host,
    port: addr.port,
    listen: async () => {
      // The pushed OPA says which Rego version it parses (--v0-compatible or not), asked once.
      let client: OpaClient | undefined;
      let version: 0 | 1 | ((signal: AbortSignal) => Promise<0 | 1>);
      if (regoVersion === 'opa') {
        const asked = new OpaClient({
          ...config.opa,
          token: config.opa.authToken,
          tokenFile: config.opa.authTokenFile,
          logger: logger.child({ component: 'admission-opa-client' }),
        });
        client = asked;
        version = (signal) => asked.regoVersion(signal);
      } else version = regoVersion;
      // Made per run: it subscribes to the desired state and owns a helper process until closed.
      const validator = new AdmissionValidator({
        state: env.state,
        rules: { policies: config.policies, data: config.data },
        namespaces: config.namespaces,
        opaBin,
        regoVersion: version,
        mode,
        protectDependents,
        logger,
      });
      const close = async (): Promise<void> => {
        await validator.close();
        client?.close();
      };
      try {
        return await listenAdmission(
          createAdmissionHandler(validator, env.metrics, logger),
          addr.host,
          addr.port,
          { certFile: tlsCertFile, keyFile: tlsKeyFile },
          logger,
          close,
        );
      } catch (err) {
        await close();
        throw err;
      }
    },
    onListening: (port) =>
      logger.info(
        { host: addr.host, port, mode, protectDependents, regoVersion },
        `serving the admission webhook at POST /validate/configmaps`,
      ),
  });
}
