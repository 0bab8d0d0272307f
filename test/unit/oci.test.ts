// The pure parts of OCI publishing: --oci-repository entries, the registry's WWW-Authenticate
// challenge, docker config.json `auths` lookup, the deterministic artifact, and the flag checks.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { bundleArtifact, digestOf } from '../../src/oci/artifact.js';
import {
  Credentials,
  dockerAuthsHost,
  dockerConfigCredential,
  parseChallenge,
} from '../../src/oci/credentials.js';
import { parseOciTargets, repositoryOf, tagProblem } from '../../src/oci/reference.js';
import { configProblems } from '../harness/config.js';

describe('OCI publishing: repositories, challenges, credentials, artifacts', () => {
  describe('--oci-repository', () => {
    it('maps the default bundle, named bundles and a {bundle} template', () => {
      const problems: string[] = [];
      const targets = parseOciTargets(
        ['127.0.0.1:5000/opa/main', 'other=ghcr.io/acme/other', 'registry.example.com/opa/{bundle}'],
        'policies',
        problems,
      );
      expect(problems).to.deep.equal([]);
      expect(repositoryOf(targets, 'policies')).to.deep.equal({
        registry: '127.0.0.1:5000',
        name: 'opa/main',
      });
      expect(repositoryOf(targets, 'other')).to.deep.equal({ registry: 'ghcr.io', name: 'acme/other' });
      expect(repositoryOf(targets, 'team/authz')).to.deep.equal({
        registry: 'registry.example.com',
        name: 'opa/team/authz',
      });
    });

    it('refuses schemes, tags, bad hosts and paths, and a bundle given twice, naming each', () => {
      const problems: string[] = [];
      parseOciTargets(
        [
          'https://r.example/x',
          'r.example/x:v1',
          'bad host/x',
          'r.example/Upper',
          'a=r.example/x',
          'a=r.example/y',
        ],
        'policies',
        problems,
      );
      expect(problems).to.have.length(5);
      expect(problems[0]).to.include('must not have a scheme');
      expect(problems[1]).to.include('names a tag');
      expect(problems[2]).to.include('"bad host" is not a registry HOST[:PORT]');
      expect(problems[3]).to.include('"Upper" is not an OCI repository path');
      expect(problems[4]).to.include('bundle "a" is given two repositories');
    });

    it('gives an error naming the bundle when a template would make an invalid path', () => {
      const targets = parseOciTargets(['r.example/opa/{bundle}'], 'policies', []);
      const got = repositoryOf(targets, 'a..b');
      expect(got).to.have.property('problem').that.includes('bundle "a..b" cannot be published to OCI');
      expect(repositoryOf(parseOciTargets(['r.example/only'], 'policies', []), 'other')).to.equal(undefined);
    });

    it('checks tags as the distribution spec does', () => {
      expect(tagProblem('latest')).to.equal(undefined);
      expect(tagProblem('a'.repeat(64))).to.equal(undefined);
      expect(tagProblem('.hidden')).to.be.a('string');
      expect(tagProblem('a'.repeat(129))).to.be.a('string');
    });
  });

  describe('WWW-Authenticate challenges', () => {
    it('reads a token-auth Bearer challenge with quoted parameters', () => {
      expect(
        parseChallenge(
          'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:opa/x:pull,push"',
        ),
      ).to.deep.equal({
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example.com/token',
          service: 'registry.example.com',
          scope: 'repository:opa/x:pull,push',
        },
      });
    });

    it('reads a Basic challenge', () => {
      expect(parseChallenge('Basic realm="opa-sync-test"')).to.deep.equal({
        scheme: 'basic',
        params: { realm: 'opa-sync-test' },
      });
      expect(parseChallenge('')).to.equal(undefined);
    });
  });

  describe('docker config.json', () => {
    const auth = Buffer.from('me:s3cr:et').toString('base64');
    it('finds the entry of the host, however its key is written', () => {
      expect(dockerAuthsHost('https://index.docker.io/v1/')).to.equal('index.docker.io');
      const text = JSON.stringify({
        auths: { 'https://r.example:5000/v2/': { auth }, 'other.example': { username: 'u', password: 'p' } },
      });
      expect(dockerConfigCredential(text, 'r.example:5000', 'c.json')).to.deep.equal({
        kind: 'basic',
        username: 'me',
        password: 's3cr:et',
      });
      expect(dockerConfigCredential(text, 'other.example', 'c.json')).to.deep.equal({
        kind: 'basic',
        username: 'u',
        password: 'p',
      });
      expect(dockerConfigCredential(text, 'nowhere.example', 'c.json')).to.equal(undefined);
    });

    it('names the file and the reason when it cannot be used', () => {
      expect(() => dockerConfigCredential('{', 'h', '/etc/docker.json')).to.throw(
        /docker config \/etc\/docker.json is not JSON/,
      );
      expect(() => dockerConfigCredential('{"auths":{"h":{}}}', 'h', 'c.json')).to.throw(
        /the entry "h" has neither "auth" nor "username" and "password"/,
      );
    });
  });

  describe('credential files', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-oci-creds-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('sends the token file as a bearer token, and the password file with the user', async () => {
      const token = path.join(dir, 'token');
      writeFileSync(token, 'abc123\n');
      expect(await new Credentials({ tokenFile: token }).forHost('r.example')).to.deep.equal({
        kind: 'bearer',
        token: 'abc123',
      });
      const password = path.join(dir, 'password');
      writeFileSync(password, 'pw\n');
      expect(
        await new Credentials({ username: 'me', passwordFile: password }).forHost('r.example'),
      ).to.deep.equal({
        kind: 'basic',
        username: 'me',
        password: 'pw',
      });
      expect(await new Credentials({}).forHost('r.example')).to.deep.equal({ kind: 'none' });
    });

    it('names a file that cannot be read', async () => {
      const missing = path.join(dir, 'missing.json');
      let err: unknown;
      try {
        await new Credentials({ dockerConfig: missing }).forHost('r.example');
      } catch (e) {
        err = e;
      }
      expect(err).to.have.property('code', 'oci_credentials_unusable');
      expect((err as Error).message).to.include(missing);
    });
  });

  it('builds the same artifact from the same bundle (no timestamps), with OPA’s media types', () => {
    const bytes = Buffer.from('not really a tarball');
    const a = bundleArtifact('policies', 'abc', bytes);
    const b = bundleArtifact('policies', 'abc', Buffer.from(bytes));
    expect(a.manifest.digest).to.equal(b.manifest.digest);
    expect(a.layer.digest).to.equal(digestOf(bytes));
    const manifest = JSON.parse(a.manifest.bytes.toString('utf8')) as {
      mediaType: string;
      config: { mediaType: string; digest: string };
      layers: { mediaType: string; size: number }[];
    };
    expect(manifest.mediaType).to.equal('application/vnd.oci.image.manifest.v1+json');
    expect(manifest.config).to.include({
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: a.config.digest,
    });
    expect(manifest.layers).to.have.length(1);
    expect(manifest.layers[0]).to.include({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      size: bytes.length,
    });
  });

  describe('flags', () => {
    const problemsOf = configProblems;

    it('needs --oci-repository for the other --oci-* flags, and bundles to push', () => {
      expect(problemsOf('--policies-dir=/p', '--oci-plain-http', '--oci-token-file=/t')).to.include.members([
        '--oci-plain-http needs --oci-repository',
        '--oci-token-file needs --oci-repository',
      ]);
      expect(problemsOf('--namespaces=opa', '--oci-repository=r.example/x')).to.include(
        '--oci-repository needs --bundle-addr or --bundles-dir (the bundles it pushes are built for them)',
      );
    });

    it('pairs the user with the password file and keeps the token file apart', () => {
      const base = ['--bundles-dir=/b', '--oci-repository=r.example/x'];
      expect(problemsOf(...base, '--oci-username=u')).to.include('--oci-username needs --oci-password-file');
      expect(
        problemsOf(...base, '--oci-username=u', '--oci-password-file=/p', '--oci-token-file=/t'),
      ).to.include('You can not use both --oci-token-file and --oci-username');
      expect(problemsOf(...base, '--oci-tag=.bad')).to.have.length(1);
    });
  });
});
