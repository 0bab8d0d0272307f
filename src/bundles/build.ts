// The OPA bundle builder: turns policy modules and data documents into the bytes of a bundle
// (gzip of tar) that a real OPA loads, plus a content revision used as the manifest revision and ETag.
//
// The output is deterministic (DESIGN.md habit 10): every replica given the same inputs, in any order,
// serves the same bytes and the same ETag (bytes: unsigned or RS*/HS*-signed, with the same tar-stream
// version and Node/zlib build; PS*/ES* signatures are randomised by the algorithm, see signatures.ts,
// but the revision and ETag never depend on the signature, the archive format or compression). So entries
// are sorted by UTF-8 bytes, data.json files and the manifest are written in OPA's canonical JSON form
// (which also lets the signer digest their bytes as they are), the archive has no host or clock in it
// (archive.ts), and the revision is a hash of the content, never of a clock.
//
// `BundleBuilder` builds the bundles of one name one after another and keeps what it made (entry bytes
// and digests, the archive's tar entries and compressed chunks), so that a one-module edit encodes and
// compresses that module; `buildBundle` is a builder with nothing kept, and gives the same bytes.
import { createHash } from 'node:crypto';
import { InvalidInputError } from '../util/errors.js';
import { comparePaths, isPathPrefix as isPrefix } from '../util/paths.js';
import { bundleEntryProblem, dataPathProblem } from '../util/safe-names.js';
import { ArchiveWriter, type PackStats } from './archive.js';
import { rootSegments, rootsOverlap, sortedUnique } from './roots.js';
import { canonicalJson } from './canonical-json.js';
import { compareUtf8 } from '../util/utf8.js';
import { fileDigest, signaturesFile } from './signatures.js';
import type { SigningOptions } from './signing-key.js';

export interface BundleModule {
  /** Bundle path of a .rego file, with a leading '/': `/opa/my-cm/a.rego`. */
  path: string;
  text: string;
}

export interface BundleDocument {
  /** Data path segments: `['opa', 'my-cm', 'x.json']` → entry `/opa/my-cm/x.json/data.json`. */
  path: readonly string[];
  value: unknown;
}

export interface BundleInput {
  modules: readonly BundleModule[];
  documents: readonly BundleDocument[];
  /** Manifest roots, slash-separated (`kubernetes/admission`); see `deriveRoots`. */
  roots: readonly string[];
  /** Written to the manifest as `rego_version` when set (0 keeps v0 Rego loading on OPA 1.x). */
  regoVersion?: 0 | 1 | undefined;
  /** Adds `/.signatures.json`. */
  signing?: SigningOptions | undefined;
}

export interface BuiltBundle {
  /** gzip of tar. */
  bytes: Buffer;
  /** Hex SHA-256 of the bundle's content (files and manifest fields, not the signature); also in the manifest. */
  revision: string;
  /** `"<revision>"`: quoted, strong. */
  etag: string;
  /** Entry names in the archive, sorted (by UTF-8 bytes). */
  files: string[];
}

/** Bundle content that OPA would refuse or load differently than meant: clashing paths, roots, values. */
export class BundleConflictError extends InvalidInputError {}

// The roots' rules have a module of their own; the builder's callers take them from here as before.
export { deriveRoots, rootsOverlap } from './roots.js';

const MANIFEST = '/.manifest';
const SIGNATURES = '/.signatures.json';
// Bumped when the revision's framing changes, so that old and new builds never share a revision by chance.
// v3: files enter as name, length and SHA-256 digest (v2 hashed their bytes), and the gzip is chunked.
const REVISION_FRAMING = 'opa-sync bundle revision v3\n';

function quotePath(path: readonly string[]): string {
  return JSON.stringify(path);
}

/** An entry's bytes and digest, and what they were made from (a module's text, a document's value). */
interface Content {
  source: unknown;
  content: Buffer;
  digest: string;
}

