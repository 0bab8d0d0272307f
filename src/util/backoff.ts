// The one backoff helper: exponential delays between min and max, with jitter, reset on success.
// The clock (random source) is injectable so tests can assert the exact delays.

export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  factor?: number;
  /** Fraction of the delay added at random: 0.2 means up to +20 %. */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(private readonly options: BackoffOptions) {
    if (options.minMs <= 0 || options.maxMs < options.minMs) {
      throw new RangeError(`backoff needs 0 < min <= max, got min ${options.minMs} max ${options.maxMs}`);
    }
    this.factor = options.factor ?? 2;
    this.jitter = options.jitter ?? 0.2;
    this.random = options.random ?? Math.random;
  }

  /** The delay before the next attempt; each call moves one step up, to at most maxMs (+ jitter). */
  next(): number {
    const base = Math.min(this.options.maxMs, this.options.minMs * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.round(base * (1 + this.jitter * this.random()));
  }

  /** Back to the first step, after a success. */
  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
