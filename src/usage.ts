// The text of `opa-sync --help`, generated from the flag table (config-flags.ts) so that it can
// never miss a flag or show a stale default.
import { flagEntries, formatDefault, type FlagName, type FlagSpec } from './config-flags.js';

const SUMMARY =
  'opa-sync: loads Rego policies and Kubernetes data into OPA, as kube-mgmt does, and serves the same policies as OPA bundles.';

const SYNTAX = `Values: --flag=value or --flag value; booleans --flag or --flag=false; lists take comma-separated
values and may be repeated; durations like 500ms, 5s, 1m30s, or a number of seconds.
Unknown flags are ignored with a warning; kube-mgmt's --opa-config and --analysis-entrypoint
(automatic replication, not implemented) are refused.`;

/** The full --help text. */
export function usage(): string {
  const entries = flagEntries();
  const current = entries.filter(([, spec]) => spec.deprecated !== true);
  const deprecated = entries.filter(([, spec]) => spec.deprecated === true);
  const width = Math.max(...entries.map((entry) => flagColumn(entry).length));
  const rows = (list: Array<[FlagName, FlagSpec]>): string =>
    list.map((entry) => `  ${flagColumn(entry).padEnd(width)}  ${describe(entry[1])}`).join('\n');

  return [
    SUMMARY,
    '',
    'Usage:',
    '  opa-sync [flags]',
    '',
    'Flags:',
    rows(current),
    '',
    'Deprecated kube-mgmt flags (accepted with a warning):',
    rows(deprecated),
    '',
    SYNTAX,
    '',
  ].join('\n');
}

/** `-h, --help bool` or `    --opa-url string`. */
function flagColumn([name, spec]: [FlagName, FlagSpec]): string {
  const short = spec.short === undefined ? '    ' : `-${spec.short}, `;
  return `${short}--${name} ${spec.kind}`;
}

function describe(spec: FlagSpec): string {
  return `${spec.help} (default ${formatDefault(spec)})`;
}
