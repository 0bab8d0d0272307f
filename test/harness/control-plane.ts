// A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver (TLS from the run's CA,
// a static admin token, RBAC) and kube-controller-manager (deployments, replica sets, garbage
// collection, namespaces, service accounts). No scheduler and no kubelet: pods stay Pending.
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import getPort from 'get-port';
import { KubeConfig } from '@kubernetes/client-node';
import { requireTool } from '../../scripts/tools.js';
import { createKeyPair, createServingCert, type CertificateAuthority } from './certs.js';
import { httpRequest } from './http.js';
import { logTail, startProcess, type ManagedProcess } from './processes.js';
import { StopWaiting, waitFor } from './wait.js';
import { writeKubeconfig } from './kubeconfig.js';

export interface ControlPlane {
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** A kubeconfig file (JSON) for kubectl and client-node, as the admin user. */
  readonly kubeconfigFile: string;
  readonly adminToken: string;
  /** etcd's client URL (for tests that compact it, to force 410 Gone on old watches). */
  readonly etcdUrl: string;
  readonly ca: CertificateAuthority;
  readonly processes: { etcd: ManagedProcess; apiserver: ManagedProcess; controllerManager: ManagedProcess };
  /** A fresh client-node KubeConfig for the admin user. */
  kubeConfig(): KubeConfig;
  /** Stops the API server only (etcd keeps the data), for restart tests; `startApiServer` brings it back. */
  stopApiServer(): Promise<void>;
  /** Kills the API server (SIGKILL: no graceful end of its watches); `startApiServer` brings it back. */
  killApiServer(): Promise<void>;
  startApiServer(): Promise<void>;
  /**
   * Freezes the API server (SIGSTOP): its connections stay open and answer nothing; `resumeApiServer`
   * (SIGCONT) lets it go on. A test that pauses it resumes it in a `finally`.
   */
  pauseApiServer(): void;
  resumeApiServer(): void;
  /**
   * A second API server on the same etcd (as in a highly available control plane), through which a
   * test changes the cluster while the first one is paused or down. Its kubeconfig is the admin's.
   */
  startApiServerReplica(): Promise<ApiServerReplica>;
  stop(): Promise<void>;
}

export interface ApiServerReplica {
  /** https://127.0.0.1:<port> */
  readonly server: string;
  readonly kubeconfigFile: string;
  /** A fresh client-node KubeConfig for the admin user, on this API server. */
  kubeConfig(): KubeConfig;
  stop(): Promise<void>;
}

function fail(proc: ManagedProcess): never {
  throw new StopWaiting(`${proc.name} exited before it was ready:\n${logTail(proc, 30)}`);
}

