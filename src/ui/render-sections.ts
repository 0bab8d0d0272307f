// The page's sections, rendered on the server from a snapshot: the first render (which needs no
// JavaScript) and every live update are this same HTML, so the page has one renderer.
import { badge, bytes, esc, revision, time } from './html.js';
import type { BundleView, ErrorView, FleetView, PolicyView, UiSnapshot } from './snapshot.js';

/** What the policies are filtered by (the form's query parameters `ns` and `errors`). */
export interface PolicyFilter {
  /** Only origins of this namespace; '' for all, FOLDER for the files of the policies folder. */
  namespace: string;
  errorsOnly: boolean;
}

/** The namespace filter's value for the files of the policies folder (no namespace of Kubernetes has it). */
export const FOLDER = '(folder)';

export function filterFrom(query: URLSearchParams): PolicyFilter {
  return { namespace: query.get('ns') ?? '', errorsOnly: query.get('errors') === '1' };
}

export function applyFilter(policies: readonly PolicyView[], filter: PolicyFilter): PolicyView[] {
  return policies.filter(
    (p) =>
      (!filter.errorsOnly || p.hasErrors) &&
      (filter.namespace === '' || (p.namespace ?? FOLDER) === filter.namespace),
  );
}

/** A table that scrolls sideways on a narrow screen sits in a named region that the keyboard can reach. */
const scroll = (section: string): string =>
  `<div class="scroll" role="region" tabindex="0" aria-labelledby="${section}-h">`;

function errorList(errors: readonly ErrorView[]): string {
  const items = errors.map((e) => {
    const where =
      e.row === undefined
        ? ''
        : ` <span class="loc">${esc(e.file)}:${e.row}${e.col === undefined ? '' : `:${e.col}`}</span>`;
    const line =
      e.line === undefined
        ? ''
        : `<pre class="line"><span class="row">${esc(e.row)}</span> ${esc(e.line)}${
            e.col !== undefined && e.col >= 1 ? `\n${' '.repeat(String(e.row).length + e.col)}^` : ''
          }</pre>`;
    return `<li><code>${esc(e.code)}</code>${where}: ${esc(e.message)}${line}</li>`;
  });
  return `<ul class="errors">${items.join('')}</ul>`;
}

function policyRow(p: PolicyView): string {
  const sinks =
    p.sinks.length === 0
      ? badge('off', 'not loaded yet')
      : p.sinks
          .map(
            (s) =>
              `<div class="sink"><span class="sink-name">${esc(s.sink)}</span> ${
                s.errors.length === 0 ? badge('ok', 'ok') : badge('error', 'error')
              } ${time(s.at)}${s.errors.length === 0 ? '' : errorList(s.errors)}</div>`,
          )
          .join('');
  const modules =
    p.modules.length === 0
      ? `${p.documents} data document${p.documents === 1 ? '' : 's'}`
      : `<ul class="modules">${p.modules.map((m) => `<li><code>${esc(m)}</code></li>`).join('')}</ul>`;
  return `<tr class="${p.hasErrors ? 'has-errors' : ''}" data-origin="${esc(p.key)}">
<th scope="row">${esc(p.name)}<div class="sub">${esc(p.kind)} · ${esc(p.role)}${p.bundle === undefined ? '' : ` · bundle ${esc(p.bundle)}`}</div></th>
<td data-label="Modules">${modules}</td><td data-label="Status">${sinks}</td><td data-label="Last change">${time(p.changedAt)}</td>
<td data-label="Retries">${p.retryPending ? badge('warn', 'retry pending') : '<span class="none">–</span>'}</td></tr>`;
}

function policiesSection(s: UiSnapshot, filter: PolicyFilter): string {
  const shown = applyFilter(s.policies, filter);
  const broken = s.policies.filter((p) => p.hasErrors).length;
  const body =
    shown.length === 0
      ? `<p class="empty">${s.policies.length === 0 ? 'No policy or data origin yet.' : 'No origin matches the filter.'}</p>`
      : `${scroll('policies')}<table><thead><tr><th scope="col">Origin</th><th scope="col">Modules</th><th scope="col">Status per sink</th><th scope="col">Last change</th><th scope="col">Retries</th></tr></thead>
<tbody>${shown.map(policyRow).join('')}</tbody></table></div>`;
  return `<section id="policies" aria-labelledby="policies-h"><h2 id="policies-h">Policies <span class="count">${s.policies.length} origins, ${broken} with errors${shown.length === s.policies.length ? '' : `, ${shown.length} shown`}</span></h2>${body}</section>`;
}

