// Where each bundle is published in an OCI registry: the --oci-repository entries, parsed and checked
// once, and the repository (registry host + repository path) of a bundle. An entry is
// `[BUNDLE=]HOST[:PORT]/REPO[/…]`; one without `BUNDLE=` is a template when it holds `{bundle}` (every
// bundle not named by an entry of its own goes there, its name in place of `{bundle}`), and otherwise
// the repository of the default bundle (--bundle-name). Names follow the OCI distribution spec, so a
// registry never gets a reference it must refuse.
import { bundleNameProblem } from '../util/safe-names.js';

/** One repository in one registry. */
export interface OciRepository {
  /** `host[:port]`, as written in the flag (and in OPA's `resource`). */
  readonly registry: string;
  /** The repository path inside the registry, e.g. `opa/policies`. */
  readonly name: string;
}

/** What --oci-repository says, checked. */
export interface OciTargets {
  /** Repositories of bundles named explicitly (or the default bundle's). */
  readonly byBundle: ReadonlyMap<string, OciRepository>;
  /** The `{bundle}` template, if one was given. */
  readonly template: OciRepository | undefined;
}

/** The repository-path rule of the OCI distribution spec (components of lowercase alphanumerics and separators). */
const REPOSITORY_NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
/** A DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port. */
const REGISTRY_HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
/** The tag rule of the OCI distribution spec. */
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const PLACEHOLDER = '{bundle}';

/** Why `name` cannot be an OCI repository path, or undefined. */
export function repositoryNameProblem(name: string): string | undefined {
  if (name.length > 255) return `the repository path ${JSON.stringify(name)} is longer than 255 characters`;
  if (!REPOSITORY_NAME.test(name)) {
    return (
      `${JSON.stringify(name)} is not an OCI repository path: '/'-separated components of lowercase ` +
      `letters and digits, joined inside a component by '.', '_', '__' or dashes`
    );
  }
  return undefined;
}

/** Why `tag` cannot be an OCI tag, or undefined. */
export function tagProblem(tag: string): string | undefined {
  return TAG.test(tag)
    ? undefined
    : `${JSON.stringify(tag)} is not an OCI tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'`;
}

/** `HOST[:PORT]/REPO[/…]` split and checked (a template's `{bundle}` is checked as a plain name). */
function parseRepository(raw: string, problems: string[], flag: string): OciRepository | undefined {
  const slash = raw.indexOf('/');
  if (/^[a-z]+:\/\//i.test(raw)) {
    problems.push(
      `${flag}: ${JSON.stringify(raw)} must not have a scheme: write HOST[:PORT]/REPO (https unless --oci-plain-http)`,
    );
    return undefined;
  }
  if (slash <= 0 || slash === raw.length - 1) {
    problems.push(`${flag}: ${JSON.stringify(raw)} is not HOST[:PORT]/REPO[/…]`);
    return undefined;
  }
  const registry = raw.slice(0, slash);
  const name = raw.slice(slash + 1);
  const hostOk = REGISTRY_HOST.test(registry);
  if (!hostOk) problems.push(`${flag}: ${JSON.stringify(registry)} is not a registry HOST[:PORT]`);
  if (raw.includes(':', slash)) {
    problems.push(`${flag}: ${JSON.stringify(raw)} names a tag: the tags are the revision and --oci-tag`);
    return undefined;
  }
  const problem = repositoryNameProblem(name.split(PLACEHOLDER).join('x'));
  if (problem !== undefined) problems.push(`${flag}: ${problem}`);
  return hostOk && problem === undefined ? { registry, name } : undefined;
}

/**
 * Parses the --oci-repository entries; every problem goes to `problems`.
 *
 * @example
 * parseOciTargets(['127.0.0.1:5000/opa/{bundle}', 'main=ghcr.io/acme/main'], 'policies', problems);
 */
export function parseOciTargets(
  entries: readonly string[],
  defaultBundle: string,
  problems: string[],
): OciTargets {
  const flag = '--oci-repository';
  const byBundle = new Map<string, OciRepository>();
  let template: OciRepository | undefined;
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    const explicit = eq >= 0 ? entry.slice(0, eq) : undefined;
    const raw = eq >= 0 ? entry.slice(eq + 1) : entry;
    if (explicit !== undefined) {
      const problem = bundleNameProblem(explicit);
      if (problem !== undefined) {
        problems.push(`${flag}: ${JSON.stringify(entry)}: ${problem}`);
        continue;
      }
    }
    const repo = parseRepository(raw, problems, flag);
    if (repo === undefined) continue;
    if (explicit === undefined && raw.includes(PLACEHOLDER)) {
      if (template !== undefined) problems.push(`${flag}: more than one {bundle} template`);
      template = repo;
      continue;
    }
    if (raw.includes(PLACEHOLDER)) {
      problems.push(`${flag}: ${JSON.stringify(entry)} names a bundle, so it cannot be a {bundle} template`);
      continue;
    }
    const bundle = explicit ?? defaultBundle;
    if (byBundle.has(bundle))
      problems.push(`${flag}: bundle ${JSON.stringify(bundle)} is given two repositories`);
    byBundle.set(bundle, repo);
  }
  return { byBundle, template };
}

/**
 * The repository of a bundle, or undefined when it is not published to OCI; a template that gives a
 * path the registry would refuse (a bundle name such as `a..b`) is an error naming the bundle.
 */
export function repositoryOf(
  targets: OciTargets,
  bundle: string,
): OciRepository | { problem: string } | undefined {
  const explicit = targets.byBundle.get(bundle);
  if (explicit !== undefined) return explicit;
  if (targets.template === undefined) return undefined;
  const name = targets.template.name.split(PLACEHOLDER).join(bundle);
  const problem = repositoryNameProblem(name);
  if (problem !== undefined)
    return { problem: `bundle ${JSON.stringify(bundle)} cannot be published to OCI: ${problem}` };
  return { registry: targets.template.registry, name };
}

/** `host/name:tag`, as OPA's `bundles[_].resource` and oras take it. */
export function referenceOf(repo: OciRepository, tag: string): string {
  return `${repo.registry}/${repo.name}:${tag}`;
}
