// Checks on names that come from outside (ConfigMap keys, folder file names, bundle names) before they
// become bundle entries, data paths or URL paths. Every name from outside is hostile (DESIGN.md habit 9):
// each check returns why a name is refused, in a message that names it (JSON-quoted, so control
// characters show and cannot forge log lines), or undefined when the name is fine.
//
// The special names are those OPA v1.22.3 treats specially inside a bundle (v1/bundle/bundle.go `Read`,
// `preProcessBundle`): an entry whose name happens to match one of them would not be loaded as what
// the user meant, and some (patch.json, *.manifest, *signatures.json) change how the whole bundle loads.

/** Why a string cannot be used as (part of) a bundle entry name, or undefined. Shared by every check. */
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

const BUNDLE_NAME_SEGMENT = /^[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?$/;
const BUNDLE_NAME_MAX = 253;

/**
 * Why a bundle name is refused, or undefined. A name is one or more segments of
 * `[a-z0-9]([-a-z0-9_.]*[a-z0-9])?` joined by '/', without '..' anywhere, at most 253 characters.
 * Bundle names become URL paths and file names (`<dir>/<name>.tar.gz`), hence the narrow alphabet.
 */
export function bundleNameProblem(name: string): string | undefined {
  const quoted = JSON.stringify(name);
  const refuse = (reason: string): string => `bundle name ${quoted} is refused: ${reason}`;
  if (name === '') return refuse('it is empty');
  if (name.length > BUNDLE_NAME_MAX) return refuse(`it is longer than ${BUNDLE_NAME_MAX} characters`);
  if (name.includes('..')) return refuse('it contains ".."');
  if (name.startsWith('/') || name.endsWith('/')) return refuse('it starts or ends with "/"');
  const bad = name.split('/').find((s) => !BUNDLE_NAME_SEGMENT.test(s));
  if (bad !== undefined) {
    return refuse(
      `segment ${JSON.stringify(bad)} is not lowercase letters, digits, '-', '_' and '.', ` +
        'starting and ending with a letter or digit',
    );
  }
  return undefined;
}
