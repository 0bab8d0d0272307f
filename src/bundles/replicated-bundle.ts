// The data bundle of --bundle-replicated=NAME: the replicated Kubernetes collections as a data-only
// OPA bundle, in the layout the sidecar pushes (`data.<replicate-path>.<resource>.<namespace>.<name>`,
// an empty collection as `{}`), with one root per collection, so that an OPA outside the cluster that
// pulls it holds exactly the `data.kubernetes.networkpolicies` a pushed OPA holds, and the roots never
// overlap a policy bundle's (`kubernetes/admission`). Each object is a `data.json` of its own, so a
// rebuild after one change encodes and compresses only that object (the BundleBuilder's caches) and
// large collections stay cheap. Changes that arrive during a build are built together in the next one,
// after a short coalescing window; the first build waits for every source to have listed. With deltas
// on, each revision also carries the delta bundles from the last few revisions (delta.ts).
import type { Part } from '../lifecycle/part.js';
import { Wake } from '../lifecycle/wake.js';
import type { DesiredState } from '../model/desired-state.js';
import { sleep } from '../util/backoff.js';
import { OpaSyncError, isSystemError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { jsonPointer } from '../opa/client.js';
import { BundleBuilder, type BundleDocument } from './build.js';
import { DeltaHistory, type SnapshotDocument } from './delta.js';
import type { BundleRegistry } from './registry.js';
import type { SigningOptions } from './signing-key.js';
import { writeBundleFile } from './bundles-dir.js';

export interface ReplicatedBundleOptions {
  state: DesiredState;
  registry: BundleRegistry;
  /** The bundle's name (--bundle-replicated). */
  name: string;
  logger: Logger;
  signing?: SigningOptions | undefined;
  /** Also write `<dir>/<name>.tar.gz`. */
  dir?: string | undefined;
  /** Called after a new revision was published (fleet gauges, OCI). */
  onPublished?: () => void;
  /** Changes this close together go into one build (default 50 ms). */
  windowMs?: number;
  /** Offer delta bundles from the last revisions (--bundle-deltas; never with signing). */
  deltas?: boolean | undefined;
}

/** The value of an empty collection: one object, so that an unchanged empty collection is no change. */
const EMPTY_COLLECTION = Object.freeze({});

export class ReplicatedBundlePublisher implements Part {
  readonly name = 'replicated-bundle';
  /** Every build reads the whole desired state: a restart loses nothing. */
  readonly onFailure = 'restart';
  private readonly wake = new Wake();
  private readonly builder = new BundleBuilder();
  private dirty = true;
  private published = false;
  private readonly history: DeltaHistory | undefined;

  constructor(private readonly options: ReplicatedBundleOptions) {
    this.history = options.deltas === true && options.signing === undefined ? new DeltaHistory() : undefined;
  }

  ready(): boolean {
    return this.published;
  }

  async run(signal: AbortSignal): Promise<void> {
    this.dirty = true;
    const unsubscribe = this.options.state.subscribe((change) => {
      if (change.kind === 'entry' || change.kind === 'collection') this.dirty = true;
      if (change.kind !== 'origin') this.wake.wake();
    });
    try {
      while (!signal.aborted) {
        if (!this.dirty || !this.options.state.sourcesSynced()) {
          await this.wake.wait(signal);
          continue;
        }
        await sleep(this.options.windowMs ?? 50, signal).catch(() => undefined);
        if (signal.aborted) break;
        this.dirty = false;
        try {
          await this.rebuild();
        } catch (err) {
          if (!(err instanceof OpaSyncError) && !isSystemError(err)) throw err;
          this.options.logger.error(
            { bundle: this.options.name, err: messageOf(err) },
            'replicated data bundle build failed; serving the previous one',
          );
          this.dirty = true;
          await sleep(5000, signal).catch(() => undefined);
        }
      }
    } finally {
      unsubscribe();
    }
  }

  /** Builds the bundle from the synced collections and publishes it if its content changed. */
  async rebuild(): Promise<void> {
    const { state } = this.options;
    const documents: BundleDocument[] = [];
    const snapshotDocs = new Map<string, SnapshotDocument>();
    const roots: string[] = [];
    const add = (docPath: readonly string[], value: unknown, rootLength: number): void => {
      documents.push({ path: docPath, value });
      if (this.history !== undefined)
        snapshotDocs.set(jsonPointer(docPath), { path: docPath, value, rootLength });
    };
    for (const key of state.collectionKeys()) {
      const collection = state.collection(key);
      if (collection === undefined || !collection.synced) continue;
      roots.push(collection.path.join('/'));
      if (collection.entries.size === 0) {
        add(collection.path, EMPTY_COLLECTION, collection.path.length);
        continue;
      }
      for (const entry of collection.entries.values()) {
        add([...collection.path, ...entry.entryPath], entry.value, collection.path.length);
      }
    }
    const built = await this.builder.build({ modules: [], documents, roots, signing: this.options.signing });
    this.published = true;
    const name = this.options.name;
    if (this.options.registry.get(name)?.etag === built.etag) return;
    const deltas =
      this.history === undefined
        ? undefined
        : await this.history.add(
            { etag: built.etag, revision: built.revision, roots: [...roots].sort(), documents: snapshotDocs },
            built.bytes.length,
          );
    this.options.registry.publish({
      name,
      bytes: built.bytes,
      etag: built.etag,
      revision: built.revision,
      deltas,
    });
    this.options.logger.info(
      { bundle: name, revision: built.revision, bytes: built.bytes.length, objects: documents.length },
      'replicated data bundle published',
    );
    this.options.onPublished?.();
    if (this.options.dir !== undefined) await writeBundleFile(this.options.dir, name, built.bytes);
  }
}
