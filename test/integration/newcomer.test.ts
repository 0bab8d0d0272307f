// The newcomer's path, end to end, from a clean copy of the repository at HEAD (a git clone; node_modules
// linked, since `npm ci` is not what is tested): `npm start` through the real npm prints the bundle's
// URL, the OPA configuration file it wrote and a command; a real OPA started with exactly that command
// (only its port changed, so as not to clash on a shared machine) activates the bundle; the README's
// "what you should see" walkthrough gives the README's answers and output; an edit reaches the OPA;
// SIGTERM to the npm process, and a Ctrl-C to its process group, leave no process behind and the port
// free; a mistyped flag gets the suggestion. Needs the real `opa` (built by `npm run tools`), never
// builds it.
import { execFile, execFileSync, spawn } from 'node:child_process';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import getPort from 'get-port';
import { requireTool } from '../../scripts/tools.js';
import { httpRequest, waitFor } from '../harness/index.js';
import { logTail, startProcess, type ManagedProcess } from '../harness/processes.js';
import { runDir } from '../harness/run-dir.js';
import { StopWaiting } from '../harness/wait.js';

const execFileAsync = promisify(execFile);
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

/** The code block that follows `<!-- newcomer:<name> -->` in the README. */
function readmeBlock(name: string): string {
  const marker = `<!-- newcomer:${name} -->`;
  const at = readme.indexOf(marker);
  if (at < 0) throw new Error(`README.md has no ${marker}`);
  const match = /```[a-z]*\n([\s\S]*?)```/.exec(readme.slice(at));
  if (match?.[1] === undefined) throw new Error(`README.md has no code block after ${marker}`);
  return match[1];
}

/** Processes whose working directory or command line is inside `dir`. */
function processesIn(dir: string): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (cmd === '') continue; // a zombie: gone, only not reaped yet
      if (cwd === dir || cwd.startsWith(`${dir}/`) || cmd.includes(dir)) found.push({ pid, cmd });
    } catch {
      // gone meanwhile, or not ours to look at
    }
  }
  return found;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/** Splits a command line printed for a POSIX shell (plain words and single-quoted ones). */
function shellWords(line: string): string[] {
  const words: string[] = [];
  const pattern = /'((?:[^']|'\\'')*)'|(\S+)/g;
  for (const [, quoted, plain] of line.matchAll(pattern)) {
    words.push(quoted !== undefined ? quoted.replaceAll(`'\\''`, "'") : (plain ?? ''));
  }
  return words;
}

