// The local policies folder source against real temp folders and the real chokidar (no mocks): what
// the initial scan loads and ignores, live changes, atomic saves, bad data files, hostile names and
// symlinks that leave the folder.
import { mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { DesiredState, type OriginState } from '../../src/model/desired-state.js';
import { originKey, type OriginRole } from '../../src/model/origin.js';
import { classifyFile, FolderSource, parseDataFile } from '../../src/sources/folder.js';
import { runPart, type RunningPart } from '../harness/parts.js';
import { capturingLogger, type LogLine } from '../harness/logs.js';
import { waitFor } from '../harness/wait.js';

const WARN = 40;

function keyOf(role: OriginRole, rel: string): string {
  return originKey({ kind: 'file', role, path: rel });
}

function policyText(state: DesiredState, rel: string): string | undefined {
  return state.get(keyOf('policy', rel))?.modules[0]?.text;
}

function dataOf(state: DesiredState, rel: string): OriginState | undefined {
  return state.get(keyOf('data', rel));
}

async function write(file: string, text: string): Promise<void> {
  mkdirSync(path.dirname(file), { recursive: true });
  await writeFile(file, text);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('FolderSource', function () {
  this.timeout(30_000);
  let base: string;
  let dir: string;
  let state: DesiredState;
  let source: RunningPart | undefined;
  let lines: LogLine[];

  beforeEach(() => {
    // realpath: on some systems the temp folder itself is behind a symlink.
    base = realpathSync(mkdtempSync(path.join(tmpdir(), 'opa-sync-folder-')));
    dir = path.join(base, 'dir');
    mkdirSync(dir);
    state = new DesiredState();
  });

  afterEach(async () => {
    await source?.stop();
    source = undefined;
    rmSync(base, { recursive: true, force: true });
  });

  async function startSource(debounceMs = 50): Promise<FolderSource> {
    const captured = capturingLogger();
    lines = captured.lines;
    const folder = new FolderSource({ dir, state, logger: captured.logger, debounceMs });
    source = runPart(folder);
    await source.waitReady();
    return folder;
  }

  function warnings(): LogLine[] {
    return lines.filter((l) => l.level >= WARN);
  }

  describe('initial scan', () => {
    it('loads modules and data documents from nested folders, then reports synced', async () => {
      await write(path.join(dir, 'main.rego'), 'package main\n');
      await write(path.join(dir, 'authz', 'rules', 'deny.rego'), 'package authz.rules\n');
      await write(path.join(dir, 'authz', 'data.json'), '{"roles": ["admin"]}');
      await write(path.join(dir, 'users', 'data.yaml'), 'alice:\n  admin: true\n');
      await write(path.join(dir, 'deep', 'a', 'b', 'data.yml'), 'x: 1\n');

      const s = await startSource();
      expect(s.ready()).to.equal(true);
      expect(state.keys()).to.deep.equal(
        [
          keyOf('data', 'authz/data.json'),
          keyOf('data', 'deep/a/b/data.yml'),
          keyOf('data', 'users/data.yaml'),
          keyOf('policy', 'authz/rules/deny.rego'),
          keyOf('policy', 'main.rego'),
        ].sort(),
      );
      const deny = state.get(keyOf('policy', 'authz/rules/deny.rego'));
      expect(deny?.origin).to.deep.equal({ kind: 'file', role: 'policy', path: 'authz/rules/deny.rego' });
      expect(deny?.modules).to.deep.equal([{ id: 'authz/rules/deny.rego', text: 'package authz.rules\n' }]);
      expect(deny?.problems).to.deep.equal([]);

      const authz = dataOf(state, 'authz/data.json');
      expect(authz?.origin).to.deep.equal({ kind: 'file', role: 'data', path: 'authz/data.json' });
      expect(authz?.documents).to.deep.equal([{ path: ['authz'], value: { roles: ['admin'] } }]);
      expect(authz?.dataRoot).to.deep.equal(['authz']);
      expect(dataOf(state, 'users/data.yaml')?.documents).to.deep.equal([
        { path: ['users'], value: { alice: { admin: true } } },
      ]);
      expect(dataOf(state, 'deep/a/b/data.yml')?.dataRoot).to.deep.equal(['deep', 'a', 'b']);
      expect(warnings()).to.deep.equal([]);
    });

    it('ignores hidden, temporary, test and other files', async () => {
      await write(path.join(dir, 'keep.rego'), 'package keep\n');
      const ignored = [
        '.hidden.rego',
        '.git/objects/x.rego',
        '.config/data.json',
        'sub/.secret/data.json',
        'keep.rego~',
        'keep.rego.swp',
        'keep.rego.swx',
        '#keep.rego#',
        '.#keep.rego',
        '4913',
        'keep.tmp',
        'keep_test.rego',
        'sub/policy_test.rego',
        'notes.txt',
        'README.md',
        'values.json',
        'sub/config.yaml',
      ];
      for (const name of ignored) await write(path.join(dir, name), 'package ignored\n');

      await startSource();
      expect(state.keys()).to.deep.equal([keyOf('policy', 'keep.rego')]);
      expect(warnings()).to.deep.equal([]);
    });

    it('treats a missing folder as empty, and loads it once it appears', async () => {
      rmSync(dir, { recursive: true });
      const s = await startSource();
      expect(s.ready()).to.equal(true);
      expect(state.size).to.equal(0);
      await write(path.join(dir, 'late.rego'), 'package late\n');
      await waitFor('the late folder to be loaded', () =>
        policyText(state, 'late.rego') === 'package late\n' ? true : undefined,
      );
    });
  });

  describe('live changes', () => {
    it('reflects added, changed and deleted files', async () => {
      await startSource();
      const file = path.join(dir, 'app', 'p.rego');
      await write(file, 'package app\n\nallow := false\n');
      await waitFor('the added module', () =>
        policyText(state, 'app/p.rego') !== undefined ? true : undefined,
      );

      await write(file, 'package app\n\nallow := true\n');
      await waitFor('the changed module', () =>
        policyText(state, 'app/p.rego')?.includes('true') === true ? true : undefined,
      );

      const data = path.join(dir, 'app', 'data.json');
      await write(data, '{"a": 1}');
      await waitFor('the added document', () =>
        dataOf(state, 'app/data.json') !== undefined ? true : undefined,
      );
      await write(data, '{"a": 2}');
      await waitFor('the changed document', () =>
        JSON.stringify(dataOf(state, 'app/data.json')?.documents) === '[{"path":["app"],"value":{"a":2}}]'
          ? true
          : undefined,
      );

      unlinkSync(file);
      unlinkSync(data);
      await waitFor('both to be removed', () => (state.size === 0 ? true : undefined));
    });

    it('removes the files of a deleted folder', async () => {
      await write(path.join(dir, 'gone', 'a.rego'), 'package gone\n');
      await write(path.join(dir, 'gone', 'inner', 'data.json'), '{}');
      await startSource();
      expect(state.size).to.equal(2);
      rmSync(path.join(dir, 'gone'), { recursive: true });
      await waitFor('the folder to be removed', () => (state.size === 0 ? true : undefined));
    });

    it('does not write a file saved unchanged', async () => {
      const file = path.join(dir, 'same.rego');
      await write(file, 'package same\n');
      await write(path.join(dir, 'same', 'data.json'), '{"x": 1}');
      await startSource();
      const changes: string[] = [];
      state.subscribe((change) => {
        if (change.kind === 'origin') changes.push(change.key);
      });

      await write(file, 'package same\n');
      await write(path.join(dir, 'same', 'data.json'), '{"x": 1}');
      // A marker written after the unchanged saves: once it is in, the saves were handled too.
      await write(path.join(dir, 'marker.rego'), 'package marker\n');
      await waitFor('the marker', () => (policyText(state, 'marker.rego') !== undefined ? true : undefined));
      await sleep(300);
      expect(changes).to.deep.equal([keyOf('policy', 'marker.rego')]);
    });

    it('ends an atomic save (temp file renamed over) with the new content and no deletion', async () => {
      const file = path.join(dir, 'atomic.rego');
      await write(file, 'package atomic\n\nv := 1\n');
      await startSource();
      const key = keyOf('policy', 'atomic.rego');
      const seen: (string | undefined)[] = [];
      state.subscribe((change) => {
        if (change.kind === 'origin' && change.key === key) seen.push(policyText(state, 'atomic.rego'));
      });

      // What most editors do: write a temp file beside it, then rename it over the original.
      await write(path.join(dir, 'atomic.rego.tmp'), 'package atomic\n\nv := 2\n');
      renameSync(path.join(dir, 'atomic.rego.tmp'), file);
      await waitFor('v := 2', () =>
        policyText(state, 'atomic.rego')?.includes('v := 2') ? true : undefined,
      );

      // What some editors do: remove the file, then write it again.
      unlinkSync(file);
      await write(file, 'package atomic\n\nv := 3\n');
      await waitFor('v := 3', () =>
        policyText(state, 'atomic.rego')?.includes('v := 3') ? true : undefined,
      );
      await sleep(300);

      expect(seen).to.deep.equal(['package atomic\n\nv := 2\n', 'package atomic\n\nv := 3\n']);
      expect(state.keys()).to.deep.equal([key]);
    });

    it('survives files deleted right after their event, and ends with them removed', async () => {
      await startSource(0);
      for (let i = 0; i < 30; i += 1) {
        const file = path.join(dir, `flash-${i % 3}.rego`);
        await write(file, `package flash\n\nn := ${i}\n`);
        if (i % 2 === 0) await sleep(1);
        unlinkSync(file);
      }
      await write(path.join(dir, 'after.rego'), 'package after\n');
      await waitFor('the file written after', () =>
        policyText(state, 'after.rego') !== undefined ? true : undefined,
      );
      // Under load chokidar may report a flash file late; it must still end removed, so wait for the end
      // state rather than for a fixed time.
      const onlyAfter = JSON.stringify([keyOf('policy', 'after.rego')]);
      await waitFor('only the file written after', () =>
        JSON.stringify(state.keys()) === onlyAfter ? true : undefined,
      );
      expect(lines.filter((l) => l.level >= 50)).to.deep.equal([]);
    });

    it('stops: later changes are not read', async () => {
      await startSource();
      await source?.stop();
      source = undefined;
      await write(path.join(dir, 'after-stop.rego'), 'package x\n');
      await sleep(300);
      expect(state.size).to.equal(0);
    });

    it('runs again after a stop (a restart): files added meanwhile are loaded, files deleted meanwhile removed', async () => {
      await write(path.join(dir, 'kept.rego'), 'package kept\n');
      await write(path.join(dir, 'gone.rego'), 'package gone\n');
      await write(path.join(dir, 'gone', 'data.json'), '{"x": 1}');
      const folder = await startSource();
      expect(state.size).to.equal(3);
      await source?.stop();
      rmSync(path.join(dir, 'gone.rego'));
      rmSync(path.join(dir, 'gone'), { recursive: true });
      await write(path.join(dir, 'new.rego'), 'package new\n');
      source = runPart(folder);
      await waitFor('the rescan', () => (state.size === 2 && folder.ready() ? true : undefined));
      expect(state.keys()).to.deep.equal([keyOf('policy', 'kept.rego'), keyOf('policy', 'new.rego')]);
    });
  });

  describe('data files', () => {
    it('gives invalid JSON, invalid YAML, non-object data and a root data file a problem naming the file', async () => {
      await write(path.join(dir, 'broken', 'data.json'), '{"a": ');
      await write(path.join(dir, 'list', 'data.json'), '[1, 2]');
      await write(path.join(dir, 'scalar', 'data.yaml'), '42\n');
      await write(path.join(dir, 'badyaml', 'data.yaml'), 'a: [1\n');
      await write(path.join(dir, 'data.json'), '{"everything": true}');
      await write(path.join(dir, 'fine', 'data.json'), '{"ok": true}');
      await startSource();

      const problem = (rel: string): { code: string; message: string; key: string } | undefined => {
        const s = dataOf(state, rel);
        expect(s?.documents, rel).to.deep.equal([]);
        expect(s?.dataRoot, rel).to.equal(undefined);
        return s?.problems[0];
      };
      expect(problem('broken/data.json')).to.include({ key: 'broken/data.json', code: 'invalid_json' });
      expect(problem('broken/data.json')?.message).to.match(/^file "broken\/data.json" is not valid JSON: /);
      expect(problem('list/data.json')).to.include({ code: 'invalid_data' });
      expect(problem('list/data.json')?.message).to.contain('"list/data.json"').and.contain('not an array');
      expect(problem('scalar/data.yaml')?.message).to.contain('not a number');
      expect(problem('badyaml/data.yaml')).to.include({ code: 'invalid_yaml' });
      expect(problem('badyaml/data.yaml')?.message).to.contain('"badyaml/data.yaml" is not valid YAML');
      expect(problem('data.json')).to.include({ code: 'data_at_root' });
      expect(problem('data.json')?.message).to.contain('"data.json"').and.contain('root');
      expect(dataOf(state, 'fine/data.json')?.documents).to.deep.equal([
        { path: ['fine'], value: { ok: true } },
      ]);

      // Files have no status annotation: the log line is the user's feedback.
      const logged = warnings().map((l) => l.file);
      for (const rel of [
        'broken/data.json',
        'list/data.json',
        'scalar/data.yaml',
        'badyaml/data.yaml',
        'data.json',
      ]) {
        expect(logged, rel).to.include(rel);
      }
    });

    it('loads a fixed data file again', async () => {
      const file = path.join(dir, 'fix', 'data.json');
      await write(file, 'not json');
      await startSource();
      expect(dataOf(state, 'fix/data.json')?.problems).to.have.length(1);
      await write(file, '{"fixed": true}');
      await waitFor('the fixed document', () =>
        dataOf(state, 'fix/data.json')?.documents.length === 1 ? true : undefined,
      );
      expect(dataOf(state, 'fix/data.json')?.problems).to.deep.equal([]);
      expect(dataOf(state, 'fix/data.json')?.dataRoot).to.deep.equal(['fix']);
    });

    it('refuses a data file whose document overlaps another, until the other is gone', async () => {
      await write(path.join(dir, 'authz', 'data.json'), '{"a": 1}');
      await write(path.join(dir, 'authz', 'roles', 'data.json'), '{"b": 2}');
      await write(path.join(dir, 'authz', 'data.yaml'), 'c: 3\n');
      await startSource();

      expect(dataOf(state, 'authz/data.json')?.documents).to.have.length(1);
      const inner = dataOf(state, 'authz/roles/data.json');
      expect(inner?.documents).to.deep.equal([]);
      expect(inner?.problems[0]).to.include({ code: 'data_overlap' });
      expect(inner?.problems[0]?.message).to.contain('inside').and.contain('"authz/data.json"');
      expect(dataOf(state, 'authz/data.yaml')?.problems[0]?.message).to.contain('the same as');

      unlinkSync(path.join(dir, 'authz', 'data.json'));
      await waitFor('the YAML file to take over', () =>
        dataOf(state, 'authz/data.yaml')?.documents.length === 1 ? true : undefined,
      );
      expect(dataOf(state, 'authz/roles/data.json')?.problems[0]?.message).to.contain('"authz/data.yaml"');
      unlinkSync(path.join(dir, 'authz', 'data.yaml'));
      await waitFor('the inner file to be loaded', () =>
        dataOf(state, 'authz/roles/data.json')?.documents.length === 1 ? true : undefined,
      );
      expect(dataOf(state, 'authz/roles/data.json')?.dataRoot).to.deep.equal(['authz', 'roles']);
    });
  });

  describe('hostile names and symlinks', () => {
    it('refuses names the bundle checks refuse, with the reason in the log', async () => {
      await write(path.join(dir, 'bad\u0001name.rego'), 'package bad\n');
      await write(path.join(dir, 'bad\u0002dir', 'data.json'), '{}');
      await write(path.join(dir, 'back\\slash.rego'), 'package bad\n');
      await write(path.join(dir, 'good.rego'), 'package good\n');
      await startSource();
      expect(state.keys()).to.deep.equal([keyOf('policy', 'good.rego')]);
      const refused = warnings().filter((l) => l.msg === 'file name refused: not loaded');
      expect(refused.map((l) => l.file).sort()).to.deep.equal(
        ['back\\slash.rego', 'bad\u0001name.rego', 'bad\u0002dir/data.json'].sort(),
      );
      expect(refused.find((l) => l.file === 'bad\u0001name.rego')?.reason).to.contain('control character');
    });

    it('follows symlinks inside the folder and refuses ones that leave it', async () => {
      const outside = path.join(base, 'outside');
      await write(path.join(outside, 'secret.rego'), 'package secret\n');
      await write(path.join(outside, 'nested', 'data.json'), '{"secret": true}');
      await write(path.join(dir, 'real', 'inner.rego'), 'package inner\n');
      await write(path.join(dir, 'real', 'cfg', 'data.json'), '{"inner": true}');
      symlinkSync(path.join(outside, 'secret.rego'), path.join(dir, 'file-out.rego'));
      symlinkSync(outside, path.join(dir, 'dir-out'));
      symlinkSync(path.join('real', 'inner.rego'), path.join(dir, 'file-in.rego'));
      symlinkSync('real', path.join(dir, 'dir-in'));
      await startSource();

      expect(state.keys()).to.deep.equal(
        [
          keyOf('data', 'dir-in/cfg/data.json'),
          keyOf('data', 'real/cfg/data.json'),
          keyOf('policy', 'dir-in/inner.rego'),
          keyOf('policy', 'file-in.rego'),
          keyOf('policy', 'real/inner.rego'),
        ].sort(),
      );
      expect(policyText(state, 'file-in.rego')).to.equal('package inner\n');
      const refused = warnings().filter((l) => l.msg.startsWith('symlink leaves the policies folder'));
      expect(refused.map((l) => l.file).sort()).to.deep.equal(['dir-out', 'file-out.rego']);
      expect(refused.find((l) => l.file === 'dir-out')?.target).to.equal(outside);

      // A link added later that leaves the folder is refused too.
      symlinkSync(path.join(outside, 'secret.rego'), path.join(dir, 'late-out.rego'));
      await write(path.join(dir, 'marker.rego'), 'package marker\n');
      await waitFor('the marker', () => (policyText(state, 'marker.rego') !== undefined ? true : undefined));
      await sleep(300);
      expect(policyText(state, 'late-out.rego')).to.equal(undefined);
      expect(warnings().some((l) => l.file === 'late-out.rego')).to.equal(true);
    });

    it('refuses symlinks that loop back to a folder above them, and still syncs', async () => {
      await write(path.join(dir, 'a', 'p.rego'), 'package p\n');
      mkdirSync(path.join(dir, 'b'));
      // To the folder itself, to a parent, and two folders pointing at each other: all at once.
      symlinkSync('.', path.join(dir, 'self'));
      symlinkSync('..', path.join(dir, 'a', 'up'));
      symlinkSync(path.join('..', 'b'), path.join(dir, 'a', 'to-b'));
      symlinkSync(path.join('..', 'a'), path.join(dir, 'b', 'to-a'));
      await startSource();

      // b/to-a is an ordinary link into the folder; only the step that comes back round is refused.
      expect(state.keys()).to.deep.equal([keyOf('policy', 'a/p.rego'), keyOf('policy', 'b/to-a/p.rego')]);
      const loops = warnings().filter((l) => l.msg.startsWith('symlink loops back'));
      expect(loops.map((l) => l.file).sort()).to.deep.equal([
        'a/to-b/to-a',
        'a/up',
        'b/to-a/to-b',
        // a/up seen again through b/to-a: a path of its own, refused on its own.
        'b/to-a/up',
        'self',
      ]);
    });

    it('does not take a sibling folder with the same prefix (dir2 beside dir) as inside', async () => {
      const sibling = path.join(base, 'dir2');
      await write(path.join(sibling, 'p.rego'), 'package sibling\n');
      await write(path.join(sibling, 'sub', 'data.json'), '{}');
      symlinkSync(path.join(sibling, 'p.rego'), path.join(dir, 'p.rego'));
      symlinkSync(path.join(sibling, 'sub'), path.join(dir, 'sub'));
      await startSource();
      expect(state.size).to.equal(0);
      expect(
        warnings()
          .map((l) => l.file)
          .sort(),
      ).to.deep.equal(['p.rego', 'sub']);
    });
  });

  describe('helpers', () => {
    it('classifies file names', () => {
      expect(classifyFile('a/b.rego')).to.equal('policy');
      expect(classifyFile('a/b_test.rego')).to.equal(undefined);
      expect(classifyFile('a/data.json')).to.equal('data');
      expect(classifyFile('data.yml')).to.equal('data');
      expect(classifyFile('a/other.json')).to.equal(undefined);
      expect(classifyFile('.a/b.rego')).to.equal(undefined);
      expect(classifyFile('a/.b.rego')).to.equal(undefined);
      expect(classifyFile('a/b.rego~')).to.equal(undefined);
    });

    it('refuses YAML values JSON cannot hold, and strips a byte order mark', () => {
      const inf = parseDataFile('a/data.yaml', 'x: .inf\n');
      expect('problem' in inf && inf.problem.code).to.equal('invalid_yaml');
      const multi = parseDataFile('a/data.yaml', 'a: 1\n---\nb: 2\n');
      expect('problem' in multi && multi.problem.code).to.equal('invalid_yaml');
      const bom = parseDataFile('a/data.json', '\uFEFF{"a": 1}');
      expect('value' in bom && bom.value).to.deep.equal({ a: 1 });
    });

    it('refuses data nested deeper than 1,000 levels (JSON and YAML) with a problem, not a crash', () => {
      const json = parseDataFile('a/data.json', `${'{"a":'.repeat(6000)}1${'}'.repeat(6000)}`);
      expect('problem' in json && json.problem).to.deep.equal({
        key: 'a/data.json',
        code: 'data_too_deep',
        message: 'file "a/data.json" is nested deeper than 1000 levels: not loaded',
      });
      const yaml = parseDataFile('a/data.yaml', `${'{"a": '.repeat(1500)}1${'}'.repeat(1500)}`);
      expect('problem' in yaml && yaml.problem.code).to.equal('data_too_deep');
    });
  });
});
