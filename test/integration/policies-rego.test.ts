// The example policies shipped in policies/ pass their own Rego unit tests under the real `opa test`,
// and are formatted as `opa fmt` wants them.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { requireTool } from '../../scripts/tools.js';

const run = promisify(execFile);
const policies = fileURLToPath(new URL('../../policies', import.meta.url));

describe('policies/ (real opa test)', () => {
  it('passes every Rego unit test', async () => {
    const { stdout } = await run(requireTool('opa'), ['test', '--format', 'json', policies]);
    const results = JSON.parse(stdout) as {
      name: string;
      package: string;
      fail?: boolean;
      error?: unknown;
    }[];
    expect(results.length).to.be.at.least(10);
    const failed = results
      .filter((r) => r.fail === true || r.error !== undefined)
      .map((r) => `${r.package}.${r.name}`);
    expect(failed).to.deep.equal([]);
    expect(results.map((r) => r.package)).to.include.members([
      'data.system_test',
      'data.kubernetes.admission_test',
    ]);
  });

  it('is formatted as opa fmt wants', async () => {
    const { stdout } = await run(requireTool('opa'), ['fmt', '--list', policies]);
    expect(stdout.trim()).to.equal('');
  });
});