function ociCell(b: BundleView): string {
  const o = b.oci;
  if (!o.configured) return '<span class="none">not configured</span>';
  const state = o.error !== undefined ? badge('error', 'failing') : badge('ok', 'pushed');
  return `${state} <code>${esc(o.reference)}</code> ${revision(o.pushedRevision)} ${time(o.pushedAt)}${
    o.error === undefined ? '' : `<div class="errors">${esc(o.error)}</div>`
  }`;
}

function bundlesSection(s: UiSnapshot): string {
  const b = s.bundles;
  if (b === undefined) return '';
  const rows = b.list.map(
    (
      x,
    ) => `<tr data-bundle="${esc(x.name)}"><th scope="row">${esc(x.name)}</th><td data-label="Revision">${revision(x.revision)}</td><td data-label="Size">${bytes(x.bytes)}</td>
<td data-label="Roots">${x.roots.length === 0 ? '<span class="none">–</span>' : x.roots.map((r) => `<code>${esc(r === '' ? '(all)' : r)}</code>`).join(' ')}</td>
<td data-label="Signing">${x.signed ? badge('ok', 'signed') : badge('off', 'unsigned')}</td>
<td data-label="Last refused">${x.lastRefused === undefined ? '<span class="none">none</span>' : `${esc(x.lastRefused.origin)} ${time(x.lastRefused.at)}${errorList(x.lastRefused.errors)}`}</td>
<td data-label="OCI publish">${ociCell(x)}</td></tr>`,
  );
  return `<section id="bundles" aria-labelledby="bundles-h"><h2 id="bundles-h">Bundles <span class="count">last build ${time(b.lastBuildAt)}${
    b.lastBuildMs === undefined ? '' : `, ${b.lastBuildMs} ms`
  }</span></h2>
${scroll('bundles')}<table><thead><tr><th scope="col">Name</th><th scope="col">Revision</th><th scope="col">Size</th><th scope="col">Roots</th><th scope="col">Signing</th><th scope="col">Last refused change</th><th scope="col">OCI publish</th></tr></thead>
<tbody>${rows.join('')}</tbody></table></div></section>`;
}