describe('the newcomer path: npm start on a clean copy, an OPA on the printed command (real npm, real OPA)', function () {
  this.timeout(60_000);
  const opaBin = requireTool('opa');
  let copy: string;
  let bundlePort: number;
  let opaPort: number;
  let npm: ManagedProcess | undefined;
  let opa: ManagedProcess | undefined;
  let opaUrl: string;
  const others: number[] = [];

  /** What the npm process printed, stdout and stderr as a terminal shows them. */
  const printed = (): string => (npm === undefined ? '' : logTail(npm, 10_000));

  /** The real output, with what differs from the README's machine made the README's. */
  const normalise = (text: string): string =>
    text
      .replaceAll(` --bundle-addr=127.0.0.1:${bundlePort}`, '')
      .replaceAll(`127.0.0.1:${bundlePort}`, '127.0.0.1:8282')
      .replaceAll(`port=${bundlePort} `, 'port=8282 ')
      .replaceAll(opaBin, '/home/you/.cache/opa-sync/tools/opa-v1.22.3/opa')
      .replaceAll(copy, '/home/you/opa-sync')
      .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, '<time>');

  before(function () {
    this.timeout(30_000);
    const head = execFileSync('git', ['-C', repoRoot, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    copy = realpathSync(mkdtempSync(path.join(tmpdir(), 'opa-sync-newcomer-')));
    execFileSync('git', ['clone', '--quiet', repoRoot, copy]);
    execFileSync('git', ['-C', copy, 'checkout', '--quiet', '--detach', head]);
    symlinkSync(realpathSync(path.join(repoRoot, 'node_modules')), path.join(copy, 'node_modules'));
  });

  after(async () => {
    await opa?.stop();
    await npm?.stop();
    for (const pid of others) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    // Whatever the test did not stop (a failure of what it tests): never left running.
    if (copy !== undefined) {
      for (const { pid } of processesIn(copy)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('npm start prints the bundle URL, the OPA configuration file it wrote, and the command', async () => {
    bundlePort = await getPort({ host: '127.0.0.1' });
    npm = startProcess(
      'npm-start',
      'npm',
      ['start', '--', `--bundle-addr=127.0.0.1:${bundlePort}`],
      runDir(),
      {},
      copy,
    );
    const started = Date.now();
    await waitFor(
      'npm start to publish the first bundle',
      () => {
        if (npm?.hasExited()) throw new StopWaiting(`npm start exited:\n${printed()}`);
        return printed().includes('bundle published') ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 50 },
    );
    const tookMs = Date.now() - started;
    const out = printed();
    const config = path.join(copy, 'bundles', 'opa-config.yaml');
    expect(out).to.include(
      `opa-sync serves the bundle "policies" at http://127.0.0.1:${bundlePort}/bundles/policies\n`,
    );
    expect(out).to.include(`An OPA pulls it with this configuration, written to ${config}:\n`);
    const lines = out.split('\n');
    const command = lines[lines.indexOf('Start one in another terminal with:') + 2]?.trim();
    expect(command).to.equal(`${opaBin} run --server --addr=127.0.0.1:8181 --config-file=${config}`);
    expect(readFileSync(config, 'utf8')).to.include(`url: http://127.0.0.1:${bundlePort}\n`);
    // About 1 s on an idle machine, 3 to 9 s on 2 busy cores: well below what a TypeScript build took.
    expect(tookMs, 'npm start to the first bundle').to.be.below(30_000);
  });

  it("prints what the README's transcript shows", () => {
    const out = printed();
    const end = out.indexOf('\n', out.indexOf('bundle published'));
    const real = normalise(`${out.slice(out.indexOf('> opa-sync@'), end < 0 ? out.length : end)}\n`);
    expect(real).to.equal(normalise(readmeBlock('start')));
  });

  it('a real OPA started with exactly the printed command activates the bundle and answers as in the README', async () => {
    const lines = printed().split('\n');
    const words = shellWords(lines[lines.indexOf('Start one in another terminal with:') + 2] ?? '');
    // Only the port is changed: 8181 may be taken on a shared machine.
    opaPort = await getPort({ host: '127.0.0.1' });
    const addr = words.indexOf('--addr=127.0.0.1:8181');
    expect(addr).to.be.greaterThan(0);
    words[addr] = `--addr=127.0.0.1:${opaPort}`;
    const [binary = '', ...args] = words;
    opa = startProcess('opa-newcomer', binary, args, runDir(), {}, tmpdir());
    opaUrl = `http://127.0.0.1:${opaPort}`;
    await waitFor(
      'the OPA to activate the bundle',
      async () => {
        if (opa?.hasExited()) throw new StopWaiting(`opa exited:\n${logTail(opa, 20)}`);
        return (await httpRequest(`${opaUrl}/health?bundles=true`, { timeoutMs: 1000 })).status === 200
          ? true
          : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 50 },
    );
    expect(await ask()).to.equal(readmeBlock('answer').trim());
  });

  /** The README's curl: its path and body, sent to the OPA; the body of the answer. */
  async function ask(): Promise<string> {
    const query = readmeBlock('query').replace(/\\\n\s*/g, '');
    const urlPath = /localhost:8181(\S+)/.exec(query)?.[1] ?? '';
    const body = /-d '([^']*)'/.exec(query)?.[1] ?? '';
    const res = await httpRequest(`${opaUrl}${urlPath}`, { method: 'POST', body, timeoutMs: 5000 });
    expect(res.status).to.equal(200);
    return res.body.trim();
  }

  it("the README's edit reaches the OPA within a second or two, with the README's output and answer", async () => {
    expect(readme.replace(/\s+/g, ' ')).to.include(
      'edit `policies/network-policies/ensure-nap-exists.rego`: change `could not be created` to `was refused`',
    );
    const file = path.join(copy, 'policies', 'network-policies', 'ensure-nap-exists.rego');
    const before = printed().length;
    writeFileSync(file, readFileSync(file, 'utf8').replace('could not be created', 'was refused'));
    const started = Date.now();
    const expected = readmeBlock('answer-after-edit').trim();
    await waitFor('the edit to reach the OPA', async () => ((await ask()) === expected ? true : undefined), {
      timeoutMs: 10_000,
      intervalMs: 50,
    });
    expect(Date.now() - started, 'edit to OPA').to.be.below(5000);
    await waitFor('opa-sync to say it published', () =>
      printed().slice(before).includes('bundle published') ? true : undefined,
    );
    expect(normalise(`${printed().slice(before).trim()}\n`)).to.equal(normalise(readmeBlock('edit')));
  });

  it('SIGTERM to the npm process stops opa-sync: no process of the copy is left, the port is free', async () => {
    await opa?.stop();
    opa = undefined;
    const running = npm;
    if (running === undefined) throw new Error('npm start is not running');
    process.kill(running.pid, 'SIGTERM');
    const exit = await Promise.race([
      running.exited,
      new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 10_000).unref()),
    ]);
    expect(exit).not.to.equal('still running');
    await waitFor('no process of the copy', () => (processesIn(copy).length === 0 ? true : undefined), {
      timeoutMs: 5000,
    }).catch(() => undefined);
    expect(processesIn(copy)).to.deep.equal([]);
    expect(await portIsFree(bundlePort)).to.equal(true);
    expect(printed()).to.match(/INFO signal received; stopping signal="SIGTERM"\n.*INFO stopped$/m);
  });

  it('Ctrl-C (SIGINT to the whole process group, as a terminal sends it) is one orderly stop', async () => {
    const log = path.join(runDir(), 'npm-start-ctrl-c.log');
    const child = spawn('npm', ['start', '--', `--bundle-addr=127.0.0.1:${bundlePort}`], {
      cwd: copy,
      detached: true, // its own process group, as a shell's foreground job
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid === undefined) throw new Error('could not start npm');
    const group = child.pid;
    others.push(group);
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor('npm start to publish', () => (out.includes('bundle published') ? true : undefined), {
        timeoutMs: 20_000,
        intervalMs: 50,
      });
      process.kill(-group, 'SIGINT');
      await exited;
    } finally {
      writeFileSync(log, out);
    }
    await waitFor('no process of the copy', () => (processesIn(copy).length === 0 ? true : undefined), {
      timeoutMs: 5000,
    }).catch(() => undefined);
    expect(processesIn(copy)).to.deep.equal([]);
    expect(out).to.match(/INFO signal received; stopping signal="SIGINT"\n.*INFO stopped\n/);
    expect(await portIsFree(bundlePort)).to.equal(true);
  });

  it('a mistyped flag gets the suggestion, through npm start too', async () => {
    const { stdout, stderr } = await execFileAsync(
      'npm',
      ['start', '--', '--opa-ulr=http://127.0.0.1:8181/v1', '--version'],
      {
        cwd: copy,
        timeout: 20_000,
      },
    );
    expect(stdout).to.match(/^opa-sync \d+\.\d+\.\d+$/m);
    expect(stderr).to.include('opa-sync: warning: unknown flag --opa-ulr ignored: did you mean --opa-url?');
  });
});