/** Gives an entry's bytes, made from `source` (or reused when the entry was made from the same source). */
type ContentOf = (name: string, source: unknown, make: () => Buffer) => Content;

function freshContent(_name: string, source: unknown, make: () => Buffer): Content {
  const content = make();
  return { source, content, digest: fileDigest(content) };
}

/**
 * Entries of the modules, checked: hostile names, '.rego' suffix, one module per path. A path that
 * `passed` (in a build that went through) is not judged again: the rules are about the path alone.
 */
function moduleEntries(
  modules: readonly BundleModule[],
  entries: Map<string, Content>,
  contentOf: ContentOf,
  passed: (name: string) => boolean,
): void {
  for (const m of modules) {
    if (!passed(m.path)) checkModulePath(m.path);
    if (entries.has(m.path)) {
      throw new BundleConflictError('bundle_conflict', `two modules at ${JSON.stringify(m.path)}`);
    }
    entries.set(
      m.path,
      contentOf(m.path, m.text, () => Buffer.from(m.text, 'utf8')),
    );
  }
}

function checkModulePath(modulePath: string): void {
  const problem = bundleEntryProblem(modulePath);
  if (problem !== undefined) throw new InvalidInputError('invalid_bundle_entry', problem);
  if (!modulePath.startsWith('/')) {
    throw new InvalidInputError(
      'invalid_bundle_entry',
      `module path ${JSON.stringify(modulePath)} must start with "/"`,
    );
  }
  if (!modulePath.endsWith('.rego')) {
    // OPA loads only *.rego entries as modules and silently ignores the others.
    throw new InvalidInputError(
      'invalid_bundle_entry',
      `module path ${JSON.stringify(modulePath)} does not end in ".rego": OPA would ignore it in a bundle`,
    );
  }
}

/** Entries of the documents: canonical data.json files; paths checked, none at or inside another. */
function documentEntries(
  documents: readonly BundleDocument[],
  entries: Map<string, Content>,
  contentOf: ContentOf,
): string[][] {
  const docs = documents.map((d) => {
    const problem = dataPathProblem(d.path);
    if (problem !== undefined) throw new InvalidInputError('invalid_bundle_entry', problem);
    return { path: [...d.path], value: d.value };
  });
  docs.sort((a, b) => comparePaths(a.path, b.path));
  // Sorted segment-wise, a path is followed directly by the paths below it: neighbours are enough.
  for (let i = 1; i < docs.length; i += 1) {
    const previous = docs[i - 1]?.path ?? [];
    const current = docs[i]?.path ?? [];
    if (isPrefix(previous, current)) {
      const how =
        previous.length === current.length
          ? `two data documents at ${quotePath(current)}`
          : `data documents at ${quotePath(previous)} and ${quotePath(current)} overlap (one is inside the other)`;
      throw new BundleConflictError('bundle_conflict', `${how}: OPA cannot merge them`);
    }
  }
  for (const d of docs) {
    if (d.path.length === 0 && (typeof d.value !== 'object' || d.value === null || Array.isArray(d.value))) {
      // OPA: "root value must be object".
      throw new BundleConflictError(
        'bundle_conflict',
        'the data document at the root ([]) must be an object',
      );
    }
    const name = d.path.length === 0 ? '/data.json' : `/${d.path.join('/')}/data.json`;
    entries.set(
      name,
      contentOf(name, d.value, () =>
        Buffer.from(canonicalJson(d.value, `data document ${quotePath(d.path)}`), 'utf8'),
      ),
    );
  }
  return docs.map((d) => d.path);
}

/** A name that is both a file and a folder cannot be extracted, and means two inputs collided. */
function refuseFileFolderClashes(names: readonly string[]): void {
  const folders = new Set<string>();
  for (const name of names) {
    const parts = name.split('/');
    for (let n = 2; n < parts.length; n += 1) folders.add(parts.slice(0, n).join('/'));
  }
  const clash = names.find((n) => folders.has(n));
  if (clash !== undefined) {
    throw new BundleConflictError(
      'bundle_conflict',
      `bundle entry ${JSON.stringify(clash)} is a file, and also a folder of another entry`,
    );
  }
}

