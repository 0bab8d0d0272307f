// `npm ci` on a clean clone runs the install scripts the project needs (esbuild's, which puts the binary
// tsx uses in place) without npm 11's "install scripts not yet covered by allowScripts" warning: every
// locked package with an install script is approved by name in package.json's `allowScripts`, the field
// `npm install-scripts approve <pkg>` writes. A new dependency with an install script fails here until it
// is reviewed and approved (or denied).
import { readFileSync } from 'node:fs';
import { expect } from 'chai';

interface Lockfile {
  packages: Record<string, { hasInstallScript?: boolean; version?: string }>;
}

describe('install scripts (npm allowScripts)', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    allowScripts?: Record<string, boolean>;
  };
  const lock = JSON.parse(
    readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8'),
  ) as Lockfile;

  it('approves every locked package that has an install script, and nothing else', () => {
    const withScripts = Object.entries(lock.packages)
      .filter(([, entry]) => entry.hasInstallScript === true)
      // "node_modules/a/node_modules/@b/c" -> "@b/c"
      .map(([where]) => where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length))
      .sort();
    expect(withScripts).to.include('esbuild');
    const approved = Object.entries(pkg.allowScripts ?? {})
      .filter(([, allowed]) => allowed)
      .map(([name]) => name)
      .sort();
    expect(approved).to.deep.equal([...new Set(withScripts)]);
  });
});
