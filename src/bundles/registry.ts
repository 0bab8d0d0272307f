// What the bundle server publishes, by bundle name, in memory: the builder puts finished bundles here,
// the HTTP server reads them, and long polls wait here (woken by a publish, never by polling) for a new
// ETag. A waiter is an object of the caller's in a set per name: adding one allocates nothing of its
// own, so that 10,000 held polls cost 10,000 set entries and no timers, signals or promises here.
import { InvalidInputError } from '../util/errors.js';
import { bundleNameProblem } from '../util/safe-names.js';

export interface PublishedBundle {
  /** The bundle's name (`bundleNameProblem`'s rule); OPA's default resource is `bundles/<name>`. May hold '/'. */
  name: string;
  /** The gzip'd tarball, served as it is. */
  bytes: Buffer;
  /** A quoted, strong ETag derived from the content (the same on every replica). */
  etag: string;
  revision: string;
  /**
   * Delta bundles to this revision, by the ETag (the earlier revision) each applies to: sent instead of
   * `bytes` to a client that asks for deltas and names that ETag (only the replicated data bundle has them).
   */
  deltas?: ReadonlyMap<string, Buffer> | undefined;
}

/** Something waiting for a bundle's ETag to change: a held long poll, or a waitForChange(). */
export interface BundleWaiter {
  /** The ETag it has; a publish of any other wakes it. */
  readonly etag: string;
  /**
   * Called once, synchronously inside publish(), after the waiter was removed. It must be cheap (a
   * publish wakes every waiter of the name in one loop) and must not throw.
   */
  wake(bundle: PublishedBundle): void;
}

export class BundleRegistry {
  private readonly bundles = new Map<string, PublishedBundle>();
  private readonly waiters = new Map<string, Set<BundleWaiter>>();
  private built = false;

  /**
   * Publishes (or replaces) a bundle. Long polls waiting on the name wake only if the ETag changed:
   * a rebuild that produced the same bytes must not make every OPA download again.
   * Throws InvalidInputError for a name that fails `bundleNameProblem` (the rule requests are checked
   * with, so that whatever is published can be fetched) or an ETag that is not quoted.
   */
  publish(bundle: PublishedBundle): void {
    const problem = bundleNameProblem(bundle.name);
    if (problem !== undefined) throw new InvalidInputError('invalid_bundle_name', problem);
    if (!/^"[^"]*"$/.test(bundle.etag)) {
      throw new InvalidInputError(
        'invalid_etag',
        `cannot publish bundle ${JSON.stringify(bundle.name)}: the ETag ${JSON.stringify(bundle.etag)} is not a quoted string`,
      );
    }
    const previous = this.bundles.get(bundle.name);
    this.bundles.set(bundle.name, bundle);
    if (previous?.etag === bundle.etag) return;
    const waiting = this.waiters.get(bundle.name);
    if (waiting === undefined) return;
    // Deleting the entry being visited is safe in a Set's iteration; a waiter added meanwhile (for the
    // new ETag) is visited too, and stays.
    for (const waiter of waiting) {
      if (waiter.etag === bundle.etag) continue;
      waiting.delete(waiter);
      waiter.wake(bundle);
    }
    if (waiting.size === 0 && this.waiters.get(bundle.name) === waiting) this.waiters.delete(bundle.name);
  }

  /**
   * Adds a waiter on `name` (which need not be published yet): woken by the first publish of another
   * ETag than `waiter.etag`. The caller checks the current ETag first; removeWaiter() ends the wait.
   */
  addWaiter(name: string, waiter: BundleWaiter): void {
    let set = this.waiters.get(name);
    if (set === undefined) {
      set = new Set();
      this.waiters.set(name, set);
    }
    set.add(waiter);
  }

  /** Ends a wait that was not woken; false when the waiter was not waiting (already woken or removed). */
  removeWaiter(name: string, waiter: BundleWaiter): boolean {
    const set = this.waiters.get(name);
    if (set === undefined || !set.delete(waiter)) return false;
    if (set.size === 0) this.waiters.delete(name);
    return true;
  }

  get(name: string): PublishedBundle | undefined {
    return this.bundles.get(name);
  }

  /** The published names, sorted. */
  names(): string[] {
    return [...this.bundles.keys()].sort();
  }

  /** Called once every bundle has been built for the first time; until then the server answers 503. */
  markBuilt(): void {
    this.built = true;
  }

  isBuilt(): boolean {
    return this.built;
  }

  /** Long polls currently waiting, on one name or on all; for metrics and tests. */
  waiterCount(name?: string): number {
    if (name !== undefined) return this.waiters.get(name)?.size ?? 0;
    let total = 0;
    for (const set of this.waiters.values()) total += set.size;
    return total;
  }

  /**
   * Resolves with the bundle once its ETag differs from `etag` (at once if it already does), or with
   * undefined after `timeoutMs` or when `signal` aborts. Never rejects. The waiter is removed on every
   * path, so an abandoned wait holds no memory and no timer.
   */
  waitForChange(
    name: string,
    etag: string,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<PublishedBundle | undefined> {
    const current = this.bundles.get(name);
    if (current !== undefined && current.etag !== etag) return Promise.resolve(current);
    if (signal.aborted) return Promise.resolve(undefined);
    // A NaN or infinite timeout would hold a request forever: clamp into a bounded range.
    const delay = Number.isFinite(timeoutMs) ? Math.max(0, Math.min(timeoutMs, 2_147_483_647)) : 0;
    return new Promise((resolve) => {
      const finish = (result: PublishedBundle | undefined): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (result === undefined) this.removeWaiter(name, waiter);
        resolve(result);
      };
      const onAbort = (): void => finish(undefined);
      const waiter: BundleWaiter = { etag, wake: (bundle) => finish(bundle) };
      const timer = setTimeout(() => finish(undefined), delay);
      signal.addEventListener('abort', onAbort, { once: true });
      this.addWaiter(name, waiter);
    });
  }
}
