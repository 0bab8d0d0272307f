// Validating Rego with an opa binary of either major version (the real OPA 0.70.0 and the default 1.x):
// asked for v1, an OPA 0.x binary reads v1 (`--v1-compatible`); asked for v0, a 1.x binary reads v0
// (`--v0-compatible`) and a 0.x binary needs no flag (its `opa inspect` has none); asked for nothing,
// each reads its own default, as an OPA of its version without flags would load the bundle.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { OPA_VERSION, requireOpa } from '../../scripts/tools.js';
import { opaMajorVersion, regoVersionFlags } from '../../src/bundles/opa-rego-flags.js';
import { RegoChecker } from '../../src/bundles/rego-checker.js';
import { checkModules, type CandidateModule } from '../../src/bundles/validate.js';

const V1: CandidateModule = { path: '/one/p.rego', text: 'package one\n\nallow if input.n == 1\n' };
const V0: CandidateModule = { path: '/zero/p.rego', text: 'package zero\n\nallow { input.n == 0 }\n' };

/** The codes of the errors on each module that failed, by path. */
async function failures(
  opaBin: string,
  modules: CandidateModule[],
  v0: boolean | undefined,
): Promise<Record<string, string[]>> {
  const result = await checkModules(opaBin, modules, { v0 });
  const out: Record<string, string[]> = {};
  for (const [p, errors] of result.errors) {
    out[p] = errors.flatMap((e) => (e.errors ?? []).map((inner) => (inner as { code: string }).code));
  }
  return out;
}

describe('Rego version flags by the opa binary (real OPA 0.70.0 and default)', function () {
  this.timeout(120_000);
  const opa0 = requireOpa('v0.70.0');
  const opa1 = requireOpa(OPA_VERSION);
  let work: string;

  before(() => {
    work = mkdtempSync(path.join(tmpdir(), 'opa-sync-rego-flags-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it("reads each binary's major version", async () => {
    expect(await opaMajorVersion(opa0)).to.equal(0);
    expect(await opaMajorVersion(opa1)).to.equal(1);
    expect(regoVersionFlags(0, false)).to.deep.equal(['--v1-compatible']);
    expect(regoVersionFlags(0, true)).to.deep.equal([]);
    expect(regoVersionFlags(1, true)).to.deep.equal(['--v0-compatible']);
    expect(regoVersionFlags(1, false)).to.deep.equal([]);
    expect(regoVersionFlags(0, undefined)).to.deep.equal([]);
  });

  it('OPA 0.70: v1 asked for, v1 read; v0 asked for, v0 read (check and inspect); nothing asked, v0', async () => {
    expect(await failures(opa0, [V1], false)).to.deep.equal({});
    expect(await failures(opa0, [V0], false)).to.have.keys(V0.path);
    expect(await failures(opa0, [V0], true)).to.deep.equal({});
    expect((await checkModules(opa0, [V0], { v0: true })).packages.get(V0.path)).to.equal('zero');
    expect(await failures(opa0, [V0], undefined)).to.deep.equal({});
    const asV0 = await failures(opa0, [V1], undefined);
    expect(Object.keys(asV0)).to.deep.equal([V1.path]);
    expect(new Set(asV0[V1.path])).to.deep.equal(new Set(['rego_parse_error']));
  });

  it('the default 1.x: v0 asked for, v0 read; nothing asked, v1', async () => {
    expect(await failures(opa1, [V0], true)).to.deep.equal({});
    expect(await failures(opa1, [V1], undefined)).to.deep.equal({});
    expect(await failures(opa1, [V0], undefined)).to.have.keys(V0.path);
  });

  it("the incremental checker with OPA 0.70 asked for v1 checks whole sets and gives checkModules' answer", async () => {
    const checker = new RegoChecker({ opaBin: opa0, v0: false });
    const dir = path.join(work, 'incremental');
    const first = await checker.check([V1], dir);
    expect([...first.errors]).to.deep.equal([]);
    expect(first.packages.get(V1.path)).to.equal('one');
    const edited = { path: V1.path, text: 'package one\n\nallow if input.n ==\n' };
    const broken = await checker.check([edited], dir);
    expect([...broken.errors.keys()]).to.deep.equal([V1.path]);
    expect(checker.lastCheck.whole).to.equal(true);
    expect([...broken.errors]).to.deep.equal([...(await checkModules(opa0, [edited], { v0: false })).errors]);
  });
});
