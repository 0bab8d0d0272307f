// What `npm run build` produces — dist/main.js, one esbuild bundle with its lazily loaded chunks — is
// what the Docker image and `npm start` run, while every other test runs src/ through tsx. This builds
// it and runs it for real: --version, the folder mode serving a bundle, and the sidecar mode (a policy
// ConfigMap loaded and annotated, NetworkPolicies replicated) against the real API server and OPA.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import getPort from 'get-port';
import { NetworkingV1Api } from '@kubernetes/client-node';
import { requireTool } from '../../scripts/tools.js';
import { downloadBundle } from '../harness/bundles.js';
import { opaData, putConfigMap, waitOk } from '../harness/e2e.js';
import { controlPlane, createNamespace, extraOpa, httpRequest, waitFor } from '../harness/index.js';
import { logTail, startProcess, type ManagedProcess } from '../harness/processes.js';
import { runDir } from '../harness/run-dir.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const main = path.join(root, 'dist', 'main.js');

describe('the built dist/main.js (esbuild bundle)', function () {
  this.timeout(180_000);
  const started: ManagedProcess[] = [];

  before(async () => {
    await run('npm', ['run', '-s', 'build'], { cwd: root, timeout: 170_000 });
  });
  afterEach(async () => {
    for (const p of started.splice(0)) await p.stop();
  });

  async function startDist(args: string[]): Promise<string> {
    const port = await getPort({ host: '127.0.0.1' });
    const proc = startProcess(
      `dist-main-${started.length}`,
      process.execPath,
      [main, `--health-endpoint=127.0.0.1:${port}`, ...args],
      runDir(),
    );
    started.push(proc);
    const ops = `http://127.0.0.1:${port}`;
    await waitFor('dist/main.js /ready', async () => {
      if (proc.hasExited()) throw new Error(`dist/main.js exited:\n${logTail(proc, 30)}`);
      return (await httpRequest(`${ops}/ready`, { timeoutMs: 1000 }).catch(() => undefined))?.status === 200
        ? true
        : undefined;
    });
    return ops;
  }

  it('leaves out what no start needs: node-fetch and its Unicode tables (scripts/bundle.mjs)', () => {
    const sources = readdirSync(path.join(root, 'dist'))
      .filter((f) => f.endsWith('.js.map'))
      .flatMap(
        (f) =>
          (JSON.parse(readFileSync(path.join(root, 'dist', f), 'utf8')) as { sources: string[] }).sources,
      );
    expect(sources.some((s) => s.includes('/@kubernetes/client-node/'))).to.equal(true);
    expect(sources.filter((s) => /\/node_modules\/(node-fetch|whatwg-url|tr46)\//.test(s))).to.deep.equal([]);
  });

  it('prints its version', async () => {
    const { stdout } = await run(process.execPath, [main, '--version'], { cwd: root });
    const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      version: string;
    };
    expect(stdout.trim()).to.equal(`opa-sync ${version}`);
  });

  it('folder mode: serves ./policies as a bundle', async () => {
    const port = await getPort({ host: '127.0.0.1' });
    await startDist([
      `--policies-dir=${path.join(root, 'policies')}`,
      `--bundle-addr=127.0.0.1:${port}`,
      `--opa-bin=${requireTool('opa')}`,
    ]);
    const bundle = await downloadBundle(`http://127.0.0.1:${port}`, 'policies');
    expect([...bundle.files.keys()].some((f) => f.endsWith('.rego'))).to.equal(true);
  });

  it('sidecar mode: loads a policy ConfigMap (and annotates it) and replicates NetworkPolicies', async () => {
    const cp = await controlPlane();
    const opa = await extraOpa();
    const namespace = await createNamespace('dist');
    try {
      await startDist([
        `--kubeconfig=${cp.kubeconfigFile}`,
        `--opa-url=${opa.url}/v1`,
        `--namespaces=${namespace}`,
        '--replicate=networking.k8s.io/v1/networkpolicies',
      ]);
      await putConfigMap(namespace, 'p', { 'p.rego': 'package dist.test\n\nallow := true\n' });
      await waitOk(namespace, 'p');
      const net = cp.kubeConfig().makeApiClient(NetworkingV1Api);
      await net.createNamespacedNetworkPolicy({
        namespace,
        body: { metadata: { name: 'np' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } },
      });
      await waitFor('the NetworkPolicy in OPA', async () =>
        (await opaData(opa, `kubernetes/networkpolicies/${namespace}/np/metadata/name`)) === 'np'
          ? true
          : undefined,
      );
    } finally {
      await opa.stop();
    }
  });
});
