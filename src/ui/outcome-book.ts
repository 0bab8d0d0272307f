// What the web page knows of each origin beyond the desired state: when it last changed, and the last
// outcome each sink (the OPA push, the bundle builder) reported for it, with when. Fed by the one
// funnel every outcome goes through (app.ts's reporter) and by the desired state's changes; an origin
// that goes away is forgotten, so the book holds no more than the desired state does.
import type { DesiredState } from '../model/desired-state.js';
import type { LoadError, Outcome } from '../model/outcome.js';
import { originKey } from '../model/origin.js';

export interface SinkOutcome {
  errors: readonly LoadError[];
  /** When the sink reported it (ISO 8601). */
  at: string;
}

export interface OriginRecord {
  /** When the origin's desired state last changed (ISO 8601); undefined if not since opa-sync started. */
  changedAt: string | undefined;
  /** The last outcome per sink name ('opa', 'bundle'). */
  sinks: Map<string, SinkOutcome>;
}

export class OutcomeBook {
  private readonly records = new Map<string, OriginRecord>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly state: DesiredState,
    private readonly clock: () => Date = () => new Date(),
  ) {
    this.unsubscribe = state.subscribe((change) => {
      if (change.kind !== 'origin') return;
      if (state.get(change.key) === undefined) this.records.delete(change.key);
      else this.recordOf(change.key).changedAt = this.clock().toISOString();
    });
  }

  /** Records a sink's outcome for an origin (ignored when the origin is no longer wanted). */
  report(sink: string, outcome: Outcome): void {
    const key = originKey(outcome.origin);
    if (this.state.get(key) === undefined) return;
    this.recordOf(key).sinks.set(sink, { errors: outcome.errors, at: this.clock().toISOString() });
  }

  get(key: string): OriginRecord | undefined {
    return this.records.get(key);
  }

  close(): void {
    this.unsubscribe();
  }

  private recordOf(key: string): OriginRecord {
    let record = this.records.get(key);
    if (record === undefined) {
      record = { changedAt: undefined, sinks: new Map() };
      this.records.set(key, record);
    }
    return record;
  }
}
