// The helper process that runs opa for the publisher (real opa): exit statuses and output come back as
// from execFile; a command that cannot run, is stopped by its signal or outlives its limit rejects; a
// helper that dies fails what it was running and the next command starts a new one; stop() ends it,
// and it ends by itself when its parent closes the channel.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { expect } from 'chai';
import getPort from 'get-port';
import { requireTool } from '../../scripts/tools.js';
import { OpaRunner } from '../../src/bundles/opa-runner.js';
import { httpRequest, waitFor } from '../harness/index.js';

/** The processes whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        // The fields after the command name (which may hold spaces): state, then the parent's pid.
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The helper's pid (for the tests only: it is private). */
function helperPid(runner: OpaRunner): number {
  const pid = (runner as unknown as { child?: { pid?: number } }).child?.pid;
  if (pid === undefined) throw new Error('no helper running');
  return pid;
}

describe('opa runner (real opa)', () => {
  const opaBin = requireTool('opa');
  let runner: OpaRunner;

  beforeEach(() => {
    runner = new OpaRunner();
  });
  afterEach(async () => {
    await runner.stop();
  });

  it('gives the exit status and output of a command, failing ones included', async () => {
    const ok = await runner.exec(opaBin, ['version'], { timeoutMs: 10_000 });
    expect(ok.code).to.equal(0);
    expect(ok.stdout).to.include('Version:');
    const failed = await runner.exec(opaBin, ['eval', '--format', 'json', 'x := ['], { timeoutMs: 10_000 });
    expect(failed.code).to.not.equal(0);
    expect(`${failed.stdout}${failed.stderr}`).to.include('rego_parse_error');
  });

  it('rejects a command that cannot run, or that its signal stops, without a numeric code', async () => {
    const missing = await runner
      .exec('/nonexistent/opa', ['version'], { timeoutMs: 10_000 })
      .catch((e: unknown) => e);
    expect(missing).to.be.instanceOf(Error);
    expect((missing as { code?: unknown }).code).to.be.a('string');

    const stop = new AbortController();
    // `opa run --server` would run for ever: once it answers, the abort kills it.
    const port = await getPort({ host: '127.0.0.1' });
    const held = runner.exec(opaBin, ['run', '--server', `--addr=127.0.0.1:${port}`], {
      timeoutMs: 60_000,
      signal: stop.signal,
    });
    const outcome = held.catch((e: unknown) => e);
    await waitFor('the opa server run by the helper to answer', async () =>
      (await httpRequest(`http://127.0.0.1:${port}/health`, { timeoutMs: 1000 })).status === 200
        ? true
        : undefined,
    );
    const started = Date.now();
    stop.abort();
    const aborted = await outcome;
    expect((aborted as { code?: unknown }).code).to.equal('ABORT_ERR');
    expect(Date.now() - started).to.be.below(5000);
    // Killed, not only given up on: its port no longer answers.
    await waitFor('the aborted opa server to be gone', async () =>
      (await httpRequest(`http://127.0.0.1:${port}/health`, { timeoutMs: 1000 }).then(
        () => false,
        () => true,
      ))
        ? true
        : undefined,
    );
  });

  it('kills a command past its time limit', async () => {
    const slow = await runner
      .exec(opaBin, ['run', '--server', '--addr=127.0.0.1:0'], { timeoutMs: 300 })
      .catch((e: unknown) => e);
    expect(slow).to.be.instanceOf(Error);
    expect((slow as { code?: unknown }).code).to.be.a('string');
  });

  it('fails what a dead helper ran, starts a new one for the next command, and stop() ends it', async () => {
    await runner.exec(opaBin, ['version'], { timeoutMs: 10_000 });
    const first = helperPid(runner);
    const running = runner.exec(opaBin, ['run', '--server', '--addr=127.0.0.1:0'], { timeoutMs: 60_000 });
    process.kill(first, 'SIGKILL');
    expect(await running.catch((e: unknown) => String(e))).to.include('exited');
    const again = await runner.exec(opaBin, ['version'], { timeoutMs: 10_000 });
    expect(again.code).to.equal(0);
    const second = helperPid(runner);
    expect(second).to.not.equal(first);
    await runner.stop();
    await until('the helper to exit', () => !alive(second));
    const refused = await runner
      .exec(opaBin, ['version'], { timeoutMs: 10_000 })
      .catch((e: unknown) => String(e));
    expect(refused).to.include('stopped');
  });

  it('is not left running when opa-sync is killed, nor is the opa it runs', async () => {
    // A parent of its own that starts a runner with an opa that runs for ever, prints the helper's
    // pid, and is then SIGKILLed.
    const runnerUrl = new URL('../../src/bundles/opa-runner.ts', import.meta.url).href;
    const script = [
      `const { OpaRunner } = await import(${JSON.stringify(runnerUrl)});`,
      'const runner = new OpaRunner();',
      `await runner.exec(${JSON.stringify(opaBin)}, ['version'], { timeoutMs: 10000 });`,
      `runner.exec(${JSON.stringify(opaBin)}, ['run', '--server', '--addr=127.0.0.1:0'], { timeoutMs: 600000 }).catch(() => undefined);`,
      'console.log(String(runner.child.pid));',
      'setInterval(() => undefined, 1000);',
    ].join('\n');
    const parent = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const pid = await new Promise<number>((resolve, reject) => {
        parent.stdout.on('data', (chunk: Buffer) => resolve(Number(chunk.toString('utf8').trim())));
        parent.once('exit', (code) => reject(new Error(`the parent exited (${String(code)})`)));
      });
      expect(alive(pid)).to.equal(true);
      let opa: number | undefined;
      await until('the helper to start opa', () => {
        opa = childrenOf(pid)[0];
        return opa !== undefined;
      });
      parent.kill('SIGKILL');
      await until('the helper to exit after its parent', () => !alive(pid));
      await until('its opa to be killed', () => opa === undefined || !alive(opa));
    } finally {
      parent.kill('SIGKILL');
    }
  });
});
