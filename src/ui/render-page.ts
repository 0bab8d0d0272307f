// The page around the sections: head, header with the policy filters (a plain GET form, so that it
// works without JavaScript), the section links, and the login form of the token wall.
import { esc, time } from './html.js';
import { FOLDER, renderSections, type PolicyFilter } from './render-sections.js';
import type { UiSnapshot } from './snapshot.js';

/** The page's path on both ports; its assets, events and login are below it. */
export const UI_PATH = '/ui';

function head(title: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>${esc(title)}</title><link rel="stylesheet" href="${UI_PATH}/app.css"></head>`;
}

function filterForm(s: UiSnapshot, filter: PolicyFilter): string {
  const namespaces = [...new Set(s.policies.map((p) => p.namespace ?? FOLDER))].sort();
  if (filter.namespace !== '' && !namespaces.includes(filter.namespace)) namespaces.push(filter.namespace);
  const options = ['', ...namespaces]
    .map(
      (ns) =>
        `<option value="${esc(ns)}"${ns === filter.namespace ? ' selected' : ''}>${ns === '' ? 'all namespaces' : esc(ns)}</option>`,
    )
    .join('');
  return `<form id="filters" class="filters" method="get" action="${UI_PATH}" role="search" aria-label="Filter the policies">
<label>Namespace <select name="ns">${options}</select></label>
<label><input type="checkbox" name="errors" value="1"${filter.errorsOnly ? ' checked' : ''}> errors only</label>
<button type="submit">Apply</button></form>`;
}

/** The stamp of a render: when its snapshot was taken. */
export function stamp(s: UiSnapshot): string {
  return `updated ${time(s.generatedAt)}`;
}

/** The whole page for a first render; `loggedIn` adds the logout button (only with a token wall). */
export function renderPage(
  s: UiSnapshot,
  filter: PolicyFilter,
  options: { logout: boolean; version: string },
): string {
  const logout = options.logout
    ? `<form method="post" action="${UI_PATH}/logout" class="logout"><button type="submit">Log out</button></form>`
    : '';
  return `${head('opa-sync')}<body>
<header><div class="title"><h1>opa-sync</h1><span class="sub">v${esc(options.version)} · read-only</span>
<p id="updated" class="sub" role="status" aria-live="polite">${stamp(s)}</p><span id="live-state" class="sub"></span>${logout}</div>
<nav aria-label="Sections"><a href="#policies">Policies</a>${s.bundles === undefined ? '' : '<a href="#bundles">Bundles</a>'}${
    s.fleet === undefined ? '' : '<a href="#fleet">Fleet</a>'
  }${s.replication === undefined ? '' : '<a href="#replication">Replication</a>'}${
    s.opa === undefined ? '' : '<a href="#opa">OPA push</a>'
  }<a href="#parts">Parts</a></nav>
${filterForm(s, filter)}</header>
<main id="live">${renderSections(s, filter)}</main>
<script src="${UI_PATH}/live.js" defer></script></body></html>`;
}

/** The token wall: a form that posts the token once; the answer keeps it in an HttpOnly cookie. */
export function renderLogin(problem: string | undefined): string {
  return `${head('opa-sync: log in')}<body class="login"><main>
<h1>opa-sync</h1><p>This page needs one of the bearer tokens of the bundle server (a line of its token file).</p>
${problem === undefined ? '' : `<p class="problem" role="alert">${esc(problem)}</p>`}
<form method="post" action="${UI_PATH}/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button></form></main></body></html>`;
}
