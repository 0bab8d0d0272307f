// The test-tool locator: user-supplied binaries win, and a missing binary gives an error naming it.
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import {
  KUBERNETES_VERSION,
  MATRIX_OPA_VERSIONS,
  OPA_VERSION,
  locateOpaVersion,
  locateTools,
  requireOpa,
  requireTool,
  toolsCacheDir,
} from '../../scripts/tools.js';
import { startOpa } from '../harness/opa.js';

describe('test tools', () => {
  const empty = mkdtempSync(path.join(tmpdir(), 'opa-sync-tools-'));

  it('keeps the cache outside the work tree, keyed by version', () => {
    expect(toolsCacheDir({ XDG_CACHE_HOME: '/x/cache' })).to.equal('/x/cache/opa-sync/tools');
    expect(toolsCacheDir({ OPA_SYNC_TOOLS_DIR: '/y' })).to.equal('/y');
    const located = locateTools({ OPA_SYNC_TOOLS_DIR: '/y' });
    expect(located.find((t) => t.name === 'opa')?.path).to.equal(`/y/opa-${OPA_VERSION}/opa`);
    expect(located.find((t) => t.name === 'kube-apiserver')?.path).to.match(
      new RegExp(`^/y/k8s-${KUBERNETES_VERSION.replace(/\./g, '\\.')}-[0-9a-f]{12}/kube-apiserver$`),
    );
  });

  it("keeps the version matrix's OPAs beside the default one, never in its place", () => {
    expect(MATRIX_OPA_VERSIONS).to.not.include(OPA_VERSION);
    for (const v of MATRIX_OPA_VERSIONS) {
      expect(locateOpaVersion(v, { OPA_SYNC_TOOLS_DIR: '/y' }).path).to.equal(`/y/opa-${v}/opa`);
    }
    expect(() => requireOpa('v0.70.0', { OPA_SYNC_TOOLS_DIR: empty })).to.throw(
      /the opa binary of OPA v0\.70\.0 is not available: .*opa-v0\.70\.0\/opa is missing: run `npm run tools`/,
    );
    expect(() => requireOpa('v0.1.0', { OPA_SYNC_TOOLS_DIR: empty })).to.throw(
      /OPA v0\.1\.0 is not one the tools script builds/,
    );
    const fake = path.join(empty, 'default-opa');
    writeFileSync(fake, '#!/bin/sh\n');
    chmodSync(fake, 0o755);
    expect(requireOpa(OPA_VERSION, { OPA_BIN: fake, OPA_SYNC_TOOLS_DIR: empty })).to.equal(fake);
  });

  it('uses a binary the user brings through its environment variable', () => {
    const fake = path.join(empty, 'my-opa');
    writeFileSync(fake, '#!/bin/sh\n');
    chmodSync(fake, 0o755);
    expect(requireTool('opa', { OPA_BIN: fake, OPA_SYNC_TOOLS_DIR: empty })).to.equal(fake);
  });

  it('names the missing binary and how to get it', () => {
    expect(() => requireTool('kube-apiserver', { OPA_SYNC_TOOLS_DIR: empty })).to.throw(
      /the kube-apiserver binary is not available: .*kube-apiserver is missing: run `npm run tools`.*KUBE_APISERVER_BIN/,
    );
    expect(() => requireTool('etcd', { ETCD_BIN: '/nonexistent/etcd' })).to.throw(
      /the etcd binary is not available: ETCD_BIN points at \/nonexistent\/etcd/,
    );
  });

  it('makes a test that needs OPA fail, naming the binary, when OPA cannot be found', async () => {
    const saved = process.env.OPA_BIN;
    process.env.OPA_BIN = path.join(empty, 'no-such-opa');
    try {
      const err = await startOpa(empty).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(Error);
      expect((err as Error).message).to.match(
        /the opa binary is not available: OPA_BIN points at .*no-such-opa/,
      );
    } finally {
      if (saved === undefined) delete process.env.OPA_BIN;
      else process.env.OPA_BIN = saved;
    }
  });
});
