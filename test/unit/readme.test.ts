// The README's flags table lists every flag of the flag table, with the default --help shows.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { FLAGS, formatDefault } from '../../src/config-flags.js';

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

  it('shows the two commands that matter', () => {
    expect(readme).to.include('npm ci && npm start');
    expect(readme).to.include('npm ci && npm test');
  });
});
