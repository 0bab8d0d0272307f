// The bad-input corpus (test/fixtures/bad-inputs/, one case a file) against the sidecar on the real
// kube-apiserver with a real OPA: each case's ConfigMaps are applied, the stated status (code, and the
// objects and keys it names) is waited for, and everything else — OPA's /v1/policies and /v1/data, and
// the other ConfigMaps' annotations — is checked to be exactly as before. Then: the conflict cases keep
// their winner across an OPA restart, 1,000 policy ConfigMaps created at once all get annotated, and a
// 401 from OPA on a whole-collection PUT (token rotated) is retried until the token is right again.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { V1NetworkPolicy } from '@kubernetes/client-node';
import { NetworkingV1Api } from '@kubernetes/client-node';
import { controlPlane, createNamespace, extraOpa, waitFor, type OpaServer } from '../harness/index.js';
import type { OpaSyncProcess } from '../harness/opa-sync.js';
import {
  DATA_LABEL,
  OK,
  POLICY_LABEL,
  STATUS,
  adminCore,
  cleanupAfterAll,
  deleteConfigMap,
  evaluate,
  opaData,
  putConfigMap,
  scrapeMetric,
  startBundleSync,
  startSync,
  statusOf,
  waitLog,
  waitOk,
  waitStatus,
} from '../harness/e2e.js';
import { runDir } from '../harness/run-dir.js';

// ---------------------------------------------------------------------------------------------------
// The corpus

type Generated =
  | { $generate: 'rego-padded'; package: string; bytes: number }
  | { $generate: 'json-padded'; bytes: number }
  | { $generate: 'json-nested'; depth: number };

interface CaseConfigMap {
  name: string;
  /** `unwatched`: the suite's namespace opa-sync does not watch; otherwise the watched one. */
  namespace?: 'unwatched';
  role: 'policy' | 'data';
  data: Record<string, string | Generated>;
  binaryData?: Record<string, string>;
  /** Wait for its status before the next ConfigMap is applied (a load order the case needs). */
  settle?: boolean;
}

interface ExpectedError {
  /** The error's code (opa-sync's, or OPA's top-level one). */
  code: string;
  /** The distinct codes of OPA's detailed errors inside it, sorted (how many OPA gives varies). */
  inner?: string[];
  /** Texts its message must contain ({ns}: the watched namespace). */
  mentions?: string[];
  /** The module every one of OPA's detailed errors is located in (`location.file`). */
  file?: string;
}

type Expected = { status: 'ok' } | { status: 'none' } | { status: 'error'; errors: ExpectedError[] };

interface BadInputCase {
  file: string;
  description: string;
  configMaps: CaseConfigMap[];
  expect?: Record<string, Expected>;
  /** The API server refuses the (first) ConfigMap: opa-sync never sees it. */
  apiServerRefuses?: { status: number; message: string };
  decisions?: { path: string; want: unknown }[];
  dataInOpa?: { path: string; want: unknown }[];
  policiesInOpa?: string[];
  policiesNotInOpa?: string[];
}

const CORPUS = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/bad-inputs');

function loadCorpus(): BadInputCase[] {
  return readdirSync(CORPUS)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, ...(JSON.parse(readFileSync(path.join(CORPUS, file), 'utf8')) as object) }))
    .map((c) => c as BadInputCase);
}

function generate(value: string | Generated): string {
  if (typeof value === 'string') return value;
  switch (value.$generate) {
    case 'rego-padded': {
      const head = `package ${value.package}\n\nallow := true\n`;
      const line = `# ${'x'.repeat(97)}\n`;
      let text = head + line.repeat(Math.floor((value.bytes - head.length) / line.length));
      text += '#'.padEnd(value.bytes - text.length - 1, 'x') + '\n';
      return text;
    }
    case 'json-padded': {
      const frame = '{"pad":""}';
      return `{"pad":"${'x'.repeat(value.bytes - frame.length)}"}`;
    }
    case 'json-nested':
      return '{"a":'.repeat(value.depth) + '1' + '}'.repeat(value.depth);
  }
}

