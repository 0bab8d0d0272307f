// What a bundle request asks for, read from its raw parts: the bundle name in the path (hostile input,
// checked before it is ever looked up), whether `If-None-Match` names the current ETag, and the `wait`
// of OPA's `Prefer` header. Pure functions, shared by the fast path and the express routes.
import { InvalidInputError } from '../util/errors.js';
import { pathNameProblem, requestedBundleNameProblem } from '../util/safe-names.js';

/**
 * The `wait=<seconds>` preference of a `Prefer` header, or undefined. OPA sends
 * `modes=snapshot,delta;wait=30`: the comma belongs to `modes`, so the header is not split on commas;
 * `wait` is found as a whole parameter name anywhere in it.
 */
export function parsePreferWait(prefer: string | undefined): number | undefined {
  if (prefer === undefined) return undefined;
  const match = /(?:^|[\s;,])wait\s*=\s*"?(\d{1,9})"?\s*(?=$|[;,])/i.exec(prefer);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/**
 * Whether a `Prefer` header asks for delta bundles: OPA sends `modes=snapshot,delta` (with `;wait=N`
 * when long polling). Without `delta` among the modes, a client never gets one.
 */
export function prefersDelta(prefer: string | undefined): boolean {
  if (prefer === undefined) return false;
  const match = /(?:^|[\s;])modes\s*=\s*"?([A-Za-z,\s]*)"?\s*(?=$|;)/i.exec(prefer);
  return (match?.[1] ?? '').split(',').some((mode) => mode.trim().toLowerCase() === 'delta');
}

/** How long a long poll asking for `waitSeconds` is held: a little under the wait, so OPA gets the 304 first. */
export function holdMilliseconds(waitSeconds: number): number {
  return waitSeconds * 1000 - Math.min(1000, waitSeconds * 100);
}

function opaqueTag(tag: string): string {
  let t = tag.trim();
  if (t.startsWith('W/')) t = t.slice(2);
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) t = t.slice(1, -1);
  return t;
}

/**
 * Whether an `If-None-Match` value names `etag` (weak comparison, as RFC 9110 asks for this header):
 * `W/` prefixes are ignored, a comma list matches if any member does, `*` matches anything.
 */
export function etagMatches(ifNoneMatch: string, etag: string): boolean {
  // What OPA sends: the ETag it was given, as it was given. No parsing (nor allocation) for that.
  if (ifNoneMatch === etag) return true;
  const wanted = opaqueTag(etag);
  // A quoted tag may itself hold commas, so quoted tags are taken whole before splitting the rest.
  for (const candidate of ifNoneMatch.match(/(?:W\/)?"[^"]*"|[^\s,]+/g) ?? []) {
    if (candidate === '*' || opaqueTag(candidate) === wanted) return true;
  }
  return false;
}

/** The path of a raw request target: everything before `?` or `#`. */
export function pathOf(url: string): string {
  const end = url.search(/[?#]/);
  return end === -1 ? url : url.slice(0, end);
}

/**
 * The name under `prefix` of a raw (not yet decoded) request path, decoded one segment at a time.
 * Throws InvalidInputError for bad percent-encoding, an encoded '/' inside a segment (`%2f..`), and any
 * name the rule for `what` refuses (safe-names): for a bundle, the bundle-name rule the registry
 * publishes with (plus the `.tar.gz` form); for a partition, `pathNameProblem`.
 */
export function nameFromPath(path: string, prefix: string, what: 'bundle' | 'partition'): string {
  if (!path.startsWith(prefix)) {
    throw new InvalidInputError(`invalid_${what}_name`, `the request path is not under ${prefix}`);
  }
  const segments: string[] = [];
  for (const raw of path.slice(prefix.length).split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch (err) {
      throw new InvalidInputError(`invalid_${what}_name`, `the ${what} name is not valid percent-encoding`, {
        cause: err,
      });
    }
    if (segment.includes('/')) {
      throw new InvalidInputError(`invalid_${what}_name`, `the ${what} name has an encoded '/' in a segment`);
    }
    segments.push(segment);
  }
  const name = segments.join('/');
  const problem =
    what === 'bundle' ? requestedBundleNameProblem(name) : pathNameProblem(name, `${what} name`);
  if (problem !== undefined) throw new InvalidInputError(`invalid_${what}_name`, problem);
  return name;
}
