// "Skip if unchanged", once: a keyed memo of the last value seen for each key, which says whether a
// new value differs from it. Sources use it not to write the same state again (the folder source's
// saves that change nothing), sinks not to report the same outcome twice, writers not to patch an
// annotation to what it already is. It only remembers; what "the value" is (a fingerprint of what
// matters, a rendered outcome) is the caller's choice, and so is what is skipped.

/**
 * The last value seen for each key.
 *
 * @example
 * // Write a state only when its fingerprint changed since the last write for the same key.
 * const written = new LastValues<string, string>();
 * if (written.changed(key, fingerprint)) state.set(next);
 * // When the key goes away, forget it, so that the next value for it counts as a change.
 * if (written.forget(key)) state.delete(origin);
 *
 * @example
 * // Values compared by a function of your own: here the same object and the same rendering.
 * const reported = new LastValues<string, { state: OriginState; rendered: string }>(
 *   (a, b) => a.state === b.state && a.rendered === b.rendered,
 * );
 * if (reported.changed(key, { state, rendered })) report(outcome);
 */
export class LastValues<K, V> {
  private readonly last = new Map<K, V>();

  /** `equal` says whether two values are the same; by default `Object.is` (strings compare by content). */
  constructor(private readonly equal: (a: V, b: V) => boolean = Object.is) {}

  /**
   * Whether `value` differs from the last value remembered for `key` (true when there is none), and
   * remembers `value` either way. If acting on a change can fail, `forget(key)` on failure, so that
   * the next call with the same value acts again instead of skipping it.
   */
  changed(key: K, value: V): boolean {
    const had = this.last.has(key);
    const previous = this.last.get(key);
    this.last.set(key, value);
    return !had || !this.equal(previous as V, value);
  }

  /**
   * Forgets the key's last value: the next value for it is a change, whatever it is. Returns whether
   * there was one (as `Map.delete`), e.g. to remove from a target only what was written to it.
   */
  forget(key: K): boolean {
    return this.last.delete(key);
  }

  /** The keys with a remembered value, e.g. to forget those whose subject is gone. */
  keys(): IterableIterator<K> {
    return this.last.keys();
  }

  /** Forgets every key (e.g. after the target was reset, so that everything is written again). */
  clear(): void {
    this.last.clear();
  }
}
