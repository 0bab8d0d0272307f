// The token-file reader of src/util/token-file.ts, shared by the bundle server's bearer tokens and the
// OPA client's --opa-auth-token-file: trimmed lines, stat-based change detection (an atomic replace
// with the same size and mtime included), the stat interval, forced reads, the size cap, and errors
// that name the file.
import { mkdtempSync, renameSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import {
  MAX_TOKEN_FILE_BYTES,
  TokenFileError,
  TokenFileReader,
  tokenFileLines,
} from '../../src/util/token-file.js';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (err: unknown) => err,
  );
}

describe('token file reader', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-token-file-'));
    file = path.join(dir, 'token');
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('splits into trimmed lines, blank ones kept', () => {
    expect(tokenFileLines('  a \r\n\n# c\r\nb')).to.deep.equal(['a', '', '# c', 'b']);
    writeFileSync(file, ' first \r\nsecond\n');
    const reader = new TokenFileReader(file);
    expect(reader.readSync()).to.deep.equal({ lines: ['first', 'second', ''], changed: true });
  });

  it('reads again only when the stat changed, and sees an atomic replace with the same size and mtime', async () => {
    writeFileSync(file, 'one\n');
    const reader = new TokenFileReader(file, { recheckMs: 0 });
    expect((await reader.read()).lines[0]).to.equal('one');
    expect(await reader.read()).to.deep.equal({ lines: ['one', ''], changed: false });
    const { mtime } = statSync(file);
    const next = path.join(dir, '.token.tmp');
    writeFileSync(next, 'two\n');
    utimesSync(next, mtime, mtime);
    renameSync(next, file);
    expect(await reader.read()).to.deep.equal({ lines: ['two', ''], changed: true });
  });

  it('stats at most once per interval unless forced', async () => {
    writeFileSync(file, 'one\n');
    const reader = new TokenFileReader(file, { recheckMs: 60_000 });
    reader.readSync();
    writeFileSync(file, 'two\n');
    expect((await reader.read()).lines[0]).to.equal('one');
    expect(await reader.read(true)).to.deep.equal({ lines: ['two', ''], changed: true });
    // Forced, and the same lines: read, but not changed.
    expect(await reader.read(true)).to.deep.equal({ lines: ['two', ''], changed: false });
  });

  it('shares one read between concurrent callers, and runs one more, shared, for forced ones', async () => {
    writeFileSync(file, 'one\n');
    const reader = new TokenFileReader(file, { recheckMs: 0 });
    const a = reader.read();
    expect(reader.read()).to.equal(a);
    // A forced read cannot join a read that may have started before the change that asks for it.
    const forced = reader.read(true);
    expect(forced).not.to.equal(a);
    expect(reader.read(true)).to.equal(forced);
    expect((await a).lines[0]).to.equal('one');
    writeFileSync(file, 'two\n');
    expect((await forced).lines[0]).to.equal('two');
    expect(reader.read(true)).not.to.equal(forced);
  });

  it('names the file in its errors, gives the error again within the interval, and recovers', async () => {
    const reader = new TokenFileReader(file, { recheckMs: 60_000 });
    expect(() => reader.readSync())
      .to.throw(TokenFileError)
      .with.property('message')
      .that.includes(file)
      .and.includes('cannot be read');
    const err = await rejection(reader.read());
    expect(err).to.be.instanceOf(TokenFileError);
    expect((err as TokenFileError).file).to.equal(file);
    expect((err as TokenFileError).reason).to.match(/^cannot be read: ENOENT/);
    writeFileSync(file, 'back\n');
    expect(await rejection(reader.read())).to.equal(err);
    expect((await reader.read(true)).lines[0]).to.equal('back');
  });

  it('refuses a file larger than the cap, and keeps the last lines for the caller to keep', async () => {
    writeFileSync(file, 'small\n');
    const reader = new TokenFileReader(file, { recheckMs: 0 });
    reader.readSync();
    truncateSync(file, MAX_TOKEN_FILE_BYTES + 1);
    const err = await rejection(reader.read());
    expect((err as TokenFileError).reason).to.include(`larger than ${MAX_TOKEN_FILE_BYTES} bytes`);
    writeFileSync(file, 'small\n');
    expect(await reader.read()).to.deep.equal({ lines: ['small', ''], changed: false });
  });

  it('resolves a relative path, so messages name the file wherever they are read', () => {
    const reader = new TokenFileReader('relative/token');
    expect(reader.file).to.equal(path.resolve('relative/token'));
  });
});
