// The backoff helper: exact delays for a given random source, the ceiling, jitter, and reset.
import { expect } from 'chai';
import { Backoff, sleep } from '../../src/util/backoff.js';

describe('Backoff', () => {
  it('doubles from min to max without jitter', () => {
    const b = new Backoff({ minMs: 100, maxMs: 1000, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).to.deep.equal([
      100, 200, 400, 800, 1000, 1000,
    ]);
    expect(b.attempts).to.equal(6);
  });

  it('adds up to the jitter fraction, taken from the injected random source', () => {
    const b = new Backoff({ minMs: 1000, maxMs: 60_000, factor: 3, jitter: 0.5, random: () => 1 });
    expect([b.next(), b.next(), b.next()]).to.deep.equal([1500, 4500, 13_500]);
    const none = new Backoff({ minMs: 1000, maxMs: 60_000, jitter: 0.5, random: () => 0 });
    expect(none.next()).to.equal(1000);
  });

  it('starts again from min after reset', () => {
    const b = new Backoff({ minMs: 10, maxMs: 100, jitter: 0 });
    b.next();
    b.next();
    b.reset();
    expect(b.next()).to.equal(10);
  });

  it('refuses nonsense bounds', () => {
    expect(() => new Backoff({ minMs: 0, maxMs: 10 })).to.throw(RangeError);
    expect(() => new Backoff({ minMs: 20, maxMs: 10 })).to.throw(RangeError);
  });

  it('sleep rejects as soon as its signal aborts', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const pending = sleep(10_000, controller.signal);
    setTimeout(() => controller.abort(new Error('stop')), 20);
    const err = await pending.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).to.equal('stop');
    expect(Date.now() - started).to.be.below(1000);
  });
});