function fleetRow(f: FleetView): string {
  const labels = Object.entries(f.labels)
    .filter(([k]) => k !== 'id' && k !== 'version')
    .map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`)
    .join(' ');
  const bundles = f.bundles
    .map(
      (b) =>
        `<div class="sink"><span class="sink-name">${esc(b.name)}</span> ${revision(b.activeRevision)} ${
          b.drifted ? badge('warn', 'drifted') : b.currentRevision === undefined ? '' : badge('ok', 'current')
        } <span class="sub">activated ${time(b.lastSuccessfulActivation)}</span>${b.errors.length === 0 ? '' : errorList(b.errors)}</div>`,
    )
    .join('');
  return `<tr class="${f.drifted ? 'drifted' : ''}" data-instance="${esc(f.id)}"><th scope="row"><code>${esc(f.id)}</code></th>
<td data-label="Labels">${labels === '' ? '<span class="none">–</span>' : labels}</td><td data-label="Version">${esc(f.version ?? '–')}</td><td data-label="Bundles">${bundles}</td><td data-label="Last seen">${time(f.lastSeen)}</td></tr>`;
}

function fleetSection(s: UiSnapshot): string {
  const fleet = s.fleet;
  if (fleet === undefined) return '';
  const drifted = fleet.filter((f) => f.drifted).length;
  const body =
    fleet.length === 0
      ? '<p class="empty">No OPA has reported its status yet (an OPA reports with <code>status: {service: …}</code> in its configuration).</p>'
      : `${scroll('fleet')}<table><thead><tr><th scope="col">Instance</th><th scope="col">Labels</th><th scope="col">Version</th><th scope="col">Active revision per bundle</th><th scope="col">Last seen</th></tr></thead>
<tbody>${fleet.map(fleetRow).join('')}</tbody></table></div>`;
  return `<section id="fleet" aria-labelledby="fleet-h"><h2 id="fleet-h">Fleet <span class="count">${fleet.length} OPAs, ${drifted} not on the current revision</span></h2>${body}</section>`;
}

function replicationSection(s: UiSnapshot): string {
  const rep = s.replication;
  if (rep === undefined) return '';
  const rows = rep.map(
    (
      r,
    ) => `<tr data-resource="${esc(r.resource)}"><th scope="row"><code>${esc(r.resource)}</code><div class="sub">data.${esc(r.path.replaceAll('/', '.'))}</div></th>
<td data-label="State">${r.notServed ? badge('error', 'not served') : r.listed ? badge('ok', 'watching') : badge('warn', 'listing')}</td>
<td data-label="Objects">${r.objects.toLocaleString('en-US')}</td><td data-label="Last event">${time(r.lastEventAt)}</td><td data-label="Watch restarts">${r.watchRestarts}</td>
<td data-label="Last error">${r.lastError === undefined ? '<span class="none">none</span>' : `${esc(r.lastError.message)} ${time(r.lastError.at)}`}</td></tr>`,
  );
  return `<section id="replication" aria-labelledby="replication-h"><h2 id="replication-h">Replication</h2>
${scroll('replication')}<table><thead><tr><th scope="col">Resource</th><th scope="col">State</th><th scope="col">Objects</th><th scope="col">Last event</th><th scope="col">Watch restarts</th><th scope="col">Last error</th></tr></thead>
<tbody>${rows.join('')}</tbody></table></div></section>`;
}

function opaSection(s: UiSnapshot): string {
  const o = s.opa;
  if (o === undefined) return '';
  return `<section id="opa" aria-labelledby="opa-h"><h2 id="opa-h">OPA push</h2><dl class="facts">
<div><dt>OPA</dt><dd><code>${esc(o.target ?? '–')}</code></dd></div>
<div><dt>Reachable</dt><dd>${o.reachable ? badge('ok', 'yes') : badge('error', 'no')}</dd></div>
<div><dt>Initial load</dt><dd>${o.initialLoadDone ? 'done' : 'in progress'}</dd></div>
<div><dt>Last full push</dt><dd>${time(o.lastFullPushAt)}</dd></div>
<div><dt>Restarts detected</dt><dd>${o.restartsDetected}${o.lastRestartAt === undefined ? '' : `, last ${time(o.lastRestartAt)}`}</dd></div>
<div><dt>Retries pending</dt><dd>${o.retriesPending.length}</dd></div>
<div><dt>Queued</dt><dd>${o.queued}</dd></div></dl></section>`;
}

function partsSection(s: UiSnapshot): string {
  const items = s.parts.map(({ name, health }) => {
    const kind =
      health.phase === 'running'
        ? 'ok'
        : health.phase === 'failed' || health.phase === 'restarting'
          ? 'error'
          : 'off';
    return `<li>${esc(name)} ${badge(kind, health.phase)}${health.restarts > 0 ? ` <span class="sub">${health.restarts} restarts</span>` : ''}${
      health.lastError === undefined ? '' : ` <span class="sub">${esc(health.lastError)}</span>`
    }</li>`;
  });
  return `<section id="parts" aria-labelledby="parts-h"><h2 id="parts-h">Parts <span class="count">${s.healthy ? 'all running' : 'one is failing'}</span></h2><ul class="parts">${items.join('')}</ul></section>`;
}

/** The live part of the page: every section, filtered as asked. */
export function renderSections(s: UiSnapshot, filter: PolicyFilter): string {
  return [
    policiesSection(s, filter),
    bundlesSection(s),
    fleetSection(s),
    replicationSection(s),
    opaSection(s),
    partsSection(s),
  ].join('\n');
}
