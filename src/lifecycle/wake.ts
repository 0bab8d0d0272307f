// The one wait/wake helper of the loops: a level-triggered wake-up that is never lost (a wake() before
// wait() makes the next wait() return at once) and that removes the abort listener it adds, so a loop
// that goes idle a million times leaves nothing on its signal.

/**
 * @example
 * const wake = new Wake();
 * state.subscribe(() => wake.wake());
 * while (!signal.aborted) {
 *   await wake.wait(signal);
 *   work();
 * }
 */
export class Wake {
  private woken = false;
  private waiter: (() => void) | undefined;

  /** Ends the current wait, or the next one if nobody is waiting. */
  wake(): void {
    this.woken = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  /** Resolves on the next wake() (or at once if one came since the last wait) or when `signal` aborts. */
  async wait(signal: AbortSignal): Promise<void> {
    if (!this.woken && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          signal.removeEventListener('abort', done);
          if (this.waiter === done) this.waiter = undefined;
          resolve();
        };
        this.waiter = done;
        signal.addEventListener('abort', done, { once: true });
      });
    }
    this.woken = false;
  }
}

/** Resolves when `signal` aborts (at once if it has); the listener goes with the abort. */
export function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
