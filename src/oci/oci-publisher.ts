// The OCI sink: pushes every published bundle revision to its repository (--oci-repository), tagged
// with the revision and with the moving tag (--oci-tag). Level-triggered: each pass compares what the
// bundle registry holds with what was last pushed, so bursts of revisions coalesce into one push of the
// newest. Blobs and tags the registry already has are not sent again, so an unchanged revision pushes
// nothing, across restarts too. A failed push is logged, counted, shown in /ready's `oci` check and
// retried with backoff; it never holds up the bundle server, which serves from the registry as before.
import type { BundleRegistry, PublishedBundle } from '../bundles/registry.js';
import type { Metrics } from '../http/metrics.js';
import type { Part } from '../lifecycle/part.js';
import { Wake } from '../lifecycle/wake.js';
import { Backoff, sleep } from '../util/backoff.js';
import { OpaSyncError, PermanentError, isAbortError, messageOf } from '../util/errors.js';
import type { ErrorCode } from '../util/error-codes.js';
import type { Logger } from '../util/logger.js';
import { MANIFEST_MEDIA_TYPE, bundleArtifact, type Blob } from './artifact.js';
import type { OciClient } from './client.js';
import { referenceOf, repositoryOf, type OciRepository, type OciTargets } from './reference.js';

export interface OciPublisherOptions {
  registry: BundleRegistry;
  targets: OciTargets;
  /** The client of a registry host (one per host, made on first use and closed by run()). */
  clientFor: (registry: string) => OciClient;
  /** The moving tag (--oci-tag). */
  movingTag: string;
  logger: Logger;
  metrics: Metrics;
  /** Retry delays (default 1 s to 60 s). */
  backoff?: Backoff | undefined;
}

/** What the web page and tests may read about one bundle's publishing. */
export interface OciBundleState {
  bundle: string;
  /** `host/repo`, or undefined when the bundle name gives no valid repository. */
  repository: string | undefined;
  /** The last revision the registry has for the moving tag, its manifest digest and when. */
  pushed: { revision: string; digest: string; at: string; uploadedBytes: number } | undefined;
  /** The last failure, cleared by the next successful push. */
  error: { code: ErrorCode | 'unexpected'; message: string; at: string; attempts: number } | undefined;
}

export class OciPublisher implements Part {
  readonly name = 'oci';
  readonly onFailure = 'restart';
  /** Its /ready check is shown, but a registry that is down must not take the bundle server out of service. */
  readonly advisory = true;
  private readonly wake = new Wake();
  private readonly states = new Map<string, OciBundleState & { etag: string | undefined }>();
  private readonly clients = new Map<string, OciClient>();
  private readonly backoff: Backoff;

  constructor(private readonly options: OciPublisherOptions) {
    this.backoff = options.backoff ?? new Backoff({ minMs: 1000, maxMs: 60_000 });
  }

  /** Called when the bundle registry published something (BundlePublisher's onPublished). */
  notify(): void {
    this.wake.wake();
  }

  /** True once every published bundle that has a repository is in it at its current revision. */
  ready(): boolean {
    if (!this.options.registry.isBuilt()) return false;
    return this.pending().length === 0 && [...this.states.values()].every((s) => s.error === undefined);
  }

