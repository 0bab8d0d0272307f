// Which modules an edit can affect, so that only those are compiled again. Read from OPA's own AST
// (`rego.parse_module`, see rego-checker.ts), never from a parser of ours: a module's footprint is its
// package and the static prefixes of the refs it makes into `data` (imports included).
//
// Why this is enough: the compiler relates modules only through the data tree. Rules of one package
// (or of a package and one inside it) meet in the rule tree (conflicts, defaults, function arities,
// package/rule clashes); everything else is a ref: a call, a `with` target, a type taken from another
// rule, a cycle. So two modules can change each other's errors only if a package of one is on the
// same path (equal, above or below, by whole segments) as the package or a ref of the other. A ref
// whose first step after `data` is not a constant (`data[x]`, `data` itself), or a module OPA's parser
// cannot read, may touch anything: its footprint is unknown and relates it to every module.
//
// Related modules are closed over transitively (types flow along refs), and a closed group that
// nothing touched compiles as it did before.

/** A module's place in the data tree; undefined where unknown (related to everything). */
export interface Footprint {
  /** The package's segments, without `data`. */
  readonly pkg: readonly string[];
  /** The constant prefixes (after `data`) of the refs into data. */
  readonly refs: readonly (readonly string[])[];
}

interface Term {
  type?: unknown;
  value?: unknown;
}

function isTerm(node: unknown): node is Term {
  return typeof node === 'object' && node !== null && !Array.isArray(node) && 'type' in node;
}

function isDataVar(node: unknown): boolean {
  return isTerm(node) && node.type === 'var' && node.value === 'data';
}

/**
 * The footprint of a module from its AST as `rego.parse_module` returns it; undefined when some ref's
 * reach cannot be told (a dynamic step right after `data`, `data` alone) or the AST is not as expected.
 */
export function footprintOf(ast: unknown): Footprint | undefined {
  if (typeof ast !== 'object' || ast === null) return undefined;
  const { package: pkg, ...rest } = ast as { package?: { path?: unknown } };
  const pathTerms = pkg?.path;
  if (!Array.isArray(pathTerms) || !isDataVar(pathTerms[0])) return undefined;
  const segments: string[] = [];
  for (const t of pathTerms.slice(1)) {
    if (!isTerm(t) || t.type !== 'string' || typeof t.value !== 'string') return undefined;
    segments.push(t.value);
  }
  const refs: string[][] = [];
  let unknown = false;
  const walk = (node: unknown): void => {
    if (unknown) return;
    if (Array.isArray(node)) {
      for (const n of node) walk(n);
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    if (isTerm(node) && node.type === 'ref' && Array.isArray(node.value)) {
      const terms: unknown[] = node.value;
      if (isDataVar(terms[0])) {
        const prefix: string[] = [];
        for (const t of terms.slice(1)) {
          if (!isTerm(t) || t.type !== 'string' || typeof t.value !== 'string') break;
          prefix.push(t.value);
        }
        if (prefix.length === 0) {
          unknown = true;
          return;
        }
        refs.push(prefix);
        walk(terms.slice(1));
        return;
      }
      walk(terms);
      return;
    }
    // `data` as a term of its own (not the head of a ref) is the whole tree.
    if (isDataVar(node)) {
      unknown = true;
      return;
    }
    for (const value of Object.values(node)) walk(value);
  };
  walk(rest);
  return unknown ? undefined : { pkg: segments, refs };
}

/** A trie of data paths, each node holding the modules whose package (or one of whose refs) is there. */
class PathTrie {
  private readonly root: TrieNode = { children: new Map(), here: [] };

  add(path: readonly string[], id: string): void {
    let node = this.root;
    for (const segment of path) {
      let child = node.children.get(segment);
      if (child === undefined) {
        child = { children: new Map(), here: [] };
        node.children.set(segment, child);
      }
      node = child;
    }
    node.here.push(id);
  }

  /**
   * Calls `found` with every module on the same path as `path`: at a node above or at it, or anywhere
   * below it. A subtree already walked (in `walked`) is not walked again: its modules were all found.
   */
  related(path: readonly string[], walked: Set<TrieNode>, found: (id: string) => void): void {
    let node: TrieNode | undefined = this.root;
    for (const segment of path) {
      if (walked.has(node)) return; // this node's subtree, and so everything below, was walked
      for (const id of node.here) found(id);
      node = node.children.get(segment);
      if (node === undefined) return;
    }
    const stack: TrieNode[] = [node];
    for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
      if (walked.has(next)) continue;
      walked.add(next);
      for (const id of next.here) found(id);
      stack.push(...next.children.values());
    }
  }
}

interface TrieNode {
  children: Map<string, TrieNode>;
  here: string[];
}

/**
 * The modules (by id) that an edit can affect: those related, directly or through others, to any of
 * the `seeds` (the footprints of the changed modules, new and old versions, and of removed ones).
 * 'all' when a footprint on the way is unknown. The seeds' own modules are not added: the caller does.
 */
export function affectedBy(
  modules: ReadonlyMap<string, Footprint | undefined>,
  seeds: readonly (Footprint | undefined)[],
): Set<string> | 'all' {
  const affected = new Set<string>();
  if (seeds.length === 0) return affected;
  if (seeds.includes(undefined)) return 'all';
  for (const footprint of modules.values()) if (footprint === undefined) return 'all';
  const packages = new PathTrie();
  const refs = new PathTrie();
  for (const [id, footprint] of modules) {
    if (footprint === undefined) continue;
    packages.add(footprint.pkg, id);
    for (const ref of footprint.refs) refs.add(ref, id);
  }
  const walkedPackages = new Set<TrieNode>();
  const walkedRefs = new Set<TrieNode>();
  const queue: Footprint[] = seeds.filter((s): s is Footprint => s !== undefined);
  const found = (id: string): void => {
    if (affected.has(id)) return;
    affected.add(id);
    const footprint = modules.get(id);
    if (footprint !== undefined) queue.push(footprint);
  };
  for (let next = queue.pop(); next !== undefined; next = queue.pop()) {
    // Its package against others' packages and refs; its refs against others' packages.
    packages.related(next.pkg, walkedPackages, found);
    refs.related(next.pkg, walkedRefs, found);
    for (const ref of next.refs) packages.related(ref, walkedPackages, found);
  }
  return affected;
}
