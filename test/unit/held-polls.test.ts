// Held long polls without HTTP: deadlines end holds of several lengths from one timer, a publish wakes
// every waiter and their answers are written in slices that let other events in, a client that left
// is never answered, and closeAll() answers everything at once. The responses are bare event emitters
// (all HeldPolls uses of one is its 'close' event); the answers are recorded by the `send` seam.
import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { expect } from 'chai';
import { HeldPolls, type HeldPoll } from '../../src/bundles/held-polls.js';
import { BundleRegistry, type PublishedBundle } from '../../src/bundles/registry.js';
import { waitFor } from '../harness/index.js';

function bundle(etag: string): PublishedBundle {
  return { name: 'b', bytes: Buffer.from(etag), etag: `"${etag}"`, revision: etag };
}

interface Sent {
  poll: HeldPoll;
  bundle: PublishedBundle | undefined;
  closing: boolean;
  at: number;
}

function setup(sendCost = 0): {
  registry: BundleRegistry;
  polls: HeldPolls;
  sent: Sent[];
  held: () => number;
  response: () => ServerResponse;
} {
  const registry = new BundleRegistry();
  registry.publish(bundle('one'));
  const sent: Sent[] = [];
  let held = 0;
  const polls = new HeldPolls({
    registry,
    send: (poll, b, closing) => {
      // A write of a large bundle: time spent on the loop.
      const until = performance.now() + sendCost;
      while (performance.now() < until);
      sent.push({ poll, bundle: b, closing, at: performance.now() });
    },
    onHeldChange: (delta) => {
      held += delta;
    },
  });
  return {
    registry,
    polls,
    sent,
    held: () => held,
    response: () => new EventEmitter() as unknown as ServerResponse,
  };
}

describe('held polls', () => {
  it('ends holds of different lengths at their deadlines (304s), and forgets them', async () => {
    const { registry, polls, sent, held, response } = setup();
    const current = registry.get('b') as PublishedBundle;
    const started = performance.now();
    for (let i = 0; i < 50; i += 1) {
      polls.hold(response(), false, current, 300);
      polls.hold(response(), false, current, 150);
    }
    expect(held()).to.equal(100);
    expect(registry.waiterCount('b')).to.equal(100);
    await waitFor('every hold to end', () => (sent.length === 100 ? true : undefined), { intervalMs: 5 });
    for (const s of sent) {
      expect(s.bundle).to.equal(undefined);
      const took = s.at - started;
      // Never more than the slack early; late only by the timer's and the loop's delay.
      expect(took).to.be.within(s.poll.holdMs - 11, s.poll.holdMs + 400);
    }
    expect(sent.slice(0, 50).every((s) => s.poll.holdMs === 150)).to.equal(true);
    expect(held()).to.equal(0);
    expect(registry.waiterCount()).to.equal(0);
    expect(polls.size).to.equal(0);
  });

  it('answers the waiters of a publish in slices, letting other events in between', async () => {
    const { registry, polls, sent, held, response } = setup(1);
    const current = registry.get('b') as PublishedBundle;
    for (let i = 0; i < 100; i += 1) polls.hold(response(), false, current, 60_000);
    const next = bundle('two');
    registry.publish(next);
    // Woken, but nothing written inside publish(): the registry's loop stays cheap.
    expect(sent).to.have.length(0);
    expect(registry.waiterCount()).to.equal(0);
    let sentBeforeOther = -1;
    setImmediate(() => {
      sentBeforeOther = sent.length;
    });
    await waitFor('every answer', () => (sent.length === 100 ? true : undefined), { intervalMs: 5 });
    // One slice (5 ms of 1 ms writes) ran before the other event, not the whole fan-out.
    expect(sentBeforeOther).to.be.within(1, 20);
    expect(sent.every((s) => s.bundle === next && !s.closing)).to.equal(true);
    expect(held()).to.equal(0);
    expect(polls.size).to.equal(0);
  });

  it('never answers a client that left, whether it was held or already queued', async () => {
    const { registry, polls, sent, held, response } = setup();
    const current = registry.get('b') as PublishedBundle;
    const responses = [response(), response(), response(), response()];
    for (const res of responses) polls.hold(res, false, current, 60_000);
    (responses[0] as unknown as EventEmitter).emit('close');
    expect(held()).to.equal(3);
    expect(registry.waiterCount('b')).to.equal(3);
    registry.publish(bundle('two'));
    // Queued for its answer, then gone before the slice ran.
    (responses[1] as unknown as EventEmitter).emit('close');
    await waitFor('the answers', () => (sent.length === 2 ? true : undefined), { intervalMs: 5 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(sent.map((s) => s.poll.res)).to.deep.equal([responses[2], responses[3]]);
    expect(held()).to.equal(0);
  });

  it('closeAll() answers held and queued polls at once with closing set, and resolves once all closed', async () => {
    const { registry, polls, sent, held, response } = setup();
    const current = registry.get('b') as PublishedBundle;
    const responses = Array.from({ length: 300 }, response);
    for (const res of responses.slice(0, 100)) polls.hold(res, false, current, 60_000);
    registry.publish(bundle('two'));
    for (const res of responses.slice(100))
      polls.hold(res, true, registry.get('b') as PublishedBundle, 60_000);
    let resolved = false;
    const closed = polls.closeAll().then(() => {
      resolved = true;
    });
    expect(sent).to.have.length(300);
    expect(sent.every((s) => s.closing)).to.equal(true);
    expect(sent.filter((s) => s.bundle !== undefined)).to.have.length(100);
    expect(held()).to.equal(0);
    expect(registry.waiterCount()).to.equal(0);
    for (const res of responses.slice(0, 299)) (res as unknown as EventEmitter).emit('close');
    await new Promise((resolve) => setImmediate(resolve));
    expect(resolved).to.equal(false);
    (responses[299] as unknown as EventEmitter).emit('close');
    await closed;
  });
});
