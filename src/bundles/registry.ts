// What the bundle server publishes, by bundle name, in memory: the builder puts finished bundles here,
// the HTTP server reads them, and long polls wait here (with listeners, never by polling) for a new ETag.
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
}

interface Waiter {
  etag: string;
  wake(bundle: PublishedBundle): void;
}

export class BundleRegistry {
  private readonly bundles = new Map<string, PublishedBundle>();
  private readonly waiters = new Map<string, Set<Waiter>>();
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
    for (const waiter of [...waiting]) {
      if (waiter.etag !== bundle.etag) waiter.wake(bundle);
    }
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
      let set = this.waiters.get(name);
      if (set === undefined) {
        set = new Set();
        this.waiters.set(name, set);
      }
      const waiting = set;
      const finish = (result: PublishedBundle | undefined): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        waiting.delete(waiter);
        if (waiting.size === 0 && this.waiters.get(name) === waiting) this.waiters.delete(name);
        resolve(result);
      };
      const onAbort = (): void => finish(undefined);
      const waiter: Waiter = { etag, wake: (bundle) => finish(bundle) };
      const timer = setTimeout(() => finish(undefined), delay);
      signal.addEventListener('abort', onAbort, { once: true });
      waiting.add(waiter);
    });
  }
}
