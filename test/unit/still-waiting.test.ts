// While OPA does not answer, opa-sync says so now and again (what it tries, how often, for how long)
// instead of one warning and then silence; and it says when OPA answers.
import { expect } from 'chai';
import { DesiredState } from '../../src/model/desired-state.js';
import { OpaPusher, type OpaApi } from '../../src/opa/pusher.js';
import { RetryableError } from '../../src/util/errors.js';
import { StillWaiting } from '../../src/util/still-waiting.js';
import { capturingLogger } from '../harness/logs.js';
import { runPart } from '../harness/parts.js';
import { waitFor } from '../harness/wait.js';

const refused = (): RetryableError =>
  new RetryableError('opa_unreachable', 'connect ECONNREFUSED 127.0.0.1:9');

describe('still waiting for OPA', () => {
  it('logs a reminder every interval while attempts fail, with the attempts and the time, then once when reached', () => {
    const { logger, lines } = capturingLogger();
    let now = 1_000_000;
    const waiting = new StillWaiting(
      logger,
      'OPA',
      { url: 'http://127.0.0.1:9/v1' },
      { everyMs: 30_000, now: () => now },
    );
    waiting.reached(); // nothing was waited for: nothing to say
    for (let attempt = 1; attempt <= 13; attempt++) {
      waiting.failed(refused());
      now += 5_000;
    }
    waiting.reached();
    waiting.reached();
    expect(
      lines.map(({ level, msg, url, attempts, waitingS, waitedS, err }) => ({
        level,
        msg,
        url,
        attempts,
        waitingS,
        waitedS,
        err,
      })),
    ).to.deep.equal([
      {
        level: 40,
        msg: 'still waiting for OPA',
        url: 'http://127.0.0.1:9/v1',
        attempts: 7,
        waitingS: 30,
        waitedS: undefined,
        err: 'connect ECONNREFUSED 127.0.0.1:9',
      },
      {
        level: 40,
        msg: 'still waiting for OPA',
        url: 'http://127.0.0.1:9/v1',
        attempts: 13,
        waitingS: 60,
        waitedS: undefined,
        err: 'connect ECONNREFUSED 127.0.0.1:9',
      },
      {
        level: 30,
        msg: 'OPA is reachable',
        url: 'http://127.0.0.1:9/v1',
        attempts: 14,
        waitingS: undefined,
        waitedS: 65,
        err: undefined,
      },
    ]);
  });

  it('the OPA pusher: reminders naming the URL while OPA is away, then "OPA is reachable" when it answers', async () => {
    let up = false;
    const answer = (): Promise<void> => (up ? Promise.resolve() : Promise.reject(refused()));
    const opa: OpaApi = {
      putPolicy: answer,
      deletePolicy: answer,
      listPolicyIds: () => (up ? Promise.resolve([]) : Promise.reject(refused())),
      putData: answer,
      removeData: answer,
      patchData: answer,
      getData: () => (up ? Promise.resolve({ defined: true, value: {} }) : Promise.reject(refused())),
    };
    const { logger, lines } = capturingLogger();
    const pusher = new OpaPusher({
      client: opa,
      state: new DesiredState(),
      logger,
      onOutcome: () => undefined,
      resyncIntervalMs: 5,
      target: 'http://127.0.0.1:9/v1',
      stillWaitingEveryMs: 40,
    });
    const running = runPart(pusher);
    try {
      await waitFor('two reminders', () =>
        lines.filter((l) => l.msg === 'still waiting for OPA').length >= 2 ? true : undefined,
      );
      up = true;
      await waitFor('OPA is reachable', () => lines.find((l) => l.msg === 'OPA is reachable'));
    } finally {
      await running.stop();
    }
    const said = lines.map((l) => l.msg);
    expect(said.filter((m) => m === 'OPA is not reachable')).to.have.length(1);
    const reminders = lines.filter((l) => l.msg === 'still waiting for OPA');
    expect(reminders[0]).to.include({ url: 'http://127.0.0.1:9/v1', level: 40 });
    expect(reminders[1]?.attempts).to.be.greaterThan(reminders[0]?.attempts as number);
    expect(said.indexOf('OPA is reachable')).to.be.greaterThan(said.lastIndexOf('still waiting for OPA'));
  });
});
