// The text of `opa-sync --help`, generated from the flag table (config-flags.ts) so that it can
// never miss a flag or show a stale default.
import { FLAGS, flagEntries, formatDefault, type FlagName, type FlagSpec } from './config-flags.js';

const SUMMARY =
  'opa-sync: loads Rego policies and Kubernetes data into OPA, as kube-mgmt does, and serves the same policies as OPA bundles.';

const SYNTAX = `Values: --flag=value or --flag value; booleans --flag or --flag=false; lists take comma-separated
values and may be repeated; durations like 500ms, 5s, 1m30s, or a number of seconds.
Unknown flags are ignored with a warning; kube-mgmt's --opa-config and --analysis-entrypoint
(automatic replication, not implemented) are refused.`;

/** What no source flag means, from the table's `source` and `localDefault` entries. */
function localDefault(): string {
  const sources = flagEntries().filter(([, spec]) => spec.source === true);
  const current = sources.filter(([, spec]) => spec.deprecated !== true).map(([name]) => `--${name}`);
  const deprecated = sources.filter(([, spec]) => spec.deprecated === true).map(([name]) => `--${name}`);
  const list =
    `${current.slice(0, -1).join(', ')} or ${current.at(-1) ?? ''}` +
    (deprecated.length === 0 ? '' : ` (nor the deprecated ${deprecated.join(', ')})`);
  const bundle = FLAGS['bundle-name'].default;
  return wrap(
    `Local default: with none of ${list}, opa-sync needs no cluster: it serves the folder ` +
      `./${FLAGS['policies-dir'].localDefault} as the bundle "${bundle}" at ` +
      `http://${FLAGS['bundle-addr'].localDefault}/bundles/${bundle}, writes ./${FLAGS['bundles-dir'].localDefault}/ and logs ${FLAGS['log-format'].localDefault} ` +
      `(the "local default" values above, each unless its flag is given). This is what npm start runs.`,
  );
}

/** Wraps a paragraph at 100 columns, as the rest of the help text. */
function wrap(text: string): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > 100) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  return [...lines, line].join('\n');
}

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
    localDefault(),
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
