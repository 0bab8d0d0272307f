// The OPA push sink: makes the OPA next to us hold exactly the desired state, origin by origin (and each
// replicated collection, through collection-sync.ts), and reports each origin's outcome. Level-triggered:
// origins and collections are queued by key and read from the desired state when worked on, so bursts
// coalesce. It heals on its own:
// - a module rejected because something it needs is not loaded yet is retried with backoff, and at once
//   whenever another module loads (dependency order across keys and ConfigMaps);
// - a marker document is checked every resync interval; when it is gone (OPA restarted and lost what we
//   pushed) or OPA is reachable again after a failure, everything is pushed again.
import { randomUUID } from 'node:crypto';
import type { Change, DesiredState, OriginState } from '../model/desired-state.js';
import type { LoadError, Outcome } from '../model/outcome.js';
import { describeOrigin, originKey, type ConfigMapOrigin, type Origin } from '../model/origin.js';
import type { Metrics } from '../http/metrics.js';
import type { Part } from '../lifecycle/part.js';
import { Wake } from '../lifecycle/wake.js';
import { Backoff, sleep, type BackoffOptions } from '../util/backoff.js';
import { OpaSyncError, PermanentError, RetryableError, isAbortError, messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { isPathPrefix } from '../util/paths.js';
import { StillWaiting } from '../util/still-waiting.js';
import { OpaHttpError, type OpaClient, type OpaErrorBody, type ReplayGuard } from './client.js';
import { CollectionSync } from './collection-sync.js';
import { OpaUnavailableError } from './errors.js';
import {
  HeldBackModules,
  RuleIndex,
  loserError,
  parseDefaultConflict,
  parseEvalConflict,
  rulePath,
  winnerError,
  type HeldBack,
} from './rule-conflicts.js';
import { ReplicationConflicts, parseConflicts, type Exclusion } from './replication-conflicts.js';

export type OpaApi = Pick<
  OpaClient,
  'putPolicy' | 'deletePolicy' | 'listPolicyIds' | 'putData' | 'removeData' | 'getData' | 'patchData'
> &
  Partial<Pick<OpaClient, 'connectionsOpened'>>;

/** Where opa-sync keeps its marker in OPA's data: its absence means OPA lost what we pushed. */
export const MARKER_PATH: readonly string[] = ['opa_sync', 'marker'];

export interface PusherOptions {
  client: OpaApi;
  state: DesiredState;
  logger: Logger;
  onOutcome: (outcome: Outcome) => void;
  resyncIntervalMs: number;
  /** OPA's URL, named in the log while OPA cannot be reached; and how often that is said (30 s). */
  target?: string | undefined;
  stillWaitingEveryMs?: number | undefined;
  metrics?: Metrics | undefined;
  retryBackoff?: BackoffOptions;
  /**
   * Policy id prefixes that belong to opa-sync alone (`<namespace>/` of each watched namespace): once the
   * initial load is done, a module under one, shaped `<namespace>/<name>/<key>`, that no origin backs
   * (left by an earlier opa-sync whose OPA did not restart) is removed. None: nothing is looked for.
   */
  ownedPolicyPrefixes?: readonly string[];
  /**
   * Namespaces whose data documents belong to opa-sync alone (each watched namespace, with data
   * ConfigMaps on): once the initial load is done, a subtree `data.<namespace>.<name>` that no origin
   * backs (a data ConfigMap deleted while no opa-sync ran, against an OPA that did not restart) is
   * removed. None: nothing is looked for.
   */
  ownedDataNamespaces?: readonly string[];
}

/** What OPA holds because of one origin, as far as we know. */
interface Applied {
  origin: Origin;
  /** Module text by id; `undefined` when OPA may hold the module but we do not know which text. */
  modules: Map<string, string | undefined>;
  /** JSON text of each document (or `undefined`: unknown), keyed by its path joined with '/'. */
  documents: Map<string, { path: readonly string[]; json: string | undefined }>;
  dataRoot: readonly string[] | undefined;
}

/** Why a module OPA held is not loaded: a module it needs was removed (from `origin`). */
interface UnloadedFor {
  needs: string;
  origin: Origin;
  /** The text that was unloaded: a new text fails, if it does, on its own. */
  text: string;
}

/** Rounds of "unload what OPA names, try the delete again" before a deletion is given up for now. */
const MAX_UNLOAD_ROUNDS = 20;

interface Retry {
  backoff: Backoff;
  timer: NodeJS.Timeout | undefined;
  /** `loadsSucceeded` when the origin was last tried: a later success may unblock it. */
  seenLoads: number;
}

/** What the web page shows of the push into OPA (read-only, made on request). */
export interface OpaPushSnapshot {
  /** OPA's URL, as --opa-url gives it. */
  target: string | undefined;
  reachable: boolean;
  initialLoadDone: boolean;
  /** When the last full push (marker written, everything queued again) happened (ISO 8601). */
  lastFullPushAt: string | undefined;
  /** Restarts of OPA seen (its marker gone), since opa-sync started. */
  restartsDetected: number;
  lastRestartAt: string | undefined;
  /** Origins waiting for a retry (a module OPA refused, e.g. for something not loaded yet), by key. */
  retriesPending: string[];
  /** Origins and collections queued to be pushed. */
  queued: number;
}

/** After a full push nothing OPA holds is known: everything wanted is loaded again, the rest removed. */
function forget(applied: Applied): void {
  for (const id of applied.modules.keys()) applied.modules.set(id, undefined);
  for (const doc of applied.documents.values()) doc.json = undefined;
}

/** The longest policy origins wait for the data they may read (see OpaPusher.pickOrigin). */
const POLICY_HOLD_MAX_MS = 10_000;

const DEFAULT_RETRY: BackoffOptions = { minMs: 1000, maxMs: 60_000, factor: 2, jitter: 0.2 };

export class OpaPusher implements Part {
  // 'opa' in /ready and /health, as before the parts had names of their own.
  readonly name = 'opa';
  /** Level-triggered: a new run() pushes everything again, so a restart heals whatever went wrong. */
  readonly onFailure = 'restart';
  /** Origins to sync, by origin key. */
  private readonly queue = new Set<string>();
  /** Replicated collections to sync, by collection key. */
  private readonly collectionQueue = new Set<string>();
  private readonly applied = new Map<string, Applied>();
  private readonly retries = new Map<string, Retry>();
  /** Modules unloaded because a module they need was removed, by module id. */
  private readonly unloadedFor = new Map<string, UnloadedFor>();
  private readonly log: Logger;
  private readonly markerValue = { instance: randomUUID() };
  private readonly wake = new Wake();
  private fullPushWanted = true;
  private reachable = false;
  private loadsSucceeded = 0;
  private initialLoadDone = false;
  /** Whose turn it is in next(): see there. */
  private collectionTurn = false;

  private readonly collectionSync: CollectionSync;
  /** Replicated objects left out because a loaded policy defines a rule at their path. */
  private readonly conflicts: ReplicationConflicts;
  /** Backoff of collections OPA refuses for another reason, by collection key. */
  private readonly collectionRetries = new Map<string, Retry>();
  /** The rules each loaded module defines (rule-conflicts.ts), and the modules held back by a conflict. */
  private readonly ruleIndex = new RuleIndex();
  private readonly heldBack = new HeldBackModules();

  constructor(private readonly options: PusherOptions) {
    this.log = options.logger;
    this.reconnect = new Backoff({
      minMs: Math.min(250, options.resyncIntervalMs),
      maxMs: options.resyncIntervalMs,
      factor: 2,
      jitter: 0.2,
    });
    this.conflicts = new ReplicationConflicts(options.state);
    this.collectionSync = new CollectionSync(
      this.conflicts.view,
      options.client,
      options.logger,
      options.metrics,
    );
    this.stillWaiting = new StillWaiting(
      options.logger,
      'OPA',
      { url: options.target },
      {
        everyMs: options.stillWaitingEveryMs,
      },
    );
  }

  /** What the web page shows: reachability, the last full push, restarts seen, retries pending. */
  snapshot(): OpaPushSnapshot {
    return {
      target: this.options.target,
      reachable: this.reachable,
      initialLoadDone: this.initialLoadDone,
      lastFullPushAt: this.lastFullPushAt,
      restartsDetected: this.restartsDetected,
      lastRestartAt: this.lastRestartAt,
      retriesPending: [...this.retries.keys()].sort(),
      queued: this.queue.size + this.collectionQueue.size,
    };
  }

  /** True once OPA is reachable and everything the sources held at their initial sync was tried. */
  ready(): boolean {
    return this.reachable && this.initialLoadDone && this.collectionSync.allLoaded();
  }

  /** Runs until the signal aborts; every (re)start begins with a full push. */
  async run(signal: AbortSignal): Promise<void> {
    this.fullPushWanted = true;
    const unsubscribe = this.options.state.subscribe((change) => this.changed(change));
    // The checker ends with this run, whichever way the run ends: a failure here is never held up by it.
    const checking = new AbortController();
    const stopChecking = (): void => checking.abort();
    signal.addEventListener('abort', stopChecking, { once: true });
    const checker = this.checkOpaLoop(checking.signal);
    try {
      while (!signal.aborted) {
        if (this.fullPushWanted) {
          await this.fullPush(signal);
          continue;
        }
        const work = this.next();
        if (work === undefined) {
          if (
            this.options.state.sourcesSynced() &&
            this.reachable &&
            !this.initialLoadDone &&
            this.queue.size === 0
          ) {
            // Once, before the initial load counts as done: what an earlier run left is removed too.
            if (!this.orphansLookedFor) {
              this.orphansLookedFor = true;
              if (await this.queueOrphans(signal)) continue;
            }
            if (!this.orphanDataLookedFor) {
              this.orphanDataLookedFor = true;
              await this.removeOrphanData(signal);
            }
            this.initialLoadDone = true;
            this.log.info({ origins: this.options.state.size }, 'initial load into OPA done');
          }
          if (!this.reachable) this.reportWaitingForOpa();
          await this.wake.wait(signal);
          continue;
        }
        if (work.kind === 'collection') await this.syncCollection(work.key, signal);
        else await this.syncOriginInSameOpa(work.key, signal);
      }
    } catch (err) {
      if (!isAbortError(err) && !signal.aborted) throw err;
    } finally {
      unsubscribe();
      signal.removeEventListener('abort', stopChecking);
      checking.abort();
      for (const retry of this.retries.values()) clearTimeout(retry.timer);
      for (const retry of this.collectionRetries.values()) clearTimeout(retry.timer);
      this.collectionRetries.clear();
      await checker;
    }
  }

  private changed(change: Change): void {
    switch (change.kind) {
      case 'origin':
        if (!this.reachable && this.markerWritten) this.changedWhileUnreachable.add(change.key);
        this.enqueue(change.key);
        return;
      case 'entry':
        this.collectionSync.markDirty(change.collection, change.entryId);
        this.enqueueCollection(change.collection);
        return;
      case 'collection':
        this.enqueueCollection(change.collection);
        return;
      case 'sources-synced':
        this.wake.wake();
        return;
    }
  }

  private enqueue(key: string): void {
    this.queue.add(key);
    this.setQueueDepth();
    this.wake.wake();
  }

  private enqueueCollection(key: string): void {
    this.collectionQueue.add(key);
    this.setQueueDepth();
    this.wake.wake();
  }

  private setQueueDepth(): void {
    this.options.metrics?.queueDepth.set(this.queue.size + this.collectionQueue.size);
  }

  /**
   * The next piece of work. Collections and origins take turns, so that churn of replicated objects never
   * starves policy loads (nor the other way round); after a full push the collections go first.
   */
  private next(): { kind: 'origin' | 'collection'; key: string } | undefined {
    // While OPA is unreachable nothing can load; the checker wakes us when it answers again.
    if (!this.reachable) return undefined;
    this.collectionTurn = !this.collectionTurn;
    const [collection] = this.collectionQueue;
    if (collection !== undefined && (this.collectionTurn || this.queue.size === 0)) {
      this.collectionQueue.delete(collection);
      this.setQueueDepth();
      return { kind: 'collection', key: collection };
    }
    const key = this.nextOrigin();
    if (key !== undefined) return { kind: 'origin', key };
    if (collection === undefined) return undefined;
    this.collectionQueue.delete(collection);
    this.setQueueDepth();
    return { kind: 'collection', key: collection };
  }

  private nextOrigin(): string | undefined {
    if (this.queue.size === 0) this.requeueUnblocked();
    const key = this.pickOrigin();
    if (key === undefined) return undefined;
    this.queue.delete(key);
    this.setQueueDepth();
    return key;
  }

  /**
   * Data before the policies that may read it: a queued data origin goes before every policy origin, and
   * policy origins wait while the sources have not listed everything yet or a replicated collection is
   * not loaded into this OPA (the first load, and after OPA restarted). Otherwise a policy would answer on
   * empty data meanwhile (an admission policy that denies on what it finds would allow everything). The
   * wait is bounded by POLICY_HOLD_MAX_MS: a collection that cannot be listed (RBAC) does not keep every
   * policy out of OPA; /ready stays 503 until it is loaded.
   */
  private pickOrigin(): string | undefined {
    let first: string | undefined;
    for (const key of this.queue) {
      if (key.startsWith('configmap:data:') || key.startsWith('file:data:')) return key;
      first ??= key;
    }
    return first !== undefined && this.policiesMayLoad() ? first : undefined;
  }

  private policiesMayLoad(): boolean {
    const state = this.options.state;
    const waitingFor = state.sourcesSynced() ? [] : ['the sources’ initial lists'];
    if (!this.collectionSync.allLoaded()) {
      for (const key of state.collectionKeys()) {
        if (!this.collectionQueue.has(key) && state.collection(key)?.synced === true) continue;
        waitingFor.push(`collection ${key}`);
      }
      // Loaded-once is the collections' own bookkeeping: one being loaded right now is waited for too.
      if (waitingFor.length === 0) waitingFor.push('the replicated collections');
    }
    if (waitingFor.length === 0) {
      this.policyHold = undefined;
      return true;
    }
    const now = Date.now();
    if (this.policyHold === undefined) {
      this.policyHold = { since: now, warned: false };
      setTimeout(() => this.wake.wake(), POLICY_HOLD_MAX_MS).unref();
    }
    if (now - this.policyHold.since < POLICY_HOLD_MAX_MS) return false;
    if (!this.policyHold.warned) {
      this.policyHold.warned = true;
      this.log.warn(
        { waitingFor, waitedMs: now - this.policyHold.since },
        'loading policies before the data they may read: it is not in OPA yet',
      );
    }
    return true;
  }

  /**
   * Origins that changed while OPA cannot be reached get a status that says so (their last status is
   * about an older version): nothing else waits for OPA to tell the ConfigMap's owner what happens.
   */
  private reportWaitingForOpa(): void {
    for (const key of this.changedWhileUnreachable) {
      const origin = this.options.state.get(key)?.origin;
      if (origin === undefined) continue;
      const why = this.lastUnreachable === undefined ? '' : `: ${this.lastUnreachable}`;
      this.options.onOutcome({
        origin,
        errors: [
          {
            code: 'opa_unreachable',
            message: `not loaded yet: OPA is not reachable${why}; loaded once it answers`,
          },
        ],
      });
    }
    this.changedWhileUnreachable.clear();
  }

  private readonly changedWhileUnreachable = new Set<string>();
  /** The last reason OPA could not be reached. */
  private lastUnreachable: string | undefined;

  /** Since when policy origins wait for data (see pickOrigin), and whether that was said. */
  private policyHold: { since: number; warned: boolean } | undefined;

  /**
   * syncOrigin, only into the OPA that holds opa-sync's marker: when the client opened a new connection
   * since the marker was last seen, OPA may have restarted (empty) on the same address without any call
   * failing; the marker is read first, and if it is gone everything is pushed again (data first) instead
   * of this origin alone. Checked again afterwards when the origin's calls needed a new connection.
   */
  private async syncOriginInSameOpa(key: string, signal: AbortSignal): Promise<void> {
    if (!(await this.sameOpa(key, signal))) return;
    const before = this.options.client.connectionsOpened?.();
    await this.syncOrigin(key, signal);
    if (before !== this.options.client.connectionsOpened?.()) await this.sameOpa(key, signal);
  }

  /** False (and a full push asked for, with `key` in it) when OPA no longer holds the marker. */
  private async sameOpa(key: string, signal: AbortSignal): Promise<boolean> {
    const opened = this.options.client.connectionsOpened?.();
    if (opened === undefined || opened === this.markerSeenOnConnections) return true;
    try {
      const marker = await this.options.client.getData(MARKER_PATH, signal);
      if (marker.defined) {
        this.markerSeenOnConnections = this.options.client.connectionsOpened?.();
        return true;
      }
      this.requestFullPush('OPA lost what opa-sync pushed (restarted?)');
    } catch (err) {
      if (!(err instanceof OpaSyncError)) throw err;
      if (!(err instanceof RetryableError)) {
        // Refused (a 401 after a token rotation, say): the origin's own calls meet it and report it.
        this.log.warn({ err: messageOf(err) }, 'could not read the marker in OPA');
        return true;
      }
      this.lostOpa(err, 'the marker');
    }
    this.queue.add(key);
    return false;
  }

  /**
   * A module goes out on a new connection (none kept alive, or the kept-alive one was reset) only into
   * the OPA that holds the marker; otherwise everything is pushed again, data first.
   */
  private replayGuard(signal: AbortSignal): ReplayGuard {
    return {
      beforeReplay: async () => {
        const marker = await this.options.client.getData(MARKER_PATH, signal);
        if (marker.defined) {
          this.markerSeenOnConnections = this.options.client.connectionsOpened?.();
          return true;
        }
        this.requestFullPush('OPA lost what opa-sync pushed (restarted?)');
        return false;
      },
    };
  }

  /** connectionsOpened() when the marker was last seen in OPA (written, or read back). */
  private markerSeenOnConnections: number | undefined;

  /**
   * Finds the modules OPA holds under opa-sync's own id prefixes that no origin backs, and queues their
   * removal as modules of the ConfigMap they came from (a gone origin is removed like any other, and
   * modules that still need one are unloaded as for any removal). Returns whether any was queued.
   */
  private async queueOrphans(signal: AbortSignal): Promise<boolean> {
    const prefixes = this.options.ownedPolicyPrefixes ?? [];
    if (prefixes.length === 0) return false;
    let ids: string[];
    try {
      ids = await this.options.client.listPolicyIds(signal);
    } catch (err) {
      if (!(err instanceof OpaSyncError)) throw err;
      // Not worth failing the start over: the modules stay, and are looked for at the next start.
      this.log.warn({ err: messageOf(err) }, 'could not list the modules in OPA to remove those left behind');
      return false;
    }
    const backed = new Set<string>();
    for (const applied of this.applied.values()) for (const id of applied.modules.keys()) backed.add(id);
    for (const key of this.options.state.keys()) {
      for (const m of this.options.state.get(key)?.modules ?? []) backed.add(m.id);
    }
    let queued = 0;
    for (const id of ids) {
      const [namespace, name, key, ...more] = id.split('/');
      // Only what a policy ConfigMap of a watched namespace would have made: never anyone else's.
      if (namespace === undefined || name === undefined || key === undefined || more.length > 0) continue;
      if (backed.has(id) || !prefixes.includes(`${namespace}/`) || name === '' || key === '') continue;
      const origin: ConfigMapOrigin = { kind: 'configmap', role: 'policy', namespace, name };
      const originId = originKey(origin);
      const applied = this.applied.get(originId) ?? {
        origin,
        modules: new Map<string, string | undefined>(),
        documents: new Map(),
        dataRoot: undefined,
      };
      applied.modules.set(id, undefined);
      this.applied.set(originId, applied);
      this.queue.add(originId);
      queued += 1;
      this.log.info({ module: id }, 'a module no ConfigMap backs was left in OPA: removing it');
    }
    this.setQueueDepth();
    return queued > 0;
  }

  /**
   * Removes the documents OPA holds at `data.<namespace>.<name>` of an owned namespace that no origin
   * backs: what a data ConfigMap deleted while no opa-sync ran left behind. A name where a policy's rules
   * are (not a document) answers 404 to the removal, which leaves it as it is; one that OPA refuses (a
   * bundle's root) is left too, and said.
   */
  private async removeOrphanData(signal: AbortSignal): Promise<void> {
    const ours = this.ownedDataPaths();
    for (const namespace of this.options.ownedDataNamespaces ?? []) {
      let held: { defined: boolean; value?: unknown };
      try {
        held = await this.options.client.getData([namespace], signal);
      } catch (err) {
        if (!(err instanceof OpaSyncError)) throw err;
        this.log.warn(
          { namespace, err: messageOf(err) },
          'could not read the data in OPA to remove what deleted ConfigMaps left behind',
        );
        continue;
      }
      const value = held.value;
      if (!held.defined || value === null || typeof value !== 'object' || Array.isArray(value)) continue;
      for (const name of Object.keys(value).sort()) {
        const subtree = [namespace, name];
        if (ours.some((p) => isPathPrefix(subtree, p) || isPathPrefix(p, subtree))) continue;
        try {
          await this.options.client.removeData(subtree, signal);
          this.log.info({ path: subtree.join('/') }, 'data no ConfigMap backs was left in OPA: removed it');
        } catch (err) {
          if (err instanceof RetryableError) {
            // As for modules left behind: looked for again at the next start.
            this.lostOpa(err, `data ${subtree.join('/')}`);
            return;
          }
          if (!(err instanceof PermanentError)) throw err;
          this.log.warn(
            { path: subtree.join('/'), err: messageOf(err) },
            'data left in OPA could not be removed',
          );
        }
      }
      await this.pruneEmptyParents([namespace, ''], signal);
    }
  }

  private orphanDataLookedFor = false;

  /** Origins that failed before another module loaded may compile now: try them at once. */
  private requeueUnblocked(): void {
    for (const [key, retry] of this.retries) {
      if (retry.seenLoads < this.loadsSucceeded) this.queue.add(key);
    }
  }

  /** Checks the marker every resync interval; asks for a full push when OPA lost it or came back. */
  private async checkOpaLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await sleep(this.options.resyncIntervalMs, signal);
      } catch {
        return;
      }
      if (this.fullPushWanted) continue;
      try {
        const marker = await this.options.client.getData(MARKER_PATH, signal);
        // The full push looks at the marker again and counts the restart (also when OPA was down here).
        if (!marker.defined) this.requestFullPush('OPA lost what opa-sync pushed (restarted?)');
      } catch (err) {
        if (signal.aborted) return;
        if (this.reachable) this.log.warn({ err: messageOf(err) }, 'OPA is not reachable');
        this.reachable = false;
        this.fullPushWanted = true;
        this.wake.wake();
      }
    }
  }

  private requestFullPush(reason: string): void {
    this.log.warn({ reason }, 'pushing everything into OPA again');
    this.fullPushWanted = true;
    this.wake.wake();
  }

  /**
   * Writes the marker, forgets what OPA held, and queues every origin. Once a marker was written, a
   * missing one is a restart of OPA: counted here, whether the checker saw the marker gone or saw OPA
   * down (a restart longer than the check interval) or a call failed meanwhile.
   */
  private async fullPush(signal: AbortSignal): Promise<void> {
    try {
      if (this.markerWritten) {
        const marker = await this.options.client.getData(MARKER_PATH, signal);
        if (!marker.defined) {
          this.log.warn('OPA restarted: it lost what opa-sync pushed');
          this.options.metrics?.opaRestarts.inc();
          this.restartsDetected += 1;
          this.lastRestartAt = new Date().toISOString();
        }
      }
      await this.options.client.putData(MARKER_PATH, this.markerValue, signal);
      this.markerWritten = true;
    } catch (err) {
      if (signal.aborted) return;
      const retryInMs = this.reconnect.next();
      this.lastUnreachable = messageOf(err);
      if (this.reachable || !this.fullPushWarned) {
        this.log.warn({ err: messageOf(err), retryInMs }, 'OPA is not reachable');
        this.fullPushWarned = true;
      }
      this.stillWaiting.failed(err);
      this.reachable = false;
      this.reportWaitingForOpa();
      // The checker loop only watches the marker once a full push has happened: wait here instead.
      await sleep(retryInMs, signal).catch(() => undefined);
      return;
    }
    this.fullPushWarned = false;
    this.reconnect.reset();
    this.changedWhileUnreachable.clear();
    this.markerSeenOnConnections = this.options.client.connectionsOpened?.();
    this.stillWaiting.reached();
    this.reachable = true;
    this.fullPushWanted = false;
    this.collectionTurn = false;
    this.lastFullPushAt = new Date().toISOString();
    // OPA may have lost anything (restart) or nothing (a network hiccup): load everything wanted again,
    // and still remove what is no longer wanted.
    for (const applied of this.applied.values()) forget(applied);
    // Conflicts with modules that are not opa-sync's are found again if those are still there.
    this.conflicts.releaseForeign((id) => this.ownerOf(id) !== undefined);
    this.collectionSync.forgetAll();
    for (const key of this.options.state.collectionKeys()) this.collectionQueue.add(key);
    for (const key of this.options.state.keys()) this.queue.add(key);
    for (const key of this.applied.keys()) this.queue.add(key);
    this.setQueueDepth();
  }

  private fullPushWarned = false;
  /**
   * Between attempts to reach OPA again: from a quarter second (a restarted OPA answers within one) up to
   * the resync interval, so that a restart heals in well under it and a long outage costs little.
   */
  private readonly reconnect: Backoff;
  private lastFullPushAt: string | undefined;
  private restartsDetected = 0;
  private lastRestartAt: string | undefined;
  private readonly stillWaiting: StillWaiting;
  private orphansLookedFor = false;
  /** True once the marker was written into this OPA: from then on its absence means OPA restarted. */
  private markerWritten = false;

  private async syncCollection(key: string, signal: AbortSignal): Promise<void> {
    try {
      if (await this.collectionSync.sync(key, signal)) this.enqueueCollection(key);
      const retry = this.collectionRetries.get(key);
      if (retry !== undefined && retry.timer === undefined) this.collectionRetries.delete(key);
    } catch (err) {
      if (err instanceof RetryableError) {
        this.lostOpa(err, `collection ${key}`);
        return;
      }
      if (!(err instanceof PermanentError)) throw err;
      // A policy defines a rule where objects of it go: those are left out, the rest is loaded now.
      if (err instanceof OpaHttpError && this.excludeConflicts(err.body)) {
        this.enqueueCollection(key);
        return;
      }
      // Refused for a reason of OPA's own: logged and counted, tried again with backoff, and nothing
      // else waits for it (the other collections and every origin go on).
      this.options.metrics?.loadErrors.inc({
        code: err instanceof OpaHttpError ? err.body.code : err.code,
      });
      const retry = this.collectionRetries.get(key) ?? {
        backoff: new Backoff(this.options.retryBackoff ?? DEFAULT_RETRY),
        timer: undefined,
        seenLoads: 0,
      };
      this.collectionRetries.set(key, retry);
      clearTimeout(retry.timer);
      const delay = retry.backoff.next();
      this.log.warn(
        { collection: key, err: err.message, retryInMs: delay },
        'OPA refused a replicated collection',
      );
      retry.timer = setTimeout(() => {
        retry.timer = undefined;
        if (!signal.aborted) this.enqueueCollection(key);
      }, delay);
      retry.timer.unref();
    } finally {
      this.updateConflictGauge(key);
    }
  }

  /**
   * Leaves out of their collection the objects at the data paths where OPA's refusal says a rule is
   * defined, and has the policy's origin report it. Returns whether anything new was left out.
   */
  private excludeConflicts(body: OpaErrorBody, only?: { moduleId: string; text: string }): boolean {
    let added = false;
    for (const conflict of parseConflicts(body)) {
      if (only !== undefined && conflict.moduleId !== only.moduleId) continue;
      const where = this.conflicts.locate(conflict.path);
      if (where === undefined) continue;
      const owner = this.ownerOf(conflict.moduleId);
      const exclusion: Exclusion = {
        ...where,
        moduleId: conflict.moduleId,
        text: only?.text ?? owner?.applied.modules.get(conflict.moduleId),
      };
      if (!this.conflicts.add(exclusion)) continue;
      added = true;
      const ids = this.conflicts.idsUnder(where.collection, where.relPath);
      // Objects OPA holds there are removed by the next patch of the collection.
      for (const id of ids) this.collectionSync.markDirty(where.collection, id);
      this.enqueueCollection(where.collection);
      this.updateConflictGauge(where.collection);
      this.log.warn(
        {
          module: conflict.moduleId,
          path: conflict.path.join('/'),
          collection: where.collection,
          objects: ids.length,
        },
        'a policy defines a rule where replicated objects go: those objects are left out while it does',
      );
      if (owner !== undefined && only === undefined) this.enqueue(owner.key);
    }
    return added;
  }

  /** The objects a module kept out are replicated again (it was removed, or changed). */
  private releaseConflicts(released: readonly Exclusion[]): void {
    for (const x of released) {
      for (const id of this.conflicts.idsUnder(x.collection, x.relPath))
        this.collectionSync.markDirty(x.collection, id);
      this.enqueueCollection(x.collection);
      this.updateConflictGauge(x.collection);
    }
  }

  private updateConflictGauge(collection: string): void {
    this.options.metrics?.replicationConflicts.set({ collection }, this.conflicts.excludedCount(collection));
  }

  /** A collection synced at once (e.g. to take objects out of OPA's way before a policy loads). */
  private async syncCollectionNow(key: string, signal: AbortSignal): Promise<void> {
    for (let round = 0; round < 3; round += 1) {
      if (!(await this.collectionSync.sync(key, signal))) return;
    }
  }

  /** The status error of a module that keeps replicated objects out. */
  private conflictError(x: Exclusion): LoadError {
    const path = [...(this.options.state.collection(x.collection)?.path ?? []), ...x.relPath];
    const count = this.conflicts.idsUnder(x.collection, x.relPath).length;
    return {
      code: 'replicated_data_conflict',
      message:
        `module ${x.moduleId} defines a rule at data.${path.join('.')}, where the replicated ${x.collection} ` +
        `objects go: they are left out of OPA's data while it does (${count} now)`,
    };
  }

  /** OPA went away mid-way: the checker brings everything back once it answers. */
  private lostOpa(err: RetryableError, what: string): void {
    this.lastUnreachable = err.message;
    this.reachable = false;
    this.fullPushWanted = true;
    this.log.warn({ target: what, err: err.message }, 'OPA is not reachable');
  }

  /** Makes OPA match one origin's desired state, then reports the outcome. */
  private async syncOrigin(key: string, signal: AbortSignal): Promise<void> {
    const desired = this.options.state.get(key);
    const prev = this.applied.get(key);
    if (desired === undefined && prev === undefined) return;
    const origin = desired?.origin ?? (prev as Applied).origin;
    const applied: Applied = prev ?? {
      origin,
      modules: new Map(),
      documents: new Map(),
      dataRoot: desired?.dataRoot,
    };
    this.applied.set(key, applied);
    // The subtree removed with the origin is the one its current version owns (none: each document).
    if (desired !== undefined) applied.dataRoot = desired.dataRoot;

    const errors: LoadError[] = [];
    let pending = false;
    try {
      for (const problem of desired?.problems ?? []) {
        errors.push({ code: problem.code, message: problem.message });
        this.options.metrics?.loadErrors.inc({ code: problem.code });
      }
      pending = (await this.syncModules(applied, desired, errors, signal)) || pending;
      pending = (await this.syncData(applied, desired, errors, signal)) || pending;
      for (const m of desired?.modules ?? []) {
        for (const x of this.conflicts.ofModule(m.id)) {
          errors.push(this.conflictError(x));
          this.options.metrics?.loadErrors.inc({ code: 'replicated_data_conflict' });
        }
      }
      errors.push(...this.ruleConflictsOf(key, desired));
    } catch (err) {
      if (!(err instanceof RetryableError)) throw err;
      // OPA went away mid-way: report it, and let the checker bring everything back when it answers.
      errors.push({ code: err.code, message: err.message });
      this.options.metrics?.loadErrors.inc({ code: err.code });
      this.lostOpa(err, describeOrigin(origin));
    }

    if (desired === undefined && applied.modules.size === 0 && applied.documents.size === 0 && !pending) {
      this.applied.delete(key);
    }
    this.scheduleRetry(key, pending, signal);
    if (desired !== undefined) {
      if (errors.length > 0) {
        this.log.warn({ origin: describeOrigin(origin), errors }, 'loaded with errors');
      } else {
        this.log.info({ origin: describeOrigin(origin), role: origin.role }, 'loaded');
      }
      this.options.onOutcome({ origin, errors });
    } else if (errors.length > 0) {
      this.log.warn(
        { origin: describeOrigin(origin), errors },
        'could not remove everything of a deleted origin',
      );
    }
  }

  /** Loads changed modules in id order and deletes the ones that are gone. Returns true if any is pending. */
  private async syncModules(
    applied: Applied,
    desired: OriginState | undefined,
    errors: LoadError[],
    signal: AbortSignal,
  ): Promise<boolean> {
    let pending = false;
    const wanted = new Map((desired?.modules ?? []).map((m) => [m.id, m.text]));
    const load = async (ids: readonly string[]): Promise<void> => {
      for (const id of ids) {
        const text = wanted.get(id) as string;
        if (applied.modules.get(id) === text) continue;
        if (this.stillHeldBack(id, text, errors)) continue;
        let failure = await this.attempt('policy', errors, () =>
          this.options.client.putPolicy(id, text, signal, this.replayGuard(signal)),
        );
        // Replicated objects where the module defines a rule: taken out of its way, and it is loaded.
        if (failure instanceof OpaHttpError && this.excludeConflicts(failure.body, { moduleId: id, text })) {
          errors.pop();
          for (const key of this.options.state.collectionKeys()) {
            if (this.conflicts.ofModule(id).some((x) => x.collection === key))
              await this.syncCollectionNow(key, signal);
          }
          failure = await this.attempt('policy', errors, () =>
            this.options.client.putPolicy(id, text, signal, this.replayGuard(signal)),
          );
        }
        if (failure instanceof OpaHttpError)
          failure = await this.settleDefaultConflict(id, text, failure, applied, errors, signal);
        // After a failed load OPA keeps the previous text, if any: which one is not known for sure.
        applied.modules.set(id, failure === undefined ? text : undefined);
        if (failure === undefined) {
          this.loaded(id, text);
          await this.settleValueConflicts(id, errors, signal);
          this.loadsSucceeded += 1;
          this.unloadedFor.delete(id);
          // Another text may no longer define the rules that kept objects out.
          this.releaseConflicts(this.conflicts.release(id, text));
          // Those unloaded for want of this one now fail (if they do) for reasons of their own.
          for (const [dependent, why] of this.unloadedFor)
            if (why.needs === id) this.unloadedFor.delete(dependent);
          continue;
        }
        // Held back by a conflicting rule: tried again when that changes, not with backoff.
        if (this.heldBack.of(id) !== undefined) continue;
        pending = true;
        const why = this.unloadedFor.get(id);
        if (why !== undefined && why.text !== text) this.unloadedFor.delete(id);
        else if (why !== undefined) errors.push(this.dependencyRemovedError(id, why, errors.pop()));
      }
    };
    await load([...wanted.keys()].sort());
    for (const id of [...applied.modules.keys()].sort()) {
      if (wanted.has(id)) continue;
      this.unloadedFor.delete(id);
      if (!(await this.removeModule(id, applied, errors, signal, new Set()))) pending = true;
    }
    // Modules of this origin unloaded because a removed one needs them: tried again at once, so that
    // this outcome already says why they are not loaded.
    const unloaded = [...wanted.keys()]
      .filter((id) => !applied.modules.has(id) && this.heldBack.of(id) === undefined)
      .sort();
    if (unloaded.length > 0) await load(unloaded);
    return pending;
  }

  /**
   * Deletes a module from OPA. OPA refuses to delete one that other loaded modules still need (they
   * would no longer compile, and its error names them): those of opa-sync's are unloaded first (each
   * the same way), then the module is deleted. A dependent that is still wanted is marked as unloaded
   * for want of it, its origin is synced again (its status then says why), and it loads again as soon as
   * the module is back. Returns whether the module is gone.
   */
  private async removeModule(
    id: string,
    owner: Applied,
    errors: LoadError[],
    signal: AbortSignal,
    visiting: Set<string>,
  ): Promise<boolean> {
    visiting.add(id);
    // Each round unloads the dependents OPA named (it names at most its error limit at a time).
    for (let round = 0; round < MAX_UNLOAD_ROUNDS; round += 1) {
      const refusal: LoadError[] = [];
      const failure = await this.attempt('policy', refusal, () =>
        this.options.client.deletePolicy(id, signal),
      );
      if (failure === undefined) {
        owner.modules.delete(id);
        this.loadsSucceeded += 1;
        this.releaseConflicts(this.conflicts.release(id));
        this.ruleIndex.remove(id);
        this.releaseHeldBack(this.heldBack.release(id));
        return true;
      }
      const dependents = failure instanceof OpaHttpError ? this.dependentsIn(failure, id, visiting) : [];
      if (dependents.length === 0) {
        errors.push(...refusal);
        return false;
      }
      for (const dependent of dependents) {
        const found = this.ownerOf(dependent);
        const heldText = found?.applied.modules.get(dependent);
        if (
          found === undefined ||
          !(await this.removeModule(dependent, found.applied, errors, signal, visiting))
        ) {
          errors.push(...refusal);
          return false;
        }
        const wanted = this.options.state.get(found.key)?.modules.find((m) => m.id === dependent);
        if (wanted !== undefined) {
          // Only a module loaded as wanted is unloaded for want of this one: one whose wanted text had
          // failed already (OPA held an older one) goes on reporting its own error.
          if (heldText === wanted.text)
            this.unloadedFor.set(dependent, { needs: id, origin: owner.origin, text: wanted.text });
          this.log.warn(
            { module: dependent, needs: id, origin: describeOrigin(found.applied.origin) },
            'unloaded a module: a module it needs is being removed',
          );
          if (found.applied !== owner) this.enqueue(found.key);
        }
      }
    }
    errors.push({
      code: 'opa_refused',
      message: `module ${id} could not be deleted: too many modules need it`,
    });
    return false;
  }

  /** The modules of opa-sync's that OPA's refusal to delete `id` says no longer compile without it. */
  private dependentsIn(refusal: OpaHttpError, id: string, visiting: ReadonlySet<string>): string[] {
    const files = new Set<string>();
    for (const e of refusal.body.errors ?? []) {
      const file = (e as { location?: { file?: unknown } } | null)?.location?.file;
      if (typeof file === 'string' && file !== id && !visiting.has(file)) files.add(file);
    }
    // One OPA does not manage opa-sync's: nothing of it is unloaded, the deletion stays refused.
    const ours = [...files].filter((file) => this.ownerOf(file) !== undefined);
    return ours.length === files.size ? [...ours].sort() : [];
  }

  /** The origin whose modules include `id`, as far as OPA holds them for us. */
  private ownerOf(id: string): { key: string; applied: Applied } | undefined {
    for (const [key, applied] of this.applied) if (applied.modules.has(id)) return { key, applied };
    return undefined;
  }

  /** The status error of a module unloaded for want of another, with OPA's own error inside. */
  private dependencyRemovedError(id: string, why: UnloadedFor, opaError: LoadError | undefined): LoadError {
    const upstream = this.unloadedFor.get(why.needs);
    const which =
      upstream === undefined
        ? 'which was removed'
        : `which is unloaded too (it needs module ${upstream.needs}, which was removed)`;
    const message =
      `module ${id} was unloaded: it needs module ${why.needs} (of ${describeOrigin(why.origin)}), ` +
      `${which}; it is loaded again once that is back`;
    const inner = opaError?.errors ?? (opaError === undefined ? undefined : [opaError]);
    return inner === undefined
      ? { code: 'dependency_removed', message }
      : { code: 'dependency_removed', message, errors: inner };
  }

  /** PUTs changed documents and removes exactly the paths that are gone. Returns true if any is pending. */
  private async syncData(
    applied: Applied,
    desired: OriginState | undefined,
    errors: LoadError[],
    signal: AbortSignal,
  ): Promise<boolean> {
    let pending = false;
    if (desired === undefined) {
      // The origin is gone: remove its own subtree in one call, or each document it had.
      const root = applied.dataRoot;
      if (root !== undefined) {
        if (await this.call('data', errors, () => this.options.client.removeData(root, signal))) {
          applied.documents.clear();
          applied.dataRoot = undefined;
          await this.pruneEmptyParents(root, signal);
          return false;
        }
        return true;
      }
    }
    const wanted = new Map((desired?.documents ?? []).map((d) => [d.path.join('/'), d]));
    for (const [pathKey, doc] of [...wanted].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const json = JSON.stringify(doc.value);
      if (applied.documents.get(pathKey)?.json === json) continue;
      const ok = await this.call('data', errors, () =>
        this.options.client.putData(doc.path, doc.value, signal),
      );
      applied.documents.set(pathKey, { path: doc.path, json: ok ? json : undefined });
      if (!ok) pending = true;
    }
    for (const [pathKey, doc] of [...applied.documents]) {
      if (wanted.has(pathKey)) continue;
      if (await this.call('data', errors, () => this.options.client.removeData(doc.path, signal))) {
        applied.documents.delete(pathKey);
        await this.pruneEmptyParents(doc.path, signal);
      } else {
        pending = true;
      }
    }
    return pending;
  }

  /**
   * After `removed` was removed from OPA: removes each parent of it that is left as an empty object
   * (`data.<ns>: {}` after the last data ConfigMap of a namespace), up to the first segment, never the
   * data root. A parent under which opa-sync still has or wants anything is kept without asking OPA; one
   * that OPA shows with anything in it (another owner's data, or a policy's rules) is kept too.
   */
  private async pruneEmptyParents(removed: readonly string[], signal: AbortSignal): Promise<void> {
    const ours = this.ownedDataPaths();
    for (let parent = removed.slice(0, -1); parent.length > 0; parent = parent.slice(0, -1)) {
      if (ours.some((p) => isPathPrefix(parent, p) || isPathPrefix(p, parent))) return;
      const { defined, value } = await this.options.client.getData(parent, signal);
      if (!defined) continue;
      if (value === null || typeof value !== 'object' || Object.keys(value).length > 0) return;
      try {
        await this.options.client.removeData(parent, signal);
      } catch (err) {
        if (!(err instanceof PermanentError)) throw err;
        // Someone else's to keep (a bundle root, say): not an error of any origin.
        this.log.debug({ path: parent, err: messageOf(err) }, 'empty parent left in OPA');
        return;
      }
      this.log.debug({ path: parent }, 'removed an empty parent');
    }
  }

  /** The data paths opa-sync holds or wants in OPA: documents, origins' subtrees, collections, marker. */
  private ownedDataPaths(): (readonly string[])[] {
    const paths: (readonly string[])[] = [MARKER_PATH];
    for (const applied of this.applied.values()) {
      if (applied.dataRoot !== undefined) paths.push(applied.dataRoot);
      for (const doc of applied.documents.values()) paths.push(doc.path);
    }
    for (const key of this.options.state.keys()) {
      const desired = this.options.state.get(key);
      if (desired?.dataRoot !== undefined) paths.push(desired.dataRoot);
      for (const doc of desired?.documents ?? []) paths.push(doc.path);
    }
    for (const key of this.options.state.collectionKeys()) {
      const collection = this.options.state.collection(key);
      if (collection !== undefined) paths.push(collection.path);
    }
    return paths;
  }

  /**
   * One call to OPA. OPA's 4xx answers become the origin's errors (the call is pending and retried);
   * unavailability is thrown to abort the origin's pass.
   */
  private async call(
    kind: 'policy' | 'data',
    errors: LoadError[],
    fn: () => Promise<void>,
  ): Promise<boolean> {
    return (await this.attempt(kind, errors, fn)) === undefined;
  }

  /** `call`, resolving with the refusal (OPA's or ours) instead of false; undefined when it worked. */
  private async attempt(
    kind: 'policy' | 'data',
    errors: LoadError[],
    fn: () => Promise<void>,
  ): Promise<PermanentError | undefined> {
    const timer = this.options.metrics?.loadDuration.startTimer({ kind });
    try {
      await fn();
      this.options.metrics?.loads.inc({ kind, result: 'ok' });
      return undefined;
    } catch (err) {
      this.options.metrics?.loads.inc({ kind, result: 'error' });
      if (err instanceof OpaHttpError) {
        const body = err.body;
        errors.push(
          body.errors === undefined
            ? { code: body.code, message: body.message }
            : { code: body.code, message: body.message, errors: body.errors },
        );
        this.options.metrics?.loadErrors.inc({ code: body.code });
        return err;
      }
      if (err instanceof PermanentError) {
        // Refused before it was sent (e.g. an id OPA could not take): an error of this key only.
        errors.push({ code: err.code, message: err.message });
        this.options.metrics?.loadErrors.inc({ code: err.code });
        return err;
      }
      throw err;
    } finally {
      timer?.();
    }
  }

  // ---- Rules two modules define differently (rule-conflicts.ts): the module sorting first is kept ----

  /** A module just loaded: what it defines is indexed, and what it held back or was held back by is settled. */
  private loaded(id: string, text: string): void {
    this.ruleIndex.set(id, text);
    const changed = this.heldBack.keptOutBy(id).filter((h) => h.winnerText !== text);
    const own = this.heldBack.of(id);
    for (const h of [...changed, ...(own === undefined ? [] : [own])]) this.heldBack.delete(h.loser);
    this.releaseHeldBack([...changed, ...(own === undefined ? [] : [own])]);
  }

  /** Both sides of released conflicts are synced again: the loser may load now, the statuses change. */
  private releaseHeldBack(released: readonly HeldBack[]): void {
    for (const h of released) {
      this.enqueue(h.loserKey);
      this.enqueue(h.winnerKey);
    }
  }

  /** True (and its status error added) while the module stays held back behind an unchanged winner. */
  private stillHeldBack(id: string, text: string, errors: LoadError[]): boolean {
    const held = this.heldBack.of(id);
    if (held === undefined) return false;
    const winner = this.ownerOf(held.winner);
    if (held.loserText === text && winner?.applied.modules.get(held.winner) === held.winnerText) {
      errors.push(loserError(held));
      return true;
    }
    this.heldBack.delete(id);
    this.enqueue(held.winnerKey);
    return false;
  }

  /** The status errors of an origin's modules that keep another module out. */
  private ruleConflictsOf(key: string, desired: OriginState | undefined): LoadError[] {
    const errors: LoadError[] = [];
    // A held-back module its origin no longer has keeps nothing out any more.
    for (const held of this.heldBack.all()) {
      if (held.loserKey !== key || desired?.modules.some((m) => m.id === held.loser) === true) continue;
      this.heldBack.delete(held.loser);
      this.enqueue(held.winnerKey);
    }
    for (const m of desired?.modules ?? []) {
      for (const held of this.heldBack.keptOutBy(m.id)) {
        if (held.winnerKey !== key) continue;
        errors.push(winnerError(held));
        this.options.metrics?.loadErrors.inc({ code: 'rule_conflict' });
      }
    }
    return errors;
  }

  /** Records that `loser` is held back behind `winner` (both of opa-sync's, loaded or wanted). */
  private holdBack(
    kind: HeldBack['kind'],
    rule: string,
    loser: string,
    winner: string,
    opa: LoadError,
  ): HeldBack {
    const loserOwner = this.ownerOf(loser);
    const winnerOwner = this.ownerOf(winner) as { key: string; applied: Applied };
    const loserKey = loserOwner?.key ?? '';
    const held: HeldBack = {
      kind,
      rule,
      loser,
      loserText: this.options.state.get(loserKey)?.modules.find((m) => m.id === loser)?.text,
      loserKey,
      loserOrigin: loserOwner === undefined ? 'unknown' : describeOrigin(loserOwner.applied.origin),
      winner,
      winnerText: winnerOwner.applied.modules.get(winner),
      winnerKey: winnerOwner.key,
      winnerOrigin: describeOrigin(winnerOwner.applied.origin),
      opaError: opa,
    };
    this.heldBack.add(held);
    this.log.warn(
      { rule, module: loser, keptModule: winner, origin: held.loserOrigin, keptOrigin: held.winnerOrigin },
      'two modules define a rule differently: the one whose id sorts first is kept, the other is not loaded',
    );
    return held;
  }

  /**
   * OPA refused `id` for a second `default` rule of a rule another module of ours defines. The module
   * whose id sorts first wins: if that is `id`, the others are unloaded and `id` is loaded again;
   * otherwise `id` is held back. Returns the load's outcome (undefined: loaded).
   */
  private async settleDefaultConflict(
    id: string,
    text: string,
    failure: OpaHttpError,
    applied: Applied,
    errors: LoadError[],
    signal: AbortSignal,
  ): Promise<PermanentError | undefined> {
    const report = parseDefaultConflict(failure.body);
    if (report === undefined || !report.files.includes(id)) return failure;
    // Its origin owns it from now on, whatever OPA holds of it (as after any failed load).
    if (!applied.modules.has(id)) applied.modules.set(id, undefined);
    const others = report.files.filter((f) => f !== id);
    // A module of someone else's: OPA's error stands as it is.
    if (others.some((f) => this.ownerOf(f) === undefined)) return failure;
    const winner = report.files[0] as string;
    errors.pop();
    if (winner !== id) {
      const held = this.holdBack('default', report.rule, id, winner, report.opaError);
      held.loserText = text;
      errors.push(loserError(held));
      this.enqueue(held.winnerKey);
      return failure;
    }
    for (const loser of others) {
      const owner = this.ownerOf(loser) as { key: string; applied: Applied };
      const held = this.holdBack('default', report.rule, loser, id, report.opaError);
      held.winnerText = text;
      if (!(await this.removeModule(loser, owner.applied, [], signal, new Set()))) {
        this.heldBack.delete(loser);
        errors.push({ code: failure.body.code, message: failure.body.message, errors: [report.opaError] });
        return failure;
      }
      // Removing it released what was recorded of it: recorded again, and its origin says why.
      this.heldBack.add(held);
      this.enqueue(owner.key);
    }
    return this.attempt('policy', errors, () => this.options.client.putPolicy(id, text, signal));
  }

  /**
   * After `id` loaded: each rule it defines that another loaded module of ours defines too is evaluated
   * once; a conflict OPA finds there (it would answer 500 to every query reaching it) is settled by
   * unloading every module of it but the one whose id sorts first.
   */
  private async settleValueConflicts(id: string, errors: LoadError[], signal: AbortSignal): Promise<void> {
    for (const rule of this.ruleIndex.shared(id)) {
      let answer: OpaErrorBody | undefined;
      try {
        await this.options.client.getData(rulePath(rule), signal);
        continue;
      } catch (err) {
        // Refused (a 4xx, a path OPA cannot take): nothing to settle, and nothing of this origin's.
        if (err instanceof PermanentError) {
          this.log.debug({ rule, err: err.message }, 'a rule two modules define could not be evaluated');
          continue;
        }
        // No answer at all: OPA went away, and the origin's pass ends as for any other call.
        if (!(err instanceof OpaUnavailableError) || err.body === undefined) throw err;
        answer = err.body;
      }
      const report = parseEvalConflict(answer);
      if (report === undefined) {
        this.log.debug({ rule, err: answer.message }, 'a rule two modules define fails to evaluate');
        continue;
      }
      if (report.files.some((f) => this.ownerOf(f) === undefined)) {
        this.log.warn(
          { rule: report.rule, modules: report.files },
          'a rule conflicts with a module not of opa-sync',
        );
        continue;
      }
      const [winner, ...losers] = report.files as [string, ...string[]];
      for (const loser of losers) {
        const owner = this.ownerOf(loser) as { key: string; applied: Applied };
        const held = this.holdBack('value', report.rule, loser, winner, report.opaError);
        if (!(await this.removeModule(loser, owner.applied, [], signal, new Set()))) {
          this.heldBack.delete(loser);
          continue;
        }
        this.heldBack.add(held);
        if (loser === id) errors.push(loserError(held));
        else this.enqueue(owner.key);
      }
      if (winner !== id) this.enqueue((this.ownerOf(winner) as { key: string }).key);
    }
  }

  /** Pending work is tried again with backoff; success forgets the retry state. */
  private scheduleRetry(key: string, pending: boolean, signal: AbortSignal): void {
    const existing = this.retries.get(key);
    if (!pending) {
      if (existing !== undefined) {
        clearTimeout(existing.timer);
        this.retries.delete(key);
      }
      return;
    }
    const retry = existing ?? {
      backoff: new Backoff(this.options.retryBackoff ?? DEFAULT_RETRY),
      timer: undefined,
      seenLoads: 0,
    };
    retry.seenLoads = this.loadsSucceeded;
    clearTimeout(retry.timer);
    const delay = retry.backoff.next();
    retry.timer = setTimeout(() => {
      retry.timer = undefined;
      if (!signal.aborted) this.enqueue(key);
    }, delay);
    retry.timer.unref();
    this.retries.set(key, retry);
  }
}
