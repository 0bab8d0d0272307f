// Held long polls, cheaply enough for 10,000 of them: each is one object (no promise, no timer, no
// AbortController, nothing added to a shared signal), in the registry's waiter set of its bundle and in
// the deadline queue of its hold length. Holds of one length end in the order they began, so one
// insertion-ordered Set per length is a sorted queue, and one timer for the earliest head serves them
// all. Answers (the new bundle after a publish, a 304 at the deadline) are written from a queue in
// slices of a few milliseconds, with setImmediate in between, so a fan-out of a large bundle to every
// waiter does not stop the loop from answering anyone else. close() answers every held poll at once.
import type { ServerResponse } from 'node:http';
import type { BundleRegistry, BundleWaiter, PublishedBundle } from './registry.js';

/** How much earlier than its deadline a hold may end, so that one timer wake-up ends many holds. */
const DEADLINE_SLACK_MS = 10;
/** The longest stretch spent writing answers before other events get their turn. */
const DEFAULT_SLICE_MS = 5;

const HELD = 0;
const QUEUED = 1;
const ANSWERED = 2;
const GONE = 3;
type PollState = typeof HELD | typeof QUEUED | typeof ANSWERED | typeof GONE;

/** One held request, as the registry (a BundleWaiter) and the deadline queues see it. */
export class HeldPoll implements BundleWaiter {
  state: PollState = HELD;
  /** performance.now() at which the hold ends with a 304. */
  deadline = 0;
  /** Set when woken: the bundle to send (a 200); undefined for a 304. */
  answer: PublishedBundle | undefined;
  /** The response's 'close' listener: the client left, or the answer was written. */
  readonly onClose = (): void => this.polls.closed(this);

  constructor(
    private readonly polls: HeldPolls,
    readonly res: ServerResponse,
    readonly head: boolean,
    /** The bundle as it was when the hold began: its ETag is the one the client has. */
    readonly bundle: PublishedBundle,
    readonly holdMs: number,
    /** The client asked for delta bundles (`Prefer: modes=…delta`). */
    readonly delta = false,
  ) {}

  get etag(): string {
    return this.bundle.etag;
  }

  wake(bundle: PublishedBundle): void {
    this.polls.woken(this, bundle);
  }
}

export interface HeldPollsOptions {
  registry: BundleRegistry;
  /** Writes a poll's answer: `bundle` with a 200, or (undefined) a 304; `closing` adds Connection: close. */
  send(poll: HeldPoll, bundle: PublishedBundle | undefined, closing: boolean): void;
  /** Called with +1 when a hold begins and -1 when it ends (answered or abandoned): the held gauge. */
  onHeldChange(delta: 1 | -1): void;
  /** The longest stretch of writing answers in one go, in ms (default 5). */
  sliceMs?: number;
}

export class HeldPolls {
  /** Hold length (ms) → the polls held that long, in the order they began (so: by deadline). */
  private readonly queues = new Map<number, Set<HeldPoll>>();
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Number.POSITIVE_INFINITY;
  /** Polls whose answer is to be written, from `next` on. */
  private answers: HeldPoll[] = [];
  private next = 0;
  private writing = false;
  /** Polls whose response has not closed yet: held, queued, or answered and still being written. */
  private open = 0;
  private closing = false;
  private allClosed: (() => void) | undefined;
  private readonly sliceMs: number;

  constructor(private readonly options: HeldPollsOptions) {
    this.sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
  }

  /** Polls being held (not yet answered); for tests. */
  get size(): number {
    let total = 0;
    for (const queue of this.queues.values()) total += queue.size;
    return total;
  }

  /**
   * Holds `res` until `bundle`'s ETag changes (then the new bundle, 200) or for `holdMs` (then a 304).
   * The caller has checked that the client has the current ETag and that the server is not closing.
   */
  hold(res: ServerResponse, head: boolean, bundle: PublishedBundle, holdMs: number, delta = false): void {
    const poll = new HeldPoll(this, res, head, bundle, holdMs, delta);
    poll.deadline = performance.now() + holdMs;
    let queue = this.queues.get(holdMs);
    if (queue === undefined) {
      queue = new Set();
      this.queues.set(holdMs, queue);
    }
    queue.add(poll);
    this.options.registry.addWaiter(bundle.name, poll);
    this.open += 1;
    this.options.onHeldChange(1);
    res.on('close', poll.onClose);
    if (poll.deadline < this.timerDue) this.arm(poll.deadline);
  }

