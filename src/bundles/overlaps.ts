// Roots of different bundles must not overlap (OPA cannot activate both): the rule the publisher
// applies across bundles, in O(total root length) after its sort, with a trie of the roots accepted so
// far instead of comparing every pair (a thousand origins are a million pairs).
import { rootSegments } from './roots.js';

/** One origin's roots in one bundle. */
export interface RootOwner {
  bundle: string;
  roots: readonly string[];
}

interface Accepted {
  index: number;
  bundle: string;
}

/** The earliest accepted owner, and the earliest of another bundle than that one's: enough to answer any bundle. */
interface Earliest {
  first?: Accepted | undefined;
  other?: Accepted | undefined;
}

interface Node {
  children: Map<string, Node>;
  /** Owners with a root exactly here. */
  here: Earliest;
  /** Owners with a root here or below. */
  below: Earliest;
}

function newNode(): Node {
  return { children: new Map(), here: {}, below: {} };
}

/** Owners arrive in increasing index order, so the earliest ones are the first two that fit. */
function note(earliest: Earliest, owner: Accepted): void {
  if (earliest.first === undefined) earliest.first = owner;
  else if (earliest.other === undefined && earliest.first.bundle !== owner.bundle) earliest.other = owner;
}

/** The earliest owner of another bundle than `bundle`. */
function earliestOther(earliest: Earliest, bundle: string): Accepted | undefined {
  return earliest.first?.bundle !== bundle ? earliest.first : earliest.other;
}

/**
 * Judges the owners in order: each is accepted unless a root of it is equal to, above or below (by whole
 * segments) a root of an owner of another bundle accepted before it. Returns, for each refused owner
 * (by index), the index of the earliest accepted owner it clashes with; the same answer as comparing
 * every pair of roots in that order.
 *
 * @example
 * overlapRefusals([
 *   { bundle: 'a', roots: ['teams/a'] },
 *   { bundle: 'b', roots: ['teams/a/sub'] }, // refused: below a root of bundle a
 *   { bundle: 'b', roots: ['teams/b'] },
 * ]); // Map { 1 => 0 }
 */
export function overlapRefusals(owners: readonly RootOwner[]): Map<number, number> {
  const root = newNode();
  const refused = new Map<number, number>();
  owners.forEach((owner, index) => {
    let clash: Accepted | undefined;
    const consider = (candidate: Accepted | undefined): void => {
      if (candidate !== undefined && (clash === undefined || candidate.index < clash.index))
        clash = candidate;
    };
    for (const r of owner.roots) {
      let node: Node | undefined = root;
      for (const segment of rootSegments(r)) {
        consider(earliestOther(node.here, owner.bundle)); // an accepted root above this one
        node = node.children.get(segment);
        if (node === undefined) break;
      }
      if (node !== undefined) consider(earliestOther(node.below, owner.bundle)); // equal, or below
    }
    if (clash !== undefined) {
      refused.set(index, clash.index);
      return;
    }
    const accepted = { index, bundle: owner.bundle };
    for (const r of owner.roots) {
      let node = root;
      note(node.below, accepted);
      for (const segment of rootSegments(r)) {
        let child = node.children.get(segment);
        if (child === undefined) {
          child = newNode();
          node.children.set(segment, child);
        }
        node = child;
        note(node.below, accepted);
      }
      note(node.here, accepted);
    }
  });
  return refused;
}
