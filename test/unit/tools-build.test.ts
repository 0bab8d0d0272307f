// Building the test tools, with a stand-in `go` on PATH (a script of ours at the one seam, the go
// command): every step says what it builds and what to expect (the last build's time on this machine,
// or a first build's on 2 cores), then prints the elapsed time while go runs; the time is recorded in
// the tools cache for the next estimate; and a stopped build ends go with its whole process group and
// keeps nothing half-built.
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { buildTimesFile, formatDuration, readBuildTimes } from '../../scripts/build-progress.js';
import { OPA_VERSION, ensureTools, locateTools } from '../../scripts/tools.js';
import { waitFor } from '../harness/wait.js';

/** A `go` that answers `go version`, records its pid, sleeps, then installs a fake opa into $GOBIN. */
function fakeGo(dir: string, sleepSeconds: number): string {
  const bin = path.join(dir, 'bin');
  const go = path.join(bin, 'go');
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    go,
    `#!/bin/sh
if [ "$1" = version ]; then echo "go version go1.99 fake/test"; exit 0; fi
echo $$ > "${dir}/go.pid"
sleep ${sleepSeconds} &
echo $! > "${dir}/sleep.pid"
wait
printf '#!/bin/sh\\necho fake opa\\n' > "$GOBIN/opa"
chmod +x "$GOBIN/opa"
`,
  );
  chmodSync(go, 0o755);
  return bin;
}

function collect(): { stream: PassThrough; lines(): string[] } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return {
    stream,
    lines: () =>
      Buffer.concat(chunks)
        .toString('utf8')
        .split('\n')
        .filter((l) => l !== ''),
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('building the test tools: progress, recorded times, stopping', () => {
  it('says which step, what to expect and the elapsed time, and records the time for the next build', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-tools-build-'));
    const env = { OPA_SYNC_TOOLS_DIR: path.join(dir, 'cache'), PATH: `${fakeGo(dir, 0.5)}:/usr/bin:/bin` };
    const first = collect();
    await ensureTools(['opa'], env, { out: first.stream, progressEveryMs: 150 });
    const title = `[tools] step 1/1: building OPA ${OPA_VERSION}`;
    const lines = first.lines();
    expect(lines[0]).to.match(/^\[tools\] missing: opa \(cache: .*cache\)$/);
    expect(lines[1]).to.equal('[tools] using go version go1.99 fake/test');
    expect(lines[2]).to.equal(`${title} (a first build takes about 4 min 30 s on 2 cores)`);
    const ticks = lines.filter((l) =>
      l.startsWith(`${title} (a first build takes about 4 min 30 s on 2 cores) … elapsed `),
    );
    expect(ticks.length).to.be.at.least(2);
    expect(lines.at(-1)).to.match(/^\[tools\] step 1\/1: done in \d\.\d s$/);
    expect(locateTools(env).find((t) => t.name === 'opa')?.present).to.equal(true);
    const recorded = readBuildTimes(env.OPA_SYNC_TOOLS_DIR).opa;
    expect(recorded?.what).to.equal(OPA_VERSION);
    expect(recorded?.seconds).to.be.within(0.4, 5);

    // The next build of the same step (the binary gone) estimates from this one.
    const opaDir = path.dirname(locateTools(env).find((t) => t.name === 'opa')?.path ?? '');
    rmSync(opaDir, { recursive: true, force: true });
    const second = collect();
    await ensureTools(['opa'], env, { out: second.stream, progressEveryMs: 10_000 });
    expect(second.lines()[2]).to.equal(
      `${title} (last time ${formatDuration((recorded?.seconds ?? 0) * 1000)})`,
    );
  });

  it('takes a corrupt record for no record', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-tools-build-'));
    writeFileSync(buildTimesFile(dir), '{"opa": null, "kubernetes": {"seconds": "soon"}');
    expect(readBuildTimes(dir)).to.deep.equal({});
    writeFileSync(buildTimesFile(dir), '{"opa": null, "kubernetes": {"seconds": "soon"}}');
    expect(readBuildTimes(dir)).to.deep.equal({});
  });

  it('a stopped build ends go and what it started, keeps nothing half-built, and records no time', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'opa-sync-tools-build-'));
    const env = { OPA_SYNC_TOOLS_DIR: path.join(dir, 'cache'), PATH: `${fakeGo(dir, 60)}:/usr/bin:/bin` };
    const stop = new AbortController();
    const out = collect();
    const building = ensureTools(['opa'], env, { out: out.stream, signal: stop.signal });
    const sleepPid = await waitFor('go to have started', () =>
      existsSync(path.join(dir, 'sleep.pid'))
        ? Number(readFileSync(path.join(dir, 'sleep.pid'), 'utf8'))
        : undefined,
    );
    const goPid = Number(readFileSync(path.join(dir, 'go.pid'), 'utf8'));
    const started = Date.now();
    stop.abort('SIGTERM');
    const err = await building.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(Error);
    expect(Date.now() - started).to.be.below(5000);
    await waitFor(
      'go and its child to be gone',
      () => (!alive(goPid) && !alive(sleepPid) ? true : undefined),
      {
        timeoutMs: 5000,
      },
    );
    expect(readdirSync(env.OPA_SYNC_TOOLS_DIR)).to.deep.equal([]);
    expect(readBuildTimes(env.OPA_SYNC_TOOLS_DIR)).to.deep.equal({});
  });

  it('formats durations as a person reads them', () => {
    expect(formatDuration(300)).to.equal('0.3 s');
    expect(formatDuration(9_940)).to.equal('9.9 s');
    expect(formatDuration(42_000)).to.equal('42 s');
    expect(formatDuration(270_000)).to.equal('4 min 30 s');
    expect(formatDuration(720_000)).to.equal('12 min');
  });
});
