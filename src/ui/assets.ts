// The page's stylesheet and its one script, served by opa-sync itself (nothing comes from elsewhere,
// and a Content-Security-Policy of 'self' holds). Kept as strings so that the esbuild bundle of dist/
// carries them without a copy step.
//
// The script only keeps the page live: it opens the event stream (/ui/events, with the page's own
// filter query) and puts each server-rendered update into <main>; changing a filter updates the URL
// and reopens the stream. Without it the page is the same, as of its last load.

export const STYLE = `:root{--bg:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--head:#f6f8fa;--ok:#116329;--ok-bg:#dafbe1;--err:#a40e26;--err-bg:#ffebe9;--warn:#7d4e00;--warn-bg:#fff8c5;--off-bg:#eaeef2;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;--head:#151b23;--ok:#7ee787;--ok-bg:#033a16;--err:#ffa198;--err-bg:#490202;--warn:#e3b341;--warn-bg:#3b2300;--off-bg:#262c36;--link:#4493f8}}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;background:var(--bg);color:var(--fg)}
a{color:var(--link)}header{position:sticky;top:0;z-index:1;background:var(--head);border-bottom:1px solid var(--line);padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center}
.title{display:flex;flex-wrap:wrap;gap:.25rem .75rem;align-items:baseline}h1{font-size:1.2rem;margin:0}h1+.sub{margin:0}#updated{margin:0}
nav{display:flex;flex-wrap:wrap;gap:.25rem .75rem}.filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
select,input,button{font:inherit;color:inherit;background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:.15rem .5rem}
button{cursor:pointer}main{padding:.5rem 1rem 2rem;max-width:1600px}section{margin-top:1rem}h2{font-size:1.1rem;margin:.5rem 0}
.count,.sub{color:var(--muted);font-size:.85rem;font-weight:normal}.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid var(--line)}
thead th{background:var(--head);font-size:.85rem}tbody th{font-weight:600}tr.has-errors th,tr.drifted th{border-left:4px solid var(--err)}
tr.drifted th{border-left-color:var(--warn)}code,pre{font:.85rem/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
ul{margin:0;padding-left:1.1rem}.modules{padding:0;list-style:none}.errors{margin:.25rem 0 0;color:var(--err)}.errors li{margin:.2rem 0}
pre.line{margin:.2rem 0;padding:.25rem .5rem;background:var(--err-bg);color:var(--fg);border-radius:4px;overflow-x:auto}.row{color:var(--muted)}
.badge{display:inline-block;padding:0 .45rem;border-radius:999px;font-size:.8rem;font-weight:600}
.badge.ok{color:var(--ok);background:var(--ok-bg)}.badge.error{color:var(--err);background:var(--err-bg)}.badge.warn{color:var(--warn);background:var(--warn-bg)}.badge.off{color:var(--fg);background:var(--off-bg)}
.sink+.sink{margin-top:.3rem}.sink-name{font-weight:600}.none,.empty{color:var(--muted)}.loc{font-family:ui-monospace,monospace}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr));gap:.5rem 1rem;margin:0}.facts dt{color:var(--muted);font-size:.85rem}.facts dd{margin:0}
.parts{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1.25rem}.logout{display:inline}
body.login main{max-width:26rem;margin:10vh auto;padding:1rem}body.login form{display:grid;gap:.5rem}.problem{color:var(--err)}
@media (max-width:700px){body{font-size:14px}header{position:static}
table,tbody,tr,th,td{display:block}thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
tr{border-bottom:1px solid var(--line);padding:.35rem 0}th,td{border:0;padding:.15rem .5rem}
td[data-label]::before{content:attr(data-label);display:block;color:var(--muted);font-size:.75rem}}`;

export const SCRIPT = `(() => {
  'use strict';
  const main = document.getElementById('live');
  const updated = document.getElementById('updated');
  const state = document.getElementById('live-state');
  const form = document.getElementById('filters');
  if (!main || !form || typeof EventSource !== 'function') return;
  let source;
  const connect = () => {
    if (source) source.close();
    source = new EventSource('/ui/events' + location.search);
    source.onopen = () => { state.textContent = 'live'; };
    source.onmessage = (event) => {
      const update = JSON.parse(event.data);
      main.innerHTML = update.main;
      updated.innerHTML = update.stamp;
    };
    source.onerror = () => {
      state.textContent = source.readyState === EventSource.CLOSED ? 'not live: reload the page' : 'reconnecting…';
    };
  };
  const apply = () => {
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value !== '') query.set(name, String(value));
    const search = query.toString();
    history.replaceState(null, '', search === '' ? location.pathname : '?' + search);
    connect();
  };
  form.addEventListener('change', apply);
  form.addEventListener('submit', (event) => { event.preventDefault(); apply(); });
  connect();
})();
`;
