// Preloaded into opa-sync by `npm run bench -- … --profile DIR` (--import, scripts/bench/env.ts): records the event loop delay
// from start to exit (perf_hooks.monitorEventLoopDelay, 1 ms resolution) and writes its percentiles (ms)
// to the file named by PERF_ELD_FILE at exit.
import { writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const file = process.env.PERF_ELD_FILE;
if (file) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  process.on('exit', () => {
    h.disable();
    const ms = (ns) => Math.round(ns / 1e4) / 100;
    writeFileSync(
      file,
      JSON.stringify({
        count: h.count,
        p50: ms(h.percentile(50)),
        p99: ms(h.percentile(99)),
        p999: ms(h.percentile(99.9)),
        max: ms(h.max),
      }),
    );
  });
}
