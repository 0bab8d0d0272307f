// HTML escaping and the few formatting helpers the page's templates share. Every value that reaches
// the page from outside (ConfigMap names, module text, OPA's messages, fleet labels) goes through esc().

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text or attribute value, escaped for HTML. */
export function esc(value: string | number | undefined): string {
  if (value === undefined) return '';
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

/** A `<time>` element for an ISO time, shown as `YYYY-MM-DD HH:MM:SSZ`; a dash when there is none. */
export function time(iso: string | undefined): string {
  if (iso === undefined) return '<span class="none">–</span>';
  const shown = iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return `<time datetime="${esc(iso)}">${esc(shown)}</time>`;
}

/** A revision (a long hash) shortened to 12 characters, the whole one in its title. */
export function revision(value: string | undefined): string {
  if (value === undefined) return '<span class="none">–</span>';
  const short = value.length > 14 ? `${value.slice(0, 12)}…` : value;
  return `<code title="${esc(value)}">${esc(short)}</code>`;
}

/** A byte count for people: 1,532 B, 12.3 kB, 4.5 MB. */
export function bytes(n: number | undefined): string {
  if (n === undefined) return '–';
  if (n < 10_000) return `${n.toLocaleString('en-US')} B`;
  if (n < 10_000_000) return `${(n / 1000).toFixed(1)} kB`;
  return `${(n / 1_000_000).toFixed(1)} MB`;
}

/** A status badge: its text says the state (colour only repeats it). */
export function badge(kind: 'ok' | 'error' | 'warn' | 'off', text: string): string {
  return `<span class="badge ${kind}">${esc(text)}</span>`;
}
