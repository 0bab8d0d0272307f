// Mocha's spec reporter, closed by the run's duration and a plain `N passed, N failed` line that CI reads.
'use strict';
const Mocha = require('mocha');

const { EVENT_RUN_END } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const started = Date.now();
    runner.once(EVENT_RUN_END, () => {
      // Registered after the spec reporter's own epilogue, so it prints last.
      const stats = runner.stats ?? { passes: 0, failures: 0, pending: 0 };
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      process.stdout.write(`\ntest run took ${seconds} s\n`);
      const skipped = stats.pending > 0 ? `, ${stats.pending} skipped` : '';
      process.stdout.write(`${stats.passes} passed, ${stats.failures} failed${skipped}\n`);
    });
  }
}

module.exports = SummaryReporter;