/** The first pair of overlapping roots, in the order of the list (for the message); O(n²), so only once one is known to exist. */
function firstOverlap(roots: readonly string[]): [string, string] | undefined {
  for (const [i, a] of roots.entries()) {
    const other = roots.slice(i + 1).find((b) => rootsOverlap([a], [b]));
    if (other !== undefined) return [a, other];
  }
  return undefined;
}

/** The manifest roots: trimmed as OPA trims them, deduplicated, sorted; overlaps and strays refused. */
function manifestRoots(roots: readonly string[], dataPaths: readonly string[][]): string[] {
  const normalised = sortedUnique(roots.map((r) => rootSegments(r).join('/')));
  const segmented = normalised.map((root) => ({ root, segments: rootSegments(root) }));
  for (const { root, segments } of segmented) {
    if (segments.includes('')) {
      throw new InvalidInputError(
        'invalid_bundle_roots',
        `manifest root ${JSON.stringify(root)} has an empty segment`,
      );
    }
  }
  // Sorted segment-wise, a root is followed directly by the roots below it: neighbours are enough to
  // know whether two overlap (O(n log n)); the message then names the pair the list order finds first.
  const bySegments = [...segmented].sort((a, b) => comparePaths(a.segments, b.segments));
  const overlapping = bySegments.some(
    (r, i) => i > 0 && isPrefix(bySegments[i - 1]?.segments ?? [], r.segments),
  );
  const pair = overlapping ? firstOverlap(normalised) : undefined;
  if (pair !== undefined) {
    throw new InvalidInputError(
      'invalid_bundle_roots',
      `manifest roots ${JSON.stringify(pair[0])} and ${JSON.stringify(pair[1])} overlap: OPA refuses such a manifest`,
    );
  }
  const rootKeys = new Set(segmented.map((r) => JSON.stringify(r.segments)));
  for (const p of dataPaths) {
    let inside = false;
    for (let n = 0; n <= p.length && !inside; n += 1) inside = rootKeys.has(JSON.stringify(p.slice(0, n)));
    if (!inside) {
      throw new InvalidInputError(
        'invalid_bundle_roots',
        `data document ${quotePath(p)} is outside the manifest roots ${JSON.stringify(normalised)}`,
      );
    }
  }
  return normalised;
}

/**
 * Hash of the content: manifest fields other than the revision, then every file by name, length and
 * SHA-256 digest (the digests are kept between builds, so a rebuild hashes only what changed).
 */
function contentRevision(manifestFields: string, files: readonly (readonly [string, Content])[]): string {
  const hash = createHash('sha256');
  hash.update(REVISION_FRAMING);
  hash.update(`${manifestFields}\n`);
  for (const [name, { content, digest }] of files) {
    // Names cannot hold newlines (refused as control characters); the digest stands for the content.
    hash.update(`${name}\n${content.length}\n${digest}\n`);
  }
  return hash.digest('hex');
}

function checkRegoVersion(regoVersion: 0 | 1 | undefined): void {
  if (regoVersion !== undefined && regoVersion !== 0 && regoVersion !== 1) {
    throw new InvalidInputError(
      'invalid_rego_version',
      `rego_version must be 0 or 1, not ${String(regoVersion)}`,
    );
  }
}

/**
 * Builds bundles one after another, keeping what the last build made: each entry's bytes (a data
 * document's canonical JSON is made once per value) and digest, and the archive's tar entries and
 * compressed chunks (archive.ts). The bytes are exactly those of `buildBundle` for the same input;
 * the cache only saves work. Document values are taken as immutable: a value is encoded again only
 * when the desired state holds another object (sources replace values, they never change them).
 *
 * @example
 * const builder = new BundleBuilder();
 * const first = await builder.build(input);
 * const next = await builder.build({ ...input, modules: edited }); // encodes and compresses only the edit
 */