  /** From the registry's publish(): the poll has left the registry's set. */
  woken(poll: HeldPoll, bundle: PublishedBundle): void {
    if (poll.state !== HELD) return;
    this.unqueue(poll);
    poll.answer = bundle;
    this.enqueue(poll);
  }

  /** The response closed: its answer was written, or the client went away first. */
  closed(poll: HeldPoll): void {
    if (poll.state === HELD) {
      this.unqueue(poll);
      this.options.registry.removeWaiter(poll.bundle.name, poll);
    }
    if (poll.state === HELD || poll.state === QUEUED) this.options.onHeldChange(-1);
    poll.state = GONE;
    this.open -= 1;
    if (this.open === 0) this.allClosed?.();
  }

  /**
   * Answers every held poll now (a 304, or the bundle a publish woke it for), with Connection: close.
   * Resolves once every held or answered poll's response has closed; the caller bounds the wait.
   */
  closeAll(): Promise<void> {
    this.closing = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.NEGATIVE_INFINITY; // nothing is held any more: never arm again
    for (const queue of this.queues.values()) {
      for (const poll of queue) {
        this.options.registry.removeWaiter(poll.bundle.name, poll);
        poll.state = QUEUED;
        this.answers.push(poll);
      }
    }
    this.queues.clear();
    this.write(Number.POSITIVE_INFINITY);
    if (this.open === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.allClosed = resolve;
    });
  }

  private unqueue(poll: HeldPoll): void {
    const queue = this.queues.get(poll.holdMs);
    if (queue === undefined) return;
    queue.delete(poll);
    if (queue.size === 0) this.queues.delete(poll.holdMs);
  }

  private enqueue(poll: HeldPoll): void {
    poll.state = QUEUED;
    this.answers.push(poll);
    if (!this.writing) {
      this.writing = true;
      setImmediate(this.writeSlice);
    }
  }

  private readonly writeSlice = (): void => {
    this.writing = false;
    this.write(this.sliceMs);
    if (this.next < this.answers.length) {
      this.writing = true;
      setImmediate(this.writeSlice);
    }
  };

  /** Writes queued answers for up to `budgetMs`. */
  private write(budgetMs: number): void {
    const started = performance.now();
    const answers = this.answers;
    while (this.next < answers.length) {
      const poll = answers[this.next] as HeldPoll;
      this.next += 1;
      if (poll.state !== QUEUED) continue; // the client left meanwhile
      poll.state = ANSWERED;
      this.options.onHeldChange(-1);
      this.options.send(poll, poll.answer, this.closing);
      if (performance.now() - started >= budgetMs) break;
    }
    if (this.next === answers.length) {
      this.answers = [];
      this.next = 0;
    } else if (this.next >= 4096) {
      // Answers keep coming while earlier ones are written: drop the written part now and then, so
      // that the queue holds only what is still to be written.
      this.answers = answers.slice(this.next);
      this.next = 0;
    }
  }

  private arm(due: number): void {
    if (this.closing) return;
    clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(this.expire, Math.max(0, Math.ceil(due - performance.now())));
  }

  /** The timer: ends every hold whose deadline is (nearly) here with a 304, and waits for the next. */
  private readonly expire = (): void => {
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    const until = performance.now() + DEADLINE_SLACK_MS;
    let nextDue = Number.POSITIVE_INFINITY;
    for (const [holdMs, queue] of this.queues) {
      for (const poll of queue) {
        if (poll.deadline > until) {
          nextDue = Math.min(nextDue, poll.deadline);
          break;
        }
        queue.delete(poll);
        this.options.registry.removeWaiter(poll.bundle.name, poll);
        poll.answer = undefined;
        this.enqueue(poll);
      }
      if (queue.size === 0) this.queues.delete(holdMs);
    }
    if (nextDue !== Number.POSITIVE_INFINITY) this.arm(nextDue);
  };
}
