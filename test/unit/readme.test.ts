// The README's flags table lists every flag of the flag table, with the default --help shows.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { FLAGS, formatDefault } from '../../src/config-flags.js';
import { ERROR_CODES, type ErrorCodeInfo } from '../../src/util/error-codes.js';
import { FIRST_BUILD_SECONDS } from '../../scripts/build-progress.js';

describe('README', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it('has a row for every flag, with its default', () => {
    // Rows as cells (the formatter pads them): | flag | from | kind | default | meaning |
    const rows = readme
      .split('\n')
      .filter((line) => line.startsWith('| `--'))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    const missing: string[] = [];
    for (const [name, spec] of Object.entries(FLAGS)) {
      const row = rows.find((cells) => cells[1] === `\`--${name}\``);
      if (row?.[4] !== formatDefault(spec).replaceAll('|', '\\|')) missing.push(name);
    }
    expect(missing).to.deep.equal([]);
  });

  it('has the table of error codes, row for row (code, status, retried, meaning)', () => {
    const rows = readme
      .split('\n')
      .filter((line) => /^\| `[a-z_]+` +\| +(\d+|–) +\| +(yes|no) +\|/.test(line))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    const inReadme = rows.map((cells) => cells.slice(1, 5).join(' | '));
    const inCode = Object.entries(ERROR_CODES as Record<string, ErrorCodeInfo>).map(
      ([code, info]) =>
        `\`${code}\` | ${info.status ?? '–'} | ${info.retryable ? 'yes' : 'no'} | ${info.meaning}`,
    );
    expect(inReadme).to.deep.equal(inCode);
  });

  it("gives the first build's times that scripts/build-progress.ts estimates with", () => {
    const opa = FIRST_BUILD_SECONDS.opa / 60;
    const kubernetes = FIRST_BUILD_SECONDS.kubernetes / 60;
    const text = readme.replace(/\s+/g, ' ');
    expect(text).to.include(`about ${Math.round(opa + kubernetes)} minutes on 2 cores, once`);
    expect(text).to.include(`OPA about ${opa} minutes, the Kubernetes components about ${kubernetes},`);
    expect(text).to.include(`about ${opa} minutes on 2 cores the first time`);
    const matrix = FIRST_BUILD_SECONDS['opa-matrix'] / 60;
    expect(text).to.include(
      `the three other OPA versions of the version matrix, about ${matrix} minute each`,
    );
    expect(text).to.include(`Each takes about ${matrix} minute after the default OPA`);
  });

  it('shows the two commands that matter', () => {
    expect(readme).to.include('npm ci && npm start');
    expect(readme).to.include('npm ci && npm test');
  });
});