export class BundleBuilder {
  private contents = new Map<string, Content>();
  private readonly archive = new ArchiveWriter();
  /** The last build's roots (given, and as written) and entry names: judged again only when they change. */
  private lastRoots: { given: readonly string[]; dataPaths: string; written: string[] } | undefined;
  private lastNames: readonly string[] = [];

  /** What the last build's archive had to encode and compress (the rest came from the cache). */
  get lastPack(): PackStats {
    return this.archive.lastPack;
  }

  /** `manifestRoots`, judged again only when the roots or the data paths changed since the last build. */
  private manifestRoots(given: readonly string[], dataPaths: readonly string[][]): string[] {
    const paths = JSON.stringify(dataPaths);
    const last = this.lastRoots;
    if (last !== undefined && last.dataPaths === paths && sameStrings(last.given, given)) return last.written;
    const written = manifestRoots(given, dataPaths);
    this.lastRoots = { given: [...given], dataPaths: paths, written };
    return written;
  }

  /** Builds a bundle; errors as `buildBundle`'s. */
  async build(input: BundleInput): Promise<BuiltBundle> {
    const regoVersion = input.regoVersion;
    checkRegoVersion(regoVersion);
    const previous = this.contents;
    const used = new Map<string, Content>();
    const contentOf: ContentOf = (name, source, make) => {
      const cached = previous.get(name);
      const content =
        cached !== undefined && cached.source === source ? cached : freshContent(name, source, make);
      used.set(name, content);
      return content;
    };
    const entries = new Map<string, Content>();
    moduleEntries(input.modules, entries, contentOf, (name) => previous.has(name) && name.endsWith('.rego'));
    const dataPaths = documentEntries(input.documents, entries, contentOf);
    const roots = this.manifestRoots(input.roots, dataPaths);

    const content = [...entries].sort(([a], [b]) => compareUtf8(a, b));
    const names = content.map(([name]) => name);
    if (!sameStrings(names, this.lastNames)) refuseFileFolderClashes(names);
    const fields = { roots, ...(regoVersion === undefined ? {} : { rego_version: regoVersion }) };
    const revision = contentRevision(canonicalJson(fields), content);
    // Canonical (keys sorted: rego_version, revision, roots), as OPA hashes it: the signature digests its bytes.
    const manifest = Buffer.from(canonicalJson({ revision, ...fields }, 'the manifest'), 'utf8');
    const files = [
      ...content.map(([name, c]) => ({ name, content: c.content, digest: c.digest })),
      { name: MANIFEST, content: manifest, digest: fileDigest(manifest) },
    ];
    if (input.signing !== undefined) {
      const signatures = signaturesFile(files, input.signing);
      files.push({ name: SIGNATURES, content: signatures, digest: fileDigest(signatures) });
    }
    const bytes = await this.archive.pack(files);
    // Kept only after a build that went through: a refused one leaves the cache as it was.
    this.contents = used;
    this.lastNames = names;
    return {
      bytes,
      revision,
      etag: `"${revision}"`,
      files: files.map((f) => f.name).sort(compareUtf8),
    };
  }
}

/** Whether two lists hold the same strings in the same order. */
function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

/**
 * Builds a bundle from scratch. Rejects with `InvalidInputError` (codes `invalid_bundle_entry`,
 * `invalid_bundle_roots`, `invalid_json`, `invalid_signing_key`, `invalid_rego_version`) or
 * `BundleConflictError` (`bundle_conflict`: two modules at one path, two documents at one path or one
 * inside another) naming what is wrong; the caller validates names first (`bundleEntryProblem`,
 * `dataPathProblem`) to refuse single inputs instead of whole builds.
 */
export async function buildBundle(input: BundleInput): Promise<BuiltBundle> {
  return new BundleBuilder().build(input);
}
