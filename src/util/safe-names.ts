// The one home of the rules for names that come from outside (ConfigMap keys, folder file names, bundle
// names, names in URL paths) before they become bundle entries, data paths, URL paths or file names.
// Every name from outside is hostile (DESIGN.md habit 9): each check returns why a name is refused, in
// a message that names it (JSON-quoted, so control characters show and cannot forge log lines), or
// undefined when the name is fine. Containment of file system paths is in ./paths.ts.
//
// The special names are those OPA v1.22.3 treats specially inside a bundle (v1/bundle/bundle.go `Read`,
// `preProcessBundle`): an entry whose name happens to match one of them would not be loaded as what
// the user meant, and some (patch.json, *.manifest, *signatures.json) change how the whole bundle loads.

/** Why a name from outside holds characters no name may hold (in a bundle, a URL, a log), or undefined. */
function characterProblem(name: string): string | undefined {
  if (name.includes('\0')) return 'contains a NUL character';
  // C0 controls, DEL and C1 controls: never part of a real file or key name, and they mangle logs and tar headers.
  // eslint-disable-next-line no-control-regex -- matching control characters is the point here
  const control = /[\u0000-\u001f\u007f-\u009f]/u.exec(name);
  if (control !== null) {
    const code = control[0].codePointAt(0) ?? 0;
    return `contains a control character (U+${code.toString(16).toUpperCase().padStart(4, '0')})`;
  }
  // A lone surrogate cannot be written as UTF-8: the entry OPA sees would have another name.
  if (/\p{Surrogate}/u.test(name)) return 'is not valid Unicode (it holds a lone surrogate)';
  if (name.includes('\\')) return 'contains a backslash (a Windows path separator)';
  return undefined;
}

/** Base names (or name endings) OPA reads as something other than a policy module, with what it does. */
function specialBaseNameProblem(base: string): string | undefined {
  if (base.endsWith('signatures.json')) {
    // OPA 1.22 matches the exact base name '.signatures.json'; older releases matched the suffix.
    return 'ends in "signatures.json", which OPA reads as the bundle signature file';
  }
  if (base.endsWith('.manifest')) return 'ends in ".manifest", which OPA reads as the bundle manifest';
  if (base.endsWith('.manifest.pb')) {
    return 'ends in ".manifest.pb", which OPA reads as a protobuf bundle manifest';
  }
  if (base === 'patch.json') return 'is named "patch.json", which turns the bundle into a delta bundle';
  if (base === 'data.json' || base === 'data.yaml' || base === 'data.yml') {
    return `is named "${base}", which OPA loads as data, not as a policy module`;
  }
  if (base === 'policy.wasm') return 'is named "policy.wasm", which OPA loads as a Wasm module';
  if (base === 'plan.json' || base === 'plan.pb') {
    return `is named "${base}", which OPA loads as a query plan`;
  }
  return undefined;
}

/**
 * Why a bundle entry path (a module's path, from a ConfigMap key or a file name) is refused, or undefined.
 *
 * The path may start with one '/' (the form OPA writes and `BundleModule.path` uses); otherwise it is
 * relative. Refused: empty names and segments, '.' and '..' segments, absolute-looking Windows paths
 * (`C:`), backslashes, NUL and control characters, lone surrogates, and base names OPA treats specially:
 * '*.manifest', '*.manifest.pb', '*signatures.json', 'patch.json', 'data.json', 'data.yaml', 'data.yml',
 * 'policy.wasm', 'plan.json', 'plan.pb'.
 *
 * This is the check for names *we do not choose*: a data document's own `/…/data.json` entry is built by
 * `buildBundle`, and its path segments are checked with `dataPathProblem`, not with this function.
 */
export function bundleEntryProblem(path: string): string | undefined {
  const quoted = JSON.stringify(path);
  const refuse = (reason: string): string => `bundle entry ${quoted} is refused: it ${reason}`;
  if (path === '' || path === '/') return refuse('is empty');
  const chars = characterProblem(path);
  if (chars !== undefined) return refuse(chars);
  const relative = path.startsWith('/') ? path.slice(1) : path;
  if (/^[A-Za-z]:/.test(relative)) return refuse('looks like an absolute Windows path');
  const segments = relative.split('/');
  if (segments.some((s) => s === '')) {
    return refuse('has an empty segment ("//", a trailing "/", or more than one leading "/")');
  }
  if (segments.includes('..')) return refuse('has a ".." segment');
  if (segments.includes('.')) return refuse('has a "." segment');
  const special = specialBaseNameProblem(segments[segments.length - 1] ?? '');
  return special === undefined ? undefined : refuse(special);
}

