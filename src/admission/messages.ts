// What the admission webhook says about OPA's errors, in the one line `kubectl` prints: the policy id,
// row:col, OPA's code and message, the first few of them and then "and N more". A parse error caused
// by U+00A0 (a non-breaking space, as text copied from a web page has) says so and where it is.

/** One of OPA's errors, as `opa check` reports it (location.file = the policy id). */
export interface RegoError {
  code: string;
  message: string;
  file: string;
  row?: number | undefined;
  col?: number | undefined;
}

/** How many errors a message lists before "and N more". */
export const MAX_LISTED_ERRORS = 3;

const NBSP = '\u00a0';

/** OPA's inner errors (parse and compile errors with their location) of one LoadError-shaped body. */
export function regoErrorsOf(body: { errors?: unknown[] }, fileOf: (file: string) => string): RegoError[] {
  return (body.errors ?? []).map((raw) => {
    const e = raw as {
      code?: unknown;
      message?: unknown;
      location?: { file?: unknown; row?: unknown; col?: unknown };
    };
    return {
      code: typeof e.code === 'string' ? e.code : 'rego_error',
      message: typeof e.message === 'string' ? e.message : '',
      file: fileOf(typeof e.location?.file === 'string' ? e.location.file : ''),
      row: typeof e.location?.row === 'number' ? e.location.row : undefined,
      col: typeof e.location?.col === 'number' ? e.location.col : undefined,
    };
  });
}

/** `row:col` of the first U+00A0 on the error's row (or anywhere in the text), 1-based, or undefined. */
export function nbspPosition(
  text: string,
  row: number | undefined,
): { row: number; col: number } | undefined {
  const lines = text.split('\n');
  const onRow = row === undefined ? -1 : (lines[row - 1]?.indexOf(NBSP) ?? -1);
  if (row !== undefined && onRow >= 0)
    return { row, col: [...(lines[row - 1] ?? '').slice(0, onRow)].length + 1 };
  for (let i = 0; i < lines.length; i += 1) {
    const at = lines[i]?.indexOf(NBSP) ?? -1;
    if (at >= 0) return { row: i + 1, col: [...(lines[i] ?? '').slice(0, at)].length + 1 };
  }
  return undefined;
}

/**
 * One error as a person reads it: `<policy id>:<row>:<col>: <code>: <message>`, with the U+00A0 hint
 * for a parse error of a text that holds one (`textOf` gives a policy's text).
 */
export function describeRegoError(e: RegoError, textOf: (file: string) => string | undefined): string {
  const where = e.row === undefined ? e.file : `${e.file}:${e.row}:${e.col ?? 0}`;
  let line = `${where}: ${e.code}: ${e.message}`;
  const text = textOf(e.file);
  if (e.code === 'rego_parse_error' && text !== undefined && text.includes(NBSP)) {
    const at = nbspPosition(text, e.row);
    if (at !== undefined) {
      line += ` (U+00A0, a non-breaking space as text copied from a web page has, at ${at.row}:${at.col}: replace it with a regular space)`;
    }
  }
  return line;
}

/** The first few items joined for one line, then "and N more". */
export function firstFew(items: readonly string[], max = MAX_LISTED_ERRORS): string {
  const listed = items.slice(0, max).join('; ');
  return items.length > max ? `${listed}; and ${items.length - max} more` : listed;
}

/** Several errors on one line: deduplicated (OPA repeats a parse error's place), the first few listed. */
export function describeRegoErrors(
  errors: readonly RegoError[],
  textOf: (file: string) => string | undefined,
): string {
  // The U+00A0 hint once: OPA reports "illegal token" after its own non-breaking-space message.
  const seen = new Set<string>();
  const lines: string[] = [];
  let hinted = false;
  for (const e of errors) {
    const line = describeRegoError(e, hinted ? () => undefined : textOf);
    if (line.includes('U+00A0')) hinted = true;
    if (seen.has(line)) continue;
    seen.add(line);
    lines.push(line);
  }
  return firstFew(lines);
}

/**
 * Whether an error only says that something of another package is not loaded (yet): an undefined
 * function or ref under `data.` outside the packages of the ConfigMap itself. Such ConfigMaps are
 * admitted with a warning, so that ConfigMaps that depend on each other can be created in any order.
 */
export function isMissingDependency(e: RegoError, ownPackages: readonly string[]): boolean {
  if (e.code !== 'rego_type_error' && e.code !== 'rego_compile_error') return false;
  const match = /^undefined (?:function|ref):? (data\.[^\s,]+)/.exec(e.message);
  const ref = match?.[1];
  if (ref === undefined) return false;
  return !ownPackages.some((pkg) => ref === `data.${pkg}` || ref.startsWith(`data.${pkg}.`));
}

/** The package a Rego text declares (first `package` line), for telling its own refs from others'. */
export function declaredPackage(text: string): string | undefined {
  return /^\s*package\s+([A-Za-z_][\w.]*)/m.exec(text)?.[1];
}