// ---------------------------------------------------------------------------------------------------
// What "nothing else changed" compares

interface Snapshot {
  /** Module id → text, of every module in OPA. */
  policies: Record<string, string>;
  /** GET /v1/data: all of OPA's data (it must answer 200). */
  data: Record<string, unknown>;
  /** ConfigMap name → its status annotation, in the watched namespace. */
  statuses: Record<string, string | undefined>;
}

async function snapshot(opa: OpaServer, ns: string): Promise<Snapshot> {
  const policiesAnswer = await opa.request('/v1/policies');
  expect(policiesAnswer.status, `GET /v1/policies: ${policiesAnswer.body.slice(0, 500)}`).to.equal(200);
  const policies: Record<string, string> = {};
  for (const p of (JSON.parse(policiesAnswer.body) as { result: { id: string; raw: string }[] }).result)
    policies[p.id] = p.raw;
  const dataAnswer = await opa.request('/v1/data');
  expect(dataAnswer.status, `GET /v1/data: ${dataAnswer.body.slice(0, 500)}`).to.equal(200);
  const data = (JSON.parse(dataAnswer.body) as { result: Record<string, unknown> }).result;
  const statuses: Record<string, string | undefined> = {};
  for (const cm of (await (await adminCore()).listNamespacedConfigMap({ namespace: ns })).items)
    statuses[cm.metadata?.name ?? ''] = cm.metadata?.annotations?.[STATUS];
  return { policies, data, statuses };
}

/** The snapshot without what belongs to the given ConfigMaps of `ns` (their modules, data, status). */
function outside(s: Snapshot, ns: string, names: readonly string[]): Snapshot {
  const policies = Object.fromEntries(
    Object.entries(s.policies).filter(([id]) => !names.some((n) => id.startsWith(`${ns}/${n}/`))),
  );
  const data = structuredClone(s.data);
  const own = data[ns] as Record<string, unknown> | undefined;
  for (const n of names) delete own?.[n];
  // Rules of the case's packages are evaluated into the data tree: they are the case's too.
  delete data['badinputs'];
  delete (data['kubernetes'] as Record<string, unknown> | undefined)?.['badinputs'];
  if (data['kubernetes'] !== undefined && Object.keys(data['kubernetes'] as object).length === 0)
    delete data['kubernetes'];
  const statuses = Object.fromEntries(Object.entries(s.statuses).filter(([n]) => !names.includes(n)));
  return { policies, data, statuses };
}

/** What differs between two snapshots, one line a difference (modules, data two levels down, statuses). */
function differences(a: Snapshot, b: Snapshot): string[] {
  const out: string[] = [];
  const json = (v: unknown): string => JSON.stringify(v) ?? 'undefined';
  for (const id of new Set([...Object.keys(a.policies), ...Object.keys(b.policies)]))
    if (a.policies[id] !== b.policies[id]) out.push(`module ${id}`);
  const level = (v: unknown): Record<string, unknown> =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  for (const k of new Set([...Object.keys(a.data), ...Object.keys(b.data)])) {
    const [x, y] = [level(a.data[k]), level(b.data[k])];
    if (json(a.data[k]) === json(b.data[k])) continue;
    const subs = [...new Set([...Object.keys(x), ...Object.keys(y)])].filter(
      (s) => json(x[s]) !== json(y[s]),
    );
    out.push(
      `data.${k}${subs.length > 0 ? ` (${subs.join(', ')})` : ''}: ${json(a.data[k]).slice(0, 300)} → ${json(b.data[k]).slice(0, 300)}`,
    );
  }
  for (const n of new Set([...Object.keys(a.statuses), ...Object.keys(b.statuses)]))
    if (a.statuses[n] !== b.statuses[n]) out.push(`status of ${n}: ${a.statuses[n]} → ${b.statuses[n]}`);
  return out;
}