/**
 * Why a data document's path segments (`['opa', 'my-cm', 'x.json']` → entry `/opa/my-cm/x.json/data.json`)
 * cannot be placed in a bundle, or undefined. Each segment becomes one folder of the entry name, so it
 * must be non-empty, hold no '/', and not be '.' or '..'; the first must not start with '.', because OPA
 * strips leading '.' characters from a data file's folder (v1/bundle/bundle.go `getNormalizedPath`) and
 * the data would land elsewhere. The empty path is the root document (`/data.json`).
 */
export function dataPathProblem(path: readonly string[]): string | undefined {
  const quoted = JSON.stringify(path);
  const refuse = (reason: string): string => `data path ${quoted} is refused: ${reason}`;
  for (const [i, segment] of path.entries()) {
    if (typeof segment !== 'string') return refuse(`segment ${i} is not a string`);
    if (segment === '') return refuse(`segment ${i} is empty`);
    if (segment === '.' || segment === '..') return refuse(`segment ${i} is "${segment}"`);
    if (segment.includes('/')) return refuse(`segment ${i} contains "/"`);
    const chars = characterProblem(segment);
    if (chars !== undefined) return refuse(`segment ${i} ${chars}`);
  }
  if (path[0]?.startsWith('.') === true) {
    return refuse('the first segment starts with ".", which OPA strips from data paths');
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------
// Bundle names: one rule for `--bundle-name`, the `openpolicyagent.org/bundle` label, what the registry
// publishes and what a request under /bundles/ may ask for, so that every name that can be published
// can be fetched and nothing else is even looked up.

const BUNDLE_NAME_SEGMENT = /^[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?$/;

/**
 * The longest bundle name. 253, a DNS name's limit: the checks of `--bundle-name` and of the bundle
 * label always allowed this much and no more, so nothing longer was ever published; the HTTP server
 * and the registry, which allowed 512, only looked up names that could not exist. Far below what a
 * URL path or a file path (`<dir>/<name>.tar.gz`, PATH_MAX 4096) can hold.
 */
export const BUNDLE_NAME_MAX_LENGTH = 253;

/**
 * The longest segment: a DNS label's limit, which is also the limit of the bundle label's value (so
 * no label-named bundle ever had a longer one). Each segment becomes a folder or a file name under
 * --bundles-dir (`<segment>.tar.gz`, written through `<segment>.tar.gz.partial-<pid>`), and file names
 * are limited to 255 bytes (NAME_MAX): a 253-character single-segment name could be configured but
 * not written. 63 leaves room for any suffix the writer needs.
 */
export const BUNDLE_NAME_SEGMENT_MAX_LENGTH = 63;

/** The suffix of a bundle's file (`<dir>/<name>.tar.gz`), and of the file form of its URL. */
export const BUNDLE_FILE_SUFFIX = '.tar.gz';

const BUNDLE_NAME_SEGMENT_RULE =
  "each '/'-separated segment must consist of lower case alphanumeric characters, '-', '_' or '.', " +
  "and must start and end with an alphanumeric character (e.g. 'policies' or 'team-a/authz')";

/**
 * The parts of the bundle-name rule that `name` breaks, one message each (Kubernetes field-error
 * wording, as `--bundle-name` reports them); empty when the name is fine. A name is one or more
 * '/'-separated segments of `[a-z0-9]([-a-z0-9_.]*[a-z0-9])?`, without '..' anywhere, each at most
 * `BUNDLE_NAME_SEGMENT_MAX_LENGTH` characters and `BUNDLE_NAME_MAX_LENGTH` in all. The narrow
 * alphabet is why a bundle name can be used as it is in a URL path and as folder and file names, on
 * any file system, without escaping.
 *
 * @example
 * bundleNameErrors('team-a/authz'); // []
 * bundleNameErrors('a/../b');       // ["must not contain '..'", "each '/'-separated segment must …"]
 */
export function bundleNameErrors(name: string): string[] {
  const errors: string[] = [];
  // Bytes, as Kubernetes counts; the same as characters for every name the alphabet allows.
  if (Buffer.byteLength(name, 'utf8') > BUNDLE_NAME_MAX_LENGTH) {
    errors.push(`must be no more than ${BUNDLE_NAME_MAX_LENGTH} characters`);
  }
  if (name.includes('..')) errors.push("must not contain '..'");
  const segments = name.split('/');
  if (!segments.every((segment) => BUNDLE_NAME_SEGMENT.test(segment))) {
    errors.push(BUNDLE_NAME_SEGMENT_RULE);
  }
  if (segments.some((segment) => segment.length > BUNDLE_NAME_SEGMENT_MAX_LENGTH)) {
    errors.push(
      `each '/'-separated segment must be no more than ${BUNDLE_NAME_SEGMENT_MAX_LENGTH} characters`,
    );
  }
  return errors;
}

/**
 * Why a bundle name is refused (see `bundleNameErrors`), in a message that names it; or undefined.
 *
 * @example
 * bundleNameProblem('policies'); // undefined
 * bundleNameProblem('Policies'); // 'bundle name "Policies" is refused: each \'/\'-separated segment must …'
 */
export function bundleNameProblem(name: string): string | undefined {
  const errors = bundleNameErrors(name);
  if (errors.length === 0) return undefined;
  return `bundle name ${JSON.stringify(name)} is refused: ${errors.join('; ')}`;
}

/**
 * Why the name a request asks for under /bundles/ (already percent-decoded) is refused, or undefined:
 * a bundle name, or a bundle name followed by `.tar.gz` (the file form OPA may ask for). The same rule
 * as `bundleNameProblem`, so that every publishable name can be fetched in both forms, even one of
 * the maximum length.
 *
 * @example
 * requestedBundleNameProblem('team-a/authz.tar.gz'); // undefined
 * requestedBundleNameProblem('a/../b');              // 'bundle name "a/../b" is refused: …'
 */
export function requestedBundleNameProblem(name: string): string | undefined {
  const problem = bundleNameProblem(name);
  if (problem === undefined) return undefined;
  if (name.endsWith(BUNDLE_FILE_SUFFIX)) {
    const bundle = name.slice(0, -BUNDLE_FILE_SUFFIX.length);
    if (bundleNameProblem(bundle) === undefined) return undefined;
  }
  return problem;
}

// ---------------------------------------------------------------------------------------------------
// Other names taken from a URL path.

// OPA's status partition names are free text in its configuration; a longer one is a mistake or abuse.
const PATH_NAME_MAX_LENGTH = 512;

/**
 * Why a '/'-separated name taken from a URL path (already percent-decoded) that is *not* a bundle name,
 * such as the partition of a status report (`POST /status/<partition>`), is refused, or undefined.
 * `what` names it in the message (`partition name`). Refused: empty, longer than 512 characters, an
 * empty, '.' or '..' segment (a leading or trailing '/' included), and the characters no name from
 * outside may hold (NUL and other control characters, backslashes, lone surrogates). Such names are
 * lookup keys only, but one that could mean a path elsewhere (a proxy, a file-based mirror) is refused
 * rather than guessed at.
 *
 * @example
 * pathNameProblem('edge/eu', 'partition name'); // undefined
 * pathNameProblem('a/../b', 'partition name');  // 'partition name "a/../b" is refused: it has a ".." segment'
 */
export function pathNameProblem(name: string, what: string): string | undefined {
  const refuse = (reason: string): string => `${what} ${JSON.stringify(name)} is refused: it ${reason}`;
  if (name === '') return refuse('is empty');
  if (name.length > PATH_NAME_MAX_LENGTH) return refuse(`is longer than ${PATH_NAME_MAX_LENGTH} characters`);
  const chars = characterProblem(name);
  if (chars !== undefined) return refuse(chars);
  for (const segment of name.split('/')) {
    if (segment === '') return refuse('has an empty segment (a leading, trailing or doubled "/")');
    if (segment === '.' || segment === '..') return refuse(`has a "${segment}" segment`);
  }
  return undefined;
}
