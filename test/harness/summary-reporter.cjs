// Mocha's spec reporter, closed by the run's duration and a plain `N passed, N failed` line that CI reads.
'use strict';
const Mocha = require('mocha');

const { EVENT_RUN_END, EVENT_TEST_FAIL, EVENT_TEST_PASS, EVENT_TEST_PENDING } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const started = Date.now();
    // Each test counted once, by its last outcome: the hooks can fail a test after it passed (a listener
    // leak warning seen in its afterEach), which mocha's own stats count as one pass and one failure.
    // A failed hook counts as a failure, as in mocha's stats.
    const passed = new Set();
    const failed = new Set();
    let pending = 0;
    let failedHooks = 0;
    runner.on(EVENT_TEST_PASS, (test) => passed.add(test));
    runner.on(EVENT_TEST_PENDING, () => {
      pending += 1;
    });
    runner.on(EVENT_TEST_FAIL, (runnable) => {
      if (runnable.type === 'hook') {
        failedHooks += 1;
        return;
      }
      passed.delete(runnable);
      failed.add(runnable);
    });
    runner.once(EVENT_RUN_END, () => {
      // Registered after the spec reporter's own epilogue, so it prints last.
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      process.stdout.write(`\ntest run took ${seconds} s\n`);
      const skipped = pending > 0 ? `, ${pending} skipped` : '';
      process.stdout.write(`${passed.size} passed, ${failed.size + failedHooks} failed${skipped}\n`);
    });
  }
}

module.exports = SummaryReporter;
