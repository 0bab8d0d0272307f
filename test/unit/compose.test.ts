// The docker-compose quick start and the container image agree with each other and with the OPA
// configuration: service names, ports, mounted paths, the bundle resource, the image's paths and the
// pinned versions. Nothing here runs Docker (there is none on the test machines); the real opa and
// opa-sync run these same settings in test/e2e/deploy-manifests.test.ts.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { loadYaml } from '@kubernetes/client-node';
import { OPA_VERSION } from '../../scripts/tools.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8');

interface ComposeService {
  build?: string;
  image?: string;
  command?: string[];
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test?: string[] };
  depends_on?: Record<string, { condition?: string }> | string[];
}

interface OpaConfig {
  services: Record<string, { url: string }>;
  bundles: Record<string, { service: string; resource: string; polling?: Record<string, unknown> }>;
  status?: { service?: string };
  default_decision?: string;
}

/** The value of `--name=value` in a command line; fails the test when absent or given twice. */
function flag(args: readonly string[], name: string): string {
  const values = args.filter((a) => a.startsWith(`--${name}=`)).map((a) => a.slice(name.length + 3));
  expect(values, `--${name} in ${JSON.stringify(args)}`).to.have.lengthOf(1);
  return values[0]!;
}

/** The port of HOST:PORT or :PORT. */
function portOf(address: string): number {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  expect(Number.isInteger(port) && port > 0, `a port in ${address}`).to.be.true;
  return port;
}

/** Compose's short volume syntax: SOURCE:TARGET[:MODE]. */
function volumes(service: ComposeService): { source: string; target: string; mode: string | undefined }[] {
  return (service.volumes ?? []).map((v) => {
    const [source, target, mode] = v.split(':');
    expect(source, v).to.be.a('string');
    expect(target, v).to.be.a('string');
    return { source: source!, target: target!, mode };
  });
}

/** Compose's short port syntax: [IP:]HOST:CONTAINER. */
function ports(service: ComposeService): { ip: string | undefined; host: number; container: number }[] {
  return (service.ports ?? []).map((p) => {
    const parts = p.split(':');
    expect(parts.length, p).to.be.within(2, 3);
    const container = Number(parts.at(-1));
    const host = Number(parts.at(-2));
    return { ip: parts.length === 3 ? parts[0] : undefined, host, container };
  });
}

/** A Dockerfile as instructions (continuation lines joined, comments dropped), per stage. */
interface Instruction {
  keyword: string;
  rest: string;
  stage: number;
}

function dockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = '';
    const space = whole.indexOf(' ');
    const keyword = whole.slice(0, space).toUpperCase();
    if (keyword === 'FROM') stage += 1;
    out.push({ keyword, rest: whole.slice(space + 1).trim(), stage });
  }
  return out;
}

