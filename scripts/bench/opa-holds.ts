// "OPA holds all N NetworkPolicies", detected cheaply: small reads of three sentinel objects every few
// ms (OPA converts only what a query touches), then one full count once they are all there. The
// reported time is when the first full count that saw N was sent (so it errs late by at most one
// sentinel interval plus one request).
import { performance } from 'node:perf_hooks';
import type { OpaHttp } from './opa-http.js';
import { npName, npNamespace, sentinels } from './network-policies.js';
import { sleep } from './env.js';

export interface HoldsResult {
  /** performance.now() when the confirming count was sent. */
  at: number;
  sentinelPolls: number;
  fullCounts: number;
  /** ms the confirming count took to answer (shows what a full poll would have cost). */
  fullCountMs: number;
}

const FULL_COUNT = 'n := sum([count(ns) | ns := data.kubernetes.networkpolicies[_]])';

export function sentinelQuery(size: number): string {
  const refs = sentinels(size).map(
    (k) =>
      `data.kubernetes.networkpolicies[${JSON.stringify(npNamespace(k))}][${JSON.stringify(npName(k))}].metadata.name`,
  );
  return `x := [${refs.join(', ')}]`;
}

export async function countInOpa(opa: OpaHttp): Promise<number> {
  const { bindings } = await opa.query(FULL_COUNT);
  return typeof bindings?.n === 'number' ? bindings.n : 0;
}

export async function waitOpaHolds(
  opa: OpaHttp,
  size: number,
  {
    intervalMs = 5,
    timeoutMs = 600_000,
    alive,
  }: { intervalMs?: number; timeoutMs?: number; alive?: () => boolean } = {},
): Promise<HoldsResult> {
  const deadline = performance.now() + timeoutMs;
  const query = sentinelQuery(size);
  let sentinelPolls = 0;
  let fullCounts = 0;
  const check = (): void => {
    if (alive && !alive()) throw new Error('the process under test exited before OPA held everything');
    if (performance.now() > deadline)
      throw new Error(`OPA did not hold ${size} objects within ${timeoutMs} ms`);
  };
  for (;;) {
    check();
    sentinelPolls++;
    let seen = false;
    try {
      seen = (await opa.query(query)).bindings !== undefined;
    } catch {
      // OPA busy or restarting: poll again.
    }
    if (!seen) {
      await sleep(intervalMs);
      continue;
    }
    for (;;) {
      check();
      fullCounts++;
      const sentAt = performance.now();
      const n = await countInOpa(opa);
      if (n === size)
        return { at: sentAt, sentinelPolls, fullCounts, fullCountMs: performance.now() - sentAt };
      if (n > size) throw new Error(`OPA holds ${n} NetworkPolicies, more than the ${size} created`);
      await sleep(intervalMs * 4);
    }
  }
}
