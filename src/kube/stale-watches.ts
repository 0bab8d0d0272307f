// The watches of one source that are stale: they heard nothing from the API server for longer than
// the idle timeout and are not listed and watching again yet, so what they delivered may be out of
// date. The source is not ready meanwhile, and /ready says which watch and since when. Each time a
// watch goes stale is logged once (warn), and its return once (info).
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

export class StaleWatches {
  private readonly stale = new Map<string, Date>();

  constructor(private readonly log: Logger) {}

  /** `watch` (e.g. `policy ConfigMaps of opa`) heard nothing since `since`; `err` ended it. */
  mark(watch: string, since: Date, err: unknown): void {
    this.stale.set(watch, since);
    this.log.warn(
      { watch, since: since.toISOString(), err: messageOf(err) },
      `the watch of ${watch} has heard nothing from the API server since ${since.toISOString()}: reconnecting; not ready until it is back`,
    );
  }

  /** `watch` is listed and watching again. */
  clear(watch: string): void {
    const since = this.stale.get(watch);
    if (since === undefined) return;
    this.stale.delete(watch);
    this.log.info(
      { watch, staleMs: Date.now() - since.getTime() },
      `the watch of ${watch} is back: listed and watching again`,
    );
  }

  get size(): number {
    return this.stale.size;
  }

  /** One line per stale watch, for /ready. */
  reasons(now = Date.now()): string[] {
    return [...this.stale].map(
      ([watch, since]) =>
        `the watch of ${watch} has heard nothing from the API server since ${since.toISOString()} (${Math.round((now - since.getTime()) / 1000)} s ago)`,
    );
  }
}