async function startEtcd(dir: string): Promise<{ proc: ManagedProcess; url: string }> {
  const binary = requireTool('etcd');
  const [client, peer] = [await getPort({ host: '127.0.0.1' }), await getPort({ host: '127.0.0.1' })];
  const url = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const proc = startProcess(
    'etcd',
    binary,
    [
      '--name=default',
      `--data-dir=${path.join(dir, 'etcd-data')}`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=default=${peerUrl}`,
      '--unsafe-no-fsync=true',
      '--log-level=warn',
    ],
    dir,
  );
  await waitFor('etcd to report healthy', async () => {
    if (proc.hasExited()) fail(proc);
    const res = await httpRequest(`${url}/health`, { timeoutMs: 1000 });
    return res.status === 200 && res.body.includes('"true"') ? true : undefined;
  });
  return { proc, url };
}

export async function startControlPlane(runFolder: string, ca: CertificateAuthority): Promise<ControlPlane> {
  const apiserverBin = requireTool('kube-apiserver');
  const kcmBin = requireTool('kube-controller-manager');
  requireTool('etcd');
  const dir = path.join(runFolder, 'control-plane');
  mkdirSync(dir, { recursive: true });

  const adminToken = randomBytes(24).toString('hex');
  const tokensFile = path.join(dir, 'tokens.csv');
  writeFileSync(tokensFile, `${adminToken},admin,admin,"system:masters"\n`, { mode: 0o600 });
  const serving = await createServingCert(ca, 'kube-apiserver');
  const sa = await createKeyPair(dir, 'service-account');

  const etcd = await startEtcd(dir);
  const securePort = await getPort({ host: '127.0.0.1' });
  const server = `https://127.0.0.1:${securePort}`;
  const apiserverArgs = [
    `--etcd-servers=${etcd.url}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${securePort}`,
    '--advertise-address=127.0.0.1',
    // The kubernetes Service endpoints may not be a loopback address; tests need no such endpoint.
    '--endpoint-reconciler-type=none',
    `--cert-dir=${path.join(dir, 'apiserver-certs')}`,
    `--tls-cert-file=${serving.certFile}`,
    `--tls-private-key-file=${serving.keyFile}`,
    `--client-ca-file=${ca.certFile}`,
    `--token-auth-file=${tokensFile}`,
    '--service-account-issuer=https://kubernetes.default.svc',
    `--service-account-key-file=${sa.publicKeyFile}`,
    `--service-account-signing-key-file=${sa.privateKeyFile}`,
    '--service-cluster-ip-range=10.0.0.0/24',
    '--authorization-mode=RBAC',
    // Otherwise every pod needs the namespace's default ServiceAccount first, which races with the test.
    '--disable-admission-plugins=ServiceAccount',
    '--profiling=false',
    '--v=1',
  ];

  let apiserver = startProcess('kube-apiserver', apiserverBin, apiserverArgs, dir);
  const waitApiServer = async (proc = apiserver, url = server): Promise<void> => {
    await waitFor(
      'kube-apiserver /readyz',
      async () => {
        if (proc.hasExited()) fail(proc);
        const res = await httpRequest(`${url}/readyz`, { ca: ca.pem, timeoutMs: 2000 });
        return res.status === 200 ? true : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );
  };
  await waitApiServer();

  const kubeconfigFile = path.join(dir, 'kubeconfig.json');
  writeKubeconfig(kubeconfigFile, server, ca.pem, 'admin', adminToken);

  const controllerManager = startProcess(
    'kube-controller-manager',
    kcmBin,
    [
      `--kubeconfig=${kubeconfigFile}`,
      '--leader-elect=false',
      '--controllers=deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller',
      '--secure-port=0',
      '--v=1',
    ],
    dir,
  );

  const kubeConfig = (): KubeConfig => {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigFile);
    return kc;
  };

  // The service-account controller creates `default` in every namespace: proof the KCM is working.
  await waitFor(
    'kube-controller-manager to create the default ServiceAccount',
    async () => {
      if (controllerManager.hasExited()) fail(controllerManager);
      const res = await httpRequest(`${server}/api/v1/namespaces/default/serviceaccounts/default`, {
        ca: ca.pem,
        headers: { authorization: `Bearer ${adminToken}` },
        timeoutMs: 2000,
      });
      return res.status === 200 ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  );

  return {
    server,
    kubeconfigFile,
    adminToken,
    etcdUrl: etcd.url,
    ca,
    get processes() {
      return { etcd: etcd.proc, apiserver, controllerManager };
    },
    kubeConfig,
    stopApiServer: () => apiserver.stop(),
    async killApiServer() {
      if (apiserver.hasExited()) return;
      process.kill(apiserver.pid, 'SIGKILL');
      await apiserver.exited;
    },
    async startApiServer() {
      apiserver = startProcess('kube-apiserver', apiserverBin, apiserverArgs, dir);
      await waitApiServer();
    },
    pauseApiServer: () => process.kill(apiserver.pid, 'SIGSTOP'),
    resumeApiServer: () => process.kill(apiserver.pid, 'SIGCONT'),
    async startApiServerReplica() {
      const port = await getPort({ host: '127.0.0.1' });
      const url = `https://127.0.0.1:${port}`;
      const args = apiserverArgs.map((arg) =>
        arg.startsWith('--secure-port=')
          ? `--secure-port=${port}`
          : arg.startsWith('--cert-dir=')
            ? `--cert-dir=${path.join(dir, `apiserver-certs-${port}`)}`
            : arg,
      );
      const proc = startProcess(`kube-apiserver-${port}`, apiserverBin, args, dir);
      try {
        await waitApiServer(proc, url);
      } catch (err) {
        await proc.stop();
        throw err;
      }
      const file = path.join(dir, `kubeconfig-${port}.json`);
      writeKubeconfig(file, url, ca.pem, 'admin', adminToken);
      return {
        server: url,
        kubeconfigFile: file,
        kubeConfig() {
          const kc = new KubeConfig();
          kc.loadFromFile(file);
          return kc;
        },
        stop: () => proc.stop(),
      };
    },
    async stop() {
      await controllerManager.stop();
      await apiserver.stop();
      await etcd.proc.stop();
    },
  };
}