describe('docker-compose quick start and container image', function () {
  const compose = loadYaml<{ services: Record<string, ComposeService> }>(read('docker-compose.yml'));
  const opaConfig = loadYaml<OpaConfig>(read('deploy/opa-config.yaml'));
  const pkg = JSON.parse(read('package.json')) as { version: string };
  const sync = compose.services['opa-sync']!;
  const opa = compose.services.opa!;
  const syncArgs = sync.command ?? [];
  const opaArgs = opa.command ?? [];

  it('has the services opa-sync (built here, tagged with the package version) and opa (pinned)', function () {
    expect(Object.keys(compose.services).sort()).to.deep.equal(['opa', 'opa-sync']);
    expect(sync.build).to.equal('.');
    expect(sync.image).to.equal(`opa-sync:${pkg.version}`);
    expect(opa.image).to.equal(`openpolicyagent/opa:${OPA_VERSION.replace(/^v/, '')}`);
    expect(opaArgs.slice(0, 2)).to.deep.equal(['run', '--server']);
  });

  it('runs opa-sync in folder mode on the mounted ./policies, read-only', function () {
    const dir = flag(syncArgs, 'policies-dir');
    const mount = volumes(sync).find((v) => v.target === dir);
    expect(mount, `a volume mounted at ${dir}`).to.not.equal(undefined);
    expect(path.resolve(root, mount!.source)).to.equal(path.join(root, 'policies'));
    expect(mount!.mode).to.equal('ro');
    // No cluster source: folder mode only.
    for (const name of ['kubeconfig', 'namespaces', 'policies', 'replicate', 'replicate-cluster']) {
      expect(
        syncArgs.some((a) => a.startsWith(`--${name}=`) || a === `--${name}`),
        name,
      ).to.be.false;
    }
  });

  it("publishes opa-sync's bundle port and OPA's API port on the loopback interface only", function () {
    const bundlePort = portOf(flag(syncArgs, 'bundle-addr'));
    expect(ports(sync)).to.deep.equal([{ ip: '127.0.0.1', host: bundlePort, container: bundlePort }]);
    const opaPort = portOf(flag(opaArgs, 'addr'));
    expect(ports(opa)).to.deep.equal([{ ip: '127.0.0.1', host: opaPort, container: opaPort }]);
    // Both listen on every interface of their container, or the published port would not reach them.
    expect(flag(syncArgs, 'bundle-addr')).to.match(/^0\.0\.0\.0:/);
    expect(flag(opaArgs, 'addr')).to.match(/^0\.0\.0\.0:/);
  });

  it("mounts the OPA configuration where OPA's --config-file reads it", function () {
    const file = flag(opaArgs, 'config-file');
    const mount = volumes(opa).find((v) => v.target === file);
    expect(mount, `a volume mounted at ${file}`).to.not.equal(undefined);
    expect(path.resolve(root, mount!.source)).to.equal(path.join(root, 'deploy', 'opa-config.yaml'));
    expect(mount!.mode).to.equal('ro');
  });

  it("points OPA's service at the compose service name and opa-sync's --bundle-addr port", function () {
    expect(Object.keys(opaConfig.services)).to.deep.equal(['opa-sync']);
    const url = new URL(opaConfig.services['opa-sync']!.url);
    expect(url.protocol).to.equal('http:');
    expect(url.hostname).to.equal('opa-sync');
    expect(compose.services).to.have.property(url.hostname);
    expect(Number(url.port)).to.equal(portOf(flag(syncArgs, 'bundle-addr')));
    expect(url.pathname).to.equal('/');
  });

  it('asks for the bundle opa-sync builds from the folder, with long polling, and reports status to it', function () {
    // Without --bundle-name, the folder is served as the bundle `policies` at /bundles/policies.
    const bundleName = syncArgs.some((a) => a.startsWith('--bundle-name='))
      ? flag(syncArgs, 'bundle-name')
      : 'policies';
    expect(Object.keys(opaConfig.bundles)).to.deep.equal([bundleName]);
    const bundle = opaConfig.bundles[bundleName]!;
    expect(bundle.service).to.equal('opa-sync');
    expect(bundle.resource).to.equal(`bundles/${bundleName}`);
    expect(bundle.polling).to.deep.equal({ long_polling_timeout_seconds: 60 });
    expect(opaConfig.status).to.deep.equal({ service: 'opa-sync' });
  });

  it('makes data.system.main, which policies/ defines, the default decision', function () {
    expect(opaConfig.default_decision).to.equal('/system/main');
    const main = read('policies/system/main.rego');
    expect(main).to.match(/^package system$/m);
    expect(main).to.match(/^main := \{/m);
  });

  it('starts OPA after opa-sync is healthy, checked on the --health-endpoint port', function () {
    expect(opa.depends_on).to.deep.equal({ 'opa-sync': { condition: 'service_healthy' } });
    const test = sync.healthcheck?.test ?? [];
    expect(test.slice(0, 3)).to.deep.equal(['CMD', 'node', '-e']);
    const port = portOf(flag(syncArgs, 'health-endpoint'));
    expect(test[3]).to.include(`http://127.0.0.1:${port}/ready`);
  });

  describe('Dockerfile', function () {
    const instructions = dockerfile(read('Dockerfile'));
    const final = Math.max(...instructions.map((i) => i.stage));
    const inFinal = instructions.filter((i) => i.stage === final);
    const args = new Map(
      instructions
        .filter((i) => i.keyword === 'ARG' && i.rest.includes('='))
        .map((i) => [i.rest.slice(0, i.rest.indexOf('=')), i.rest.slice(i.rest.indexOf('=') + 1)]),
    );
    const expand = (s: string): string =>
      s.replace(/\$\{(\w+)\}/g, (_m, name: string) => args.get(name) ?? '');
    const froms = instructions.filter((i) => i.keyword === 'FROM').map((i) => expand(i.rest));

    it('builds on a Node LTS slim image and OPA with the Go toolchain, at the version the tests use', function () {
      expect(froms).to.have.lengthOf(3);
      const node = froms[final]!;
      const major = /^node:(\d+)-bookworm-slim$/.exec(node);
      expect(major, node).to.not.equal(null);
      // Even majors are the LTS lines; 22 and 24 are maintained today.
      expect(Number(major![1]) % 2).to.equal(0);
      expect(Number(major![1])).to.be.at.least(22);
      expect(froms[0]).to.equal(`${node} AS build`);
      expect(froms[1]).to.match(/^golang:1\.2[6-9]-bookworm AS opa$/);
      expect(args.get('OPA_VERSION')).to.equal(OPA_VERSION);
      const install = instructions.find((i) => i.stage === 1 && i.keyword === 'RUN')!.rest;
      expect(install).to.include('CGO_ENABLED=0');
      expect(install).to.include('github.com/open-policy-agent/opa@${OPA_VERSION}');
    });

    it('compiles, then prunes the development dependencies before they are copied', function () {
      const runs = instructions.filter((i) => i.stage === 0 && i.keyword === 'RUN').map((i) => i.rest);
      expect(runs.join(' && ')).to.match(/npm ci .*npm run build .*npm prune --omit=dev/);
    });

    it('runs node on dist/main.js as a numeric non-root user, with kube-mgmt arguments passed as they are', function () {
      const entrypoint = inFinal.filter((i) => i.keyword === 'ENTRYPOINT');
      expect(entrypoint).to.have.lengthOf(1);
      expect(JSON.parse(entrypoint[0]!.rest)).to.deep.equal(['node', '/app/dist/main.js']);
      const user = inFinal.filter((i) => i.keyword === 'USER').map((i) => i.rest);
      expect(user).to.have.lengthOf(1);
      const [uid, gid] = user[0]!.split(':').map(Number);
      expect(uid).to.be.greaterThan(0);
      expect(gid).to.be.greaterThan(0);
      const exposed = inFinal
        .filter((i) => i.keyword === 'EXPOSE')
        .flatMap((i) => i.rest.split(/\s+/))
        .map(Number);
      expect(exposed).to.include(portOf(flag(syncArgs, 'bundle-addr')));
      expect(exposed).to.include(portOf(flag(syncArgs, 'health-endpoint')));
    });

    it('puts opa where --opa-bin points and the example policies where the default CMD serves them', function () {
      const copies = inFinal.filter((i) => i.keyword === 'COPY').map((i) => i.rest);
      const opaBin = flag(syncArgs, 'opa-bin');
      expect(copies).to.include(`--from=opa /out/opa ${opaBin}`);
      expect(copies).to.include('--from=build /src/dist ./dist');
      expect(copies).to.include('--from=build /src/node_modules ./node_modules');
      // package.json carries "type": "module": without it node would not load dist/ as ESM.
      expect(copies).to.include('--from=build /src/package.json ./package.json');
      expect(copies).to.include('policies ./policies');
      expect(inFinal.find((i) => i.keyword === 'WORKDIR')?.rest).to.equal('/app');
      const cmd = JSON.parse(inFinal.find((i) => i.keyword === 'CMD')!.rest) as string[];
      expect(flag(cmd, 'policies-dir')).to.equal('/app/policies');
      expect(flag(cmd, 'opa-bin')).to.equal(opaBin);
    });

    it('sends the build only the files it copies (.dockerignore is an allow-list)', function () {
      const lines = read('.dockerignore')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#'));
      expect(lines[0]).to.equal('*');
      const allowed = lines.slice(1).map((l) => {
        expect(l.startsWith('!'), l).to.be.true;
        return l.slice(1).replace(/\/$/, '');
      });
      const fromContext = instructions
        .filter((i) => i.keyword === 'COPY' && !i.rest.startsWith('--from='))
        .flatMap((i) => i.rest.split(/\s+/).slice(0, -1));
      expect(fromContext.length).to.be.greaterThan(0);
      for (const source of fromContext) expect(allowed, source).to.include(source.replace(/\/$/, ''));
      for (const secretish of ['node_modules', 'dist', '.git', 'bundles', '.test-runs'])
        expect(allowed).to.not.include(secretish);
    });
  });
});