interface StatusError {
  code: string;
  message: string;
  errors?: { code: string; message: string; location?: { file?: string } }[];
}

/** Why the status value does not meet the expectation; undefined when it does. */
function mismatch(
  value: string | undefined,
  want: Expected,
  fill: (s: string) => string,
): string | undefined {
  if (want.status === 'none') return value === undefined ? undefined : `has a status: ${value}`;
  if (value === undefined) return 'no status yet';
  if (want.status === 'ok') return value === OK ? undefined : `not ok: ${value}`;
  const parsed = JSON.parse(value) as { status: string; error?: StatusError | StatusError[] };
  if (parsed.status !== 'error' || parsed.error === undefined) return `not an error: ${value}`;
  const got = Array.isArray(parsed.error) ? parsed.error : [parsed.error];
  if (got.length !== want.errors.length) return `${got.length} errors, not ${want.errors.length}: ${value}`;
  for (const [i, w] of want.errors.entries()) {
    const g = got[i] as StatusError;
    if (g.code !== w.code) return `error ${i} has code ${g.code}, not ${w.code}: ${value}`;
    const inner = [...new Set((g.errors ?? []).map((e) => e.code))].sort();
    if (w.inner !== undefined && JSON.stringify(inner) !== JSON.stringify(w.inner))
      return `error ${i} has inner codes ${JSON.stringify(inner)}, not ${JSON.stringify(w.inner)}: ${value}`;
    const files = (g.errors ?? []).map((e) => e.location?.file);
    if (w.file !== undefined && (files.length === 0 || files.some((f) => f !== fill(w.file as string))))
      return `error ${i} is located in ${JSON.stringify(files)}, not ${fill(w.file)}: ${value}`;
    for (const m of w.mentions ?? []) {
      if (!g.message.includes(fill(m))) return `error ${i} does not mention ${fill(m)}: ${value}`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------

describe('bad input: the corpus, each a clear error on its own ConfigMap and nothing else touched (real OPA + kube-apiserver)', function () {
  this.timeout(180_000);
  const suite = cleanupAfterAll();
  let ns: string;
  let unwatched: string;
  let opa: OpaServer;
  let sync: OpaSyncProcess;
  const corpus = loadCorpus();

  const namespaceOf = (cm: CaseConfigMap): string => (cm.namespace === 'unwatched' ? unwatched : ns);
  const fill = (s: string): string => s.replaceAll('{ns}', ns).replaceAll('{unwatched}', unwatched);
  const labels = (cm: CaseConfigMap): Record<string, string> =>
    cm.role === 'data' ? DATA_LABEL : POLICY_LABEL;

  async function apply(cm: CaseConfigMap): Promise<void> {
    const data = Object.fromEntries(Object.entries(cm.data).map(([k, v]) => [k, generate(v)]));
    await putConfigMap(namespaceOf(cm), cm.name, data, {
      labels: labels(cm),
      ...(cm.binaryData === undefined ? {} : { binaryData: cm.binaryData }),
    });
  }

  async function waitExpected(c: BadInputCase, name: string): Promise<void> {
    const want = c.expect?.[name] as Expected;
    const cm = c.configMaps.find((m) => m.name === name) as CaseConfigMap;
    let last: string | undefined = 'not read yet';
    try {
      await waitFor(
        `the status of ${name} (${c.file})`,
        async () => {
          last = mismatch(await statusOf(namespaceOf(cm), name), want, fill);
          return last === undefined ? true : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 200 },
      );
    } catch (err) {
      throw new Error(`${c.file}: ${name}: ${last}`, { cause: err });
    }
  }

  before(async () => {
    ns = await createNamespace('badinputs');
    unwatched = await createNamespace('badinputs-unwatched');
    opa = suite.add(await extraOpa());
    sync = suite.add(
      await startSync({ opa, namespaces: ns, args: ['--opa-resync-interval=1s', '--log-level=debug'] }),
    );
    // What every case must leave as it is.
    await putConfigMap(ns, 'base-policy', {
      'base.rego': 'package badinputs_base\n\nimport data.badinputs_lib\n\nallow if badinputs_lib.yes\n',
    });
    await putConfigMap(ns, 'base-lib', { 'lib.rego': 'package badinputs_lib\n\nyes := true\n' });
    await putConfigMap(ns, 'base-data', { 'base.json': '{"kept": [1, 2, 3]}' }, { labels: DATA_LABEL });
    await Promise.all(['base-policy', 'base-lib', 'base-data'].map((n) => waitOk(ns, n)));
  });

  for (const c of corpus) {
    it(`${c.file}: ${c.description}`, async () => {
      const before = await snapshot(opa, ns);
      const names = c.configMaps.map((m) => m.name);
      if (c.apiServerRefuses !== undefined) {
        const err = await apply(c.configMaps[0] as CaseConfigMap).then(
          () => undefined,
          (e: unknown) => e as { code?: number; body?: unknown },
        );
        expect(err, 'the API server refuses it').to.not.equal(undefined);
        expect(err?.code).to.equal(c.apiServerRefuses.status);
        expect(JSON.stringify(err?.body)).to.include(c.apiServerRefuses.message);
      } else {
        for (const cm of c.configMaps) {
          await apply(cm);
          if (cm.settle === true) await waitStatus(namespaceOf(cm), cm.name, () => true);
        }
        for (const name of Object.keys(c.expect ?? {})) await waitExpected(c, name);
      }
      for (const d of c.decisions ?? [])
        expect(await evaluate(opa, d.path), `data.${d.path}`).to.deep.equal(d.want);
      for (const d of c.dataInOpa ?? [])
        expect(await opaData(opa, fill(d.path)), fill(d.path)).to.deep.equal(d.want);
      const after = await snapshot(opa, ns);
      for (const id of c.policiesInOpa ?? []) expect(Object.keys(after.policies)).to.include(fill(id));
      for (const id of c.policiesNotInOpa ?? []) expect(Object.keys(after.policies)).to.not.include(fill(id));
      expect(
        differences(outside(before, ns, names), outside(after, ns, names)),
        'everything outside the case as it was',
      ).to.deep.equal([]);

      // Removing the case leaves everything else as it was too.
      for (const cm of c.configMaps) await deleteConfigMap(namespaceOf(cm), cm.name);
      await waitFor(
        `the modules and data of ${c.file} gone from OPA`,
        async () => {
          const now = await snapshot(opa, ns);
          const left = Object.keys(now.policies).filter((id) =>
            names.some((n) => id.startsWith(`${ns}/${n}/`)),
          );
          const data = (now.data[ns] ?? {}) as Record<string, unknown>;
          return left.length === 0 && names.every((n) => !(n in data)) ? now : undefined;
        },
        { timeoutMs: 60_000 },
      );
      expect(
        differences(outside(before, ns, names), outside(await snapshot(opa, ns), ns, names)),
        'everything else as it was once the case is deleted',
      ).to.deep.equal([]);
    });
  }

  it('the module sorting first keeps winning a rule conflict after OPA restarts (kill -9), and the data tree answers', async () => {
    const cases = corpus.filter((c) => c.file.startsWith('conflicting-'));
    expect(cases.map((c) => c.file)).to.deep.equal(['conflicting-default.json', 'conflicting-value.json']);
    for (const c of cases) for (const cm of c.configMaps) await apply(cm);
    for (const c of cases) for (const name of Object.keys(c.expect ?? {})) await waitExpected(c, name);
    const restartsBefore = sync
      .logLines()
      .filter((l) => l.msg === 'OPA restarted: it lost what opa-sync pushed').length;
    await opa.restart();
    await waitLog(sync, 'the restart seen', (l) => l.msg === 'OPA restarted: it lost what opa-sync pushed', {
      count: restartsBefore + 1,
      timeoutMs: 60_000,
    });
    await waitFor(
      'the winners back in OPA, the losers not',
      async () => {
        const ids = Object.keys((await snapshot(opa, ns)).policies);
        const all = cases.every(
          (c) =>
            (c.policiesInOpa ?? []).every((id) => ids.includes(fill(id))) &&
            (c.policiesNotInOpa ?? []).every((id) => !ids.includes(fill(id))),
        );
        return all && ids.includes(`${ns}/base-policy/base.rego`) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    for (const c of cases) {
      for (const name of Object.keys(c.expect ?? {})) await waitExpected(c, name);
      for (const d of c.decisions ?? []) expect(await evaluate(opa, d.path)).to.deep.equal(d.want);
    }
    // Deleting the winner lets the other load, and both statuses clear.
    await deleteConfigMap(ns, 'bi-value-a');
    await waitOk(ns, 'bi-value-b');
    expect(await evaluate(opa, 'badinputs/value/x')).to.equal(2);
    await deleteConfigMap(ns, 'bi-default-a');
    await waitOk(ns, 'bi-default-b');
    expect(await evaluate(opa, 'badinputs/defaults/y')).to.equal(2);
    for (const name of ['bi-value-b', 'bi-default-b']) await deleteConfigMap(ns, name);
  });

  it('1,000 policy ConfigMaps created at once all get annotated ok', async function () {
    this.timeout(900_000);
    const many = await createNamespace('badinputs-many');
    const manySync = suite.add(
      await startSync({ opa, namespaces: many, args: ['--opa-resync-interval=5s', '--log-level=info'] }),
    );
    const count = 1000;
    const names = Array.from({ length: count }, (_, i) => `p-${String(i).padStart(4, '0')}`);
    const started = Date.now();
    const queue = [...names];
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        for (let name = queue.shift(); name !== undefined; name = queue.shift())
          await putConfigMap(many, name, {
            'p.rego': `package many.${name.replace('-', '_')}\n\nallow := true\n`,
          });
      }),
    );
    const createdMs = Date.now() - started;
    await waitFor(
      'all 1,000 ConfigMaps annotated ok',
      async () => {
        const items = (await (await adminCore()).listNamespacedConfigMap({ namespace: many })).items;
        const ok = items.filter((cm) => cm.metadata?.annotations?.[STATUS] === OK).length;
        return ok === count ? true : undefined;
      },
      { timeoutMs: 840_000, intervalMs: 1000 },
    );
    const annotatedMs = Date.now() - started;
    const line = `1,000 policy ConfigMaps: created in ${createdMs} ms, all annotated ok ${annotatedMs} ms after the first create\n`;
    writeFileSync(path.join(runDir(), 'bad-inputs-1000.txt'), line);
    console.log(`      ${line.trim()}`);
    expect((await snapshot(opa, many)).policies[`${many}/p-0999/p.rego`]).to.include('package many.p_0999');
    await manySync.stop();
  });
});

describe('a 401 from OPA on a whole-collection PUT (token rotated) is retried until the token is right (real OPA with token authentication)', function () {
  this.timeout(180_000);
  const suite = cleanupAfterAll();

  it('replicated data waits, policies still load, /ready says why; the right token brings everything in', async () => {
    const ns = await createNamespace('badinputs-token');
    const dir = runDir();
    // OPA's token for replicated data was rotated to NEW; opa-sync's file still holds OLD, which OPA
    // takes for everything else: the whole-collection PUT is the call that gets 401.
    const authz = path.join(dir, `authz-rotated-${ns}.rego`);
    writeFileSync(
      authz,
      [
        'package system.authz',
        '',
        'default allow := false',
        '',
        'allow if input.identity == "NEW"',
        '',
        'allow if {',
        '  input.identity == "OLD"',
        '  not replicated',
        '}',
        '',
        'allow if input.path == ["health"]',
        '',
        'replicated if {',
        '  input.path[1] == "data"',
        '  input.path[2] == "kubernetes"',
        '}',
        '',
      ].join('\n'),
    );
    const opa = suite.add(
      await extraOpa({ extraArgs: ['--authentication=token', '--authorization=basic'], paths: [authz] }),
    );
    const tokenFile = path.join(dir, `opa-token-${ns}`);
    writeFileSync(tokenFile, 'OLD\n');
    const net = (await controlPlane()).kubeConfig().makeApiClient(NetworkingV1Api);
    const body: V1NetworkPolicy = {
      metadata: { name: 'np-1' },
      spec: { podSelector: {}, policyTypes: ['Ingress'] },
    };
    await net.createNamespacedNetworkPolicy({ namespace: ns, body });
    const sync = suite.add(
      await startSync({
        opa,
        namespaces: ns,
        waitReady: false,
        args: [
          `--opa-auth-token-file=${tokenFile}`,
          `--replicate=networking.k8s.io/v1/networkpolicies`,
          '--opa-resync-interval=1s',
          '--log-level=debug',
        ],
      }),
    );
    const asNew = { headers: { authorization: 'Bearer NEW' } };
    await putConfigMap(ns, 'pol', { 'p.rego': 'package badinputs.token\n\nallow := true\n' });
    await waitOk(ns, 'pol');
    await waitLog(
      sync,
      'the refused collection PUT',
      (l) => l.msg === 'OPA refused a replicated collection',
      {
        count: 2,
        timeoutMs: 60_000,
      },
    );
    const ready = await fetch(`${sync.opsUrl}/ready`);
    expect(ready.status, '/ready while the collection is refused').to.equal(503);
    const kube = await opa.request('/v1/data/kubernetes', asNew);
    expect(JSON.parse(kube.body)).to.not.have.nested.property('result.networkpolicies');

    writeFileSync(tokenFile, 'NEW\n');
    await waitFor(
      'the network policy in OPA',
      async () => {
        const res = await opa.request(`/v1/data/kubernetes/networkpolicies/${ns}/np-1`, asNew);
        return (JSON.parse(res.body) as { result?: unknown }).result !== undefined ? true : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );
    await sync.waitReady(60_000);
    // Not wedged: a later change still flows, as a patch.
    await net.createNamespacedNetworkPolicy({ namespace: ns, body: { ...body, metadata: { name: 'np-2' } } });
    await waitFor(
      'the second network policy in OPA',
      async () => {
        const res = await opa.request(`/v1/data/kubernetes/networkpolicies/${ns}/np-2`, asNew);
        return (JSON.parse(res.body) as { result?: unknown }).result !== undefined ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    await putConfigMap(ns, 'pol2', { 'p.rego': 'package badinputs.token2\n\nallow := true\n' });
    await waitOk(ns, 'pol2');
  });
});

// ---------------------------------------------------------------------------------------------------
// The bundle server

interface RawAnswer {
  status: number;
  body: string;
  /** Request body bytes written before the answer came. */
  sent: number;
  /** Whether the server closed the connection after answering. */
  closed: boolean;
}

/**
 * One request exactly as given (the path is not normalised, as URL and fetch would), with an optional
 * body streamed in 64 KiB chunks until the answer comes or `streamBytes` are written.
 */
function rawRequest(
  port: number,
  method: string,
  target: string,
  headers: Record<string, string>,
  body?: { text?: string; streamBytes?: number },
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = http.request(
      { host: '127.0.0.1', port, method, path: target, headers, agent: false },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          // Closed: the socket goes away without the client ending it (it never ends a streaming body).
          const socket = res.socket;
          const timer = setTimeout(() => {
            req.destroy();
            resolve({ status, body: text, sent, closed: false });
          }, 5000);
          if (socket.destroyed) {
            clearTimeout(timer);
            resolve({ status, body: text, sent, closed: true });
          } else
            socket.once('close', () => {
              clearTimeout(timer);
              resolve({ status, body: text, sent, closed: true });
            });
        });
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${target}: no answer in 60 s`)));
    req.on('error', (err) => {
      // The server may cut the upload once it has answered: the answer is what counts.
      if (!answered) reject(err);
    });
    if (body?.streamBytes !== undefined) {
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const limit = body.streamBytes;
      const pump = (): void => {
        while (!answered && !req.destroyed && sent < limit) {
          sent += chunk.length;
          if (!req.write(chunk)) {
            req.once('drain', pump);
            return;
          }
        }
        if (!answered && !req.destroyed) req.end();
      };
      req.write('{"labels":{"id":"huge"},"padding":"');
      pump();
    } else {
      req.end(body?.text);
    }
  });
}

describe('bad input to the bundle server: huge and deep /status reports, hostile paths, headers and tokens (real opa-sync process)', function () {
  this.timeout(180_000);
  const suite = cleanupAfterAll();
  const token = 'bad-inputs-fleet-token';
  let port: number;
  let sync: OpaSyncProcess & { bundleUrl: string };
  const auth = { authorization: `Bearer ${token}` };
  const fleetIds = async (): Promise<string[]> => {
    const res = await rawRequest(port, 'GET', '/v1/fleet', auth);
    expect(res.status).to.equal(200);
    return (JSON.parse(res.body) as { instances: { id: string }[] }).instances.map((i) => i.id);
  };
  const stillServes = async (): Promise<void> => {
    expect((await rawRequest(port, 'GET', '/bundles/policies', auth)).status).to.equal(200);
  };

  before(async () => {
    const ns = await createNamespace('badinputs-bundles');
    const tokenFile = path.join(runDir(), `bundle-token-${ns}`);
    writeFileSync(tokenFile, `${token}\n`);
    await putConfigMap(ns, 'p', { 'p.rego': 'package badinputs.bundle\n\nallow := true\n' });
    sync = suite.add(await startBundleSync({ namespaces: ns, args: [`--bundle-token-file=${tokenFile}`] }));
    port = Number(new URL(sync.bundleUrl).port);
    await waitOk(ns, 'p');
  });

  it('a status report streamed without end (an OOM attempt) is refused with 413 long before it is all sent, and the connection is closed', async () => {
    const rssBefore = await scrapeMetric(sync, 'process_resident_memory_bytes');
    const res = await rawRequest(
      port,
      'POST',
      '/status',
      { ...auth, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      { streamBytes: 512 * 1024 * 1024 },
    );
    expect(res.status).to.equal(413);
    expect((JSON.parse(res.body) as { code: string }).code).to.equal('request_too_large');
    expect(res.sent, 'bytes sent before the answer').to.be.below(64 * 1024 * 1024);
    expect(res.closed, 'the server closed the connection instead of reading the rest').to.equal(true);
    const rssAfter = await scrapeMetric(sync, 'process_resident_memory_bytes');
    expect(rssAfter - rssBefore, 'resident memory growth').to.be.below(64 * 1024 * 1024);
    // A declared length over the limit is refused before any of it is read.
    const declared = await rawRequest(port, 'POST', '/status', {
      ...auth,
      'content-type': 'application/json',
      'content-length': String(10 * 1024 * 1024 * 1024),
    });
    expect(declared.status).to.equal(413);
    expect(declared.closed).to.equal(true);
    expect(await fleetIds()).to.not.include('huge');
    await stillServes();
  });

  it('a status report nested 400,000 levels deep (under the size limit) is refused with 400, and the server stays up', async () => {
    for (const [open, close] of [
      ['[', ']'],
      ['{"a":', '}'],
    ] as const) {
      const depth = Math.floor(900_000 / open.length / 2);
      const text = `{"labels":{"id":"deep"},"x":${open.repeat(depth)}1${close.repeat(depth)}}`;
      const res = await rawRequest(
        port,
        'POST',
        '/status',
        { ...auth, 'content-type': 'application/json' },
        { text },
      );
      expect(res.status, res.body).to.equal(400);
      expect((JSON.parse(res.body) as { code: string }).code).to.equal('invalid_status_report');
    }
    expect(await fleetIds()).to.not.include('deep');
    await stillServes();
  });

  it('hostile paths (.., encoded dots and slashes, NUL, bad percent-encoding) get 400 or 404, never a file or a 500', async () => {
    const paths = [
      '/bundles/../bundles/policies',
      '/bundles/%2e%2e/policies',
      '/bundles/..%2fpolicies',
      '/bundles/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      '/bundles/policies%2f..%2f..%2fx',
      '/bundles/a%2Fb',
      '/bundles/%00',
      '/bundles/%ff',
      '/bundles/%',
      '/bundles//policies',
      `/bundles/${'a'.repeat(5000)}`,
      '/status/..%2f..',
    ];
    for (const p of paths) {
      const method = p.startsWith('/status') ? 'POST' : 'GET';
      const res = await rawRequest(
        port,
        method,
        p,
        { ...auth, 'content-type': 'application/json' },
        {
          text: method === 'POST' ? '{"labels":{"id":"path"}}' : '',
        },
      );
      expect([400, 404], `${method} ${p.slice(0, 80)}: ${res.status} ${res.body.slice(0, 200)}`).to.include(
        res.status,
      );
      const code = (JSON.parse(res.body) as { code: string }).code;
      expect(code, p.slice(0, 80)).to.be.oneOf([
        'invalid_bundle_name',
        'bundle_not_found',
        'not_found',
        'invalid_partition_name',
      ]);
    }
    expect(await fleetIds()).to.not.include('path');
    await stillServes();
  });

  it('wrong, malformed and oversized tokens and headers get 401 (or 431 for headers past the limit), on every route', async () => {
    const wrong: Record<string, string>[] = [
      {},
      { authorization: '' },
      { authorization: 'Bearer' },
      { authorization: `Bearer ${token}x` },
      { authorization: `Bearer x${token}` },
      { authorization: `Bearer ${token.toUpperCase()}` },
      { authorization: `Basic ${Buffer.from(`user:${token}`).toString('base64')}` },
      { authorization: `Bearer ${token} ${token}` },
      { authorization: `Bearer ${'t'.repeat(8000)}` },
      { 'x-auth-token': token },
    ];
    for (const route of [
      ['GET', '/bundles/policies'],
      ['GET', '/v1/fleet'],
      ['POST', '/status'],
    ] as const) {
      for (const headers of wrong) {
        const res = await rawRequest(
          port,
          route[0],
          route[1],
          { ...headers, 'content-type': 'application/json' },
          {
            text: route[0] === 'POST' ? '{"labels":{"id":"intruder"}}' : '',
          },
        );
        expect(res.status, `${route.join(' ')} with ${JSON.stringify(headers).slice(0, 80)}`).to.equal(401);
      }
      // The token in the query string is not a token.
      const query = await rawRequest(port, route[0], `${route[1]}?token=${token}`, {});
      expect(query.status).to.equal(401);
    }
    // The scheme is case-insensitive and spaces around the token are allowed, as OPA sends it.
    expect(
      (await rawRequest(port, 'GET', '/bundles/policies', { authorization: `bearer  ${token} ` })).status,
    ).to.equal(200);
    // Headers past Node's limit (16 KiB) are refused before any route.
    const big = await rawRequest(port, 'GET', '/bundles/policies', {
      ...auth,
      'x-padding': 'p'.repeat(20_000),
    });
    expect(big.status).to.equal(431);
    const many = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`x-h-${i}`, 'v']));
    const manyAnswer = await rawRequest(port, 'GET', '/bundles/policies', { ...auth, ...many });
    expect([200, 431], 'thousands of small headers').to.include(manyAnswer.status);
    expect(await fleetIds()).to.not.include('intruder');
    await stillServes();
  });
});