  /** A read-only view of each bundle's publishing, sorted by bundle. */
  snapshot(): OciBundleState[] {
    return [...this.states.values()]
      .map(({ etag: _etag, ...rest }) => structuredClone(rest))
      .sort((a, b) => (a.bundle < b.bundle ? -1 : a.bundle > b.bundle ? 1 : 0));
  }

  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        const pending = this.pending();
        if (pending.length === 0) {
          await this.wake.wait(signal);
          continue;
        }
        let failed = false;
        for (const bundle of pending) {
          if (signal.aborted) break;
          if (!(await this.pushOne(bundle, signal))) failed = true;
        }
        if (failed && !signal.aborted) {
          await sleep(this.backoff.next(), signal).catch(() => undefined);
        } else {
          this.backoff.reset();
        }
      }
    } finally {
      for (const client of this.clients.values()) client.close();
      this.clients.clear();
    }
  }

  /** The published bundles whose current ETag is not the one last pushed. */
  private pending(): PublishedBundle[] {
    const out: PublishedBundle[] = [];
    for (const name of this.options.registry.names()) {
      const bundle = this.options.registry.get(name);
      if (bundle === undefined) continue;
      if (repositoryOf(this.options.targets, name) === undefined) continue;
      if (this.states.get(name)?.etag !== bundle.etag) out.push(bundle);
    }
    return out;
  }

  private stateOf(bundle: string): OciBundleState & { etag: string | undefined } {
    let state = this.states.get(bundle);
    if (state === undefined) {
      state = { bundle, repository: undefined, pushed: undefined, error: undefined, etag: undefined };
      this.states.set(bundle, state);
    }
    return state;
  }

  /** Pushes one bundle; false when it failed (recorded, logged and counted). */
  private async pushOne(bundle: PublishedBundle, signal: AbortSignal): Promise<boolean> {
    const state = this.stateOf(bundle.name);
    const target = repositoryOf(this.options.targets, bundle.name);
    const started = performance.now();
    try {
      if (target === undefined) return true;
      if ('problem' in target) throw new OciPushRefused(target.problem);
      state.repository = `${target.registry}/${target.name}`;
      const result = await pushArtifact(
        this.client(target.registry),
        target,
        bundle,
        this.options.movingTag,
        signal,
      );
      state.etag = bundle.etag;
      state.pushed = {
        revision: bundle.revision,
        digest: result.digest,
        at: new Date().toISOString(),
        uploadedBytes: result.uploadedBytes,
      };
      state.error = undefined;
      this.options.metrics.ociPushes.inc({
        bundle: bundle.name,
        result: result.changed ? 'pushed' : 'unchanged',
      });
      this.options.metrics.ociPushDuration.observe((performance.now() - started) / 1000);
      this.options.logger.info(
        {
          bundle: bundle.name,
          reference: referenceOf(target, bundle.revision),
          tag: this.options.movingTag,
          digest: result.digest,
          uploadedBytes: result.uploadedBytes,
          changed: result.changed,
        },
        result.changed ? 'bundle pushed to OCI' : 'bundle already in OCI',
      );
      return true;
    } catch (err) {
      if (signal.aborted && isAbortError(err)) return false;
      const code: ErrorCode | 'unexpected' = err instanceof OpaSyncError ? err.code : 'unexpected';
      const attempts = (state.error?.attempts ?? 0) + 1;
      state.error = { code, message: messageOf(err), at: new Date().toISOString(), attempts };
      if (err instanceof OciPushRefused) state.etag = bundle.etag; // the name will not change: not retried
      this.options.metrics.ociPushes.inc({ bundle: bundle.name, result: 'error' });
      this.options.metrics.ociPushErrors.inc({ code });
      this.options.logger.error(
        { bundle: bundle.name, repository: state.repository, code, err: messageOf(err), attempts },
        'OCI push failed; retrying with backoff (bundles are still served over HTTP)',
      );
      return false;
    }
  }

  private client(registry: string): OciClient {
    let client = this.clients.get(registry);
    if (client === undefined) {
      client = this.options.clientFor(registry);
      this.clients.set(registry, client);
    }
    return client;
  }
}

/**
 * Pushes one bundle revision: the blobs the repository lacks, then the manifest under the revision tag
 * and the moving tag where they point elsewhere. `changed` is false when nothing had to be sent.
 */
export async function pushArtifact(
  client: OciClient,
  target: OciRepository,
  bundle: Pick<PublishedBundle, 'name' | 'revision' | 'bytes'>,
  movingTag: string,
  signal?: AbortSignal,
): Promise<{ digest: string; uploadedBytes: number; changed: boolean }> {
  const repo = target.name;
  const artifact = bundleArtifact(bundle.name, bundle.revision, bundle.bytes);
  let uploadedBytes = 0;
  let changed = false;
  const upload = async (blob: Blob): Promise<void> => {
    if (await client.hasBlob(repo, blob.digest, signal)) return;
    await client.putBlob(repo, blob.digest, blob.bytes, signal);
    uploadedBytes += blob.bytes.length;
    changed = true;
  };
  await upload(artifact.config);
  await upload(artifact.layer);
  const digest = artifact.manifest.digest;
  for (const tag of [bundle.revision, movingTag]) {
    if ((await client.manifestDigest(repo, tag, MANIFEST_MEDIA_TYPE, signal)) === digest) continue;
    await client.putManifest(repo, tag, MANIFEST_MEDIA_TYPE, artifact.manifest.bytes, signal);
    uploadedBytes += artifact.manifest.bytes.length;
    changed = true;
  }
  return { digest, uploadedBytes, changed };
}

/** A bundle whose name gives no valid repository: reported, not retried until it is published again. */
class OciPushRefused extends PermanentError {
  constructor(message: string) {
    super('invalid_oci_reference', message);
  }
}
