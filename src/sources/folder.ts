// The local policies folder source: watches a folder (chokidar) and writes its `*.rego` files as policy
// modules and its `data.json` / `data.yaml` files as data documents into the desired state, one origin
// per file. It is level-triggered: a file event only says "look at this file again"; after a short
// per-file quiet time the file is read as it is now, so an editor's atomic save (temp file + rename, or
// unlink + add) ends in one update with the final content, and a file that is gone is simply removed.
//
// Every name in the folder is hostile input (DESIGN.md habit 9): paths are checked with the bundle
// name checks before they become module ids or data paths, and a symlink is followed only when its
// real path stays inside the folder (checked with `path.relative`, never with a string prefix).
import { realpathSync } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { parse as parseYaml } from 'yaml';
import type { DataDocument, DesiredState, OriginProblem, OriginState } from '../model/desired-state.js';
import { originKey, type FileOrigin } from '../model/origin.js';
import type { Part } from '../lifecycle/part.js';
import { sleep } from '../util/backoff.js';
import { messageOf } from '../util/errors.js';
import { MAX_JSON_DEPTH, nestedDeeperThan } from '../util/json-depth.js';
import type { Logger } from '../util/logger.js';
import { comparePaths, isInside, isPathPrefix, relativeInside } from '../util/paths.js';
import { bundleEntryProblem, dataPathProblem } from '../util/safe-names.js';
import { LastValues } from '../util/unchanged.js';

export interface FolderSourceOptions {
  dir: string;
  state: DesiredState;
  logger: Logger;
  /**
   * Quiet time per file before it is read again. Default 30 ms: enough for an editor's truncate-and-write
   * (or write-and-rename) to finish, and a read of a half-written file is followed by the next event's read
   * anyway. It is most of the time from a save to the new bundle (100 ms was a third of it).
   */
  debounceMs?: number;
}

/** The base names OPA's bundle convention reads as the data document of their folder. */
const DATA_FILES = new Set(['data.json', 'data.yaml', 'data.yml']);
// Files read at once during the initial scan: a large folder must not open thousands of files together.
const SCAN_CONCURRENCY = 16;
// How often a missing folder is looked for again.
const MISSING_RETRY_MS = 2000;

type FileRole = FileOrigin['role'];

/**
 * Whether a path (relative, '/'-separated) is never looked at: hidden files and folders (editors' lock
 * files such as `.#x.rego` among them) and editor temporary files, whatever their extension.
 */
export function isIgnoredName(rel: string): boolean {
  const segments = rel.split('/');
  if (segments.some((s) => s.startsWith('.'))) return true;
  const base = segments[segments.length - 1] ?? '';
  return (
    base.endsWith('~') ||
    base.endsWith('.swp') ||
    base.endsWith('.swx') ||
    base.endsWith('.tmp') ||
    (base.startsWith('#') && base.endsWith('#')) ||
    // vim writes (and removes) a file named 4913 to test whether it may write in the folder.
    base === '4913'
  );
}

/**
 * What a file of the folder is (relative, '/'-separated path): a policy module, a data document, or
 * nothing (undefined). `*_test.rego` files are Rego unit tests for `opa test`, not policies.
 */
export function classifyFile(rel: string): FileRole | undefined {
  if (rel === '' || isIgnoredName(rel)) return undefined;
  const base = rel.slice(rel.lastIndexOf('/') + 1);
  if (DATA_FILES.has(base)) return 'data';
  if (base.endsWith('.rego') && !base.endsWith('_test.rego')) return 'policy';
  return undefined;
}

/** A data file's document path: its folder's segments (`authz/roles/data.json` → `['authz', 'roles']`). */
function documentPath(rel: string): string[] {
  return rel.split('/').slice(0, -1);
}

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

type Parsed = { value: Record<string, unknown> } | { problem: OriginProblem };

/** Parses a data file's text (JSON or YAML by its name); the value must be an object. */
export function parseDataFile(rel: string, text: string): Parsed {
  const quoted = JSON.stringify(rel);
  const yaml = !rel.endsWith('.json');
  // Editors on Windows may start a file with a byte order mark; neither parser wants it.
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  let value: unknown;
  let tooDeep: boolean;
  try {
    if (yaml) {
      // YAML 1.2 core schema: no timestamps or other types JSON cannot hold; duplicate keys are errors.
      value = parseYaml(body, { schema: 'core', uniqueKeys: true });
      // Looked at before JSON.stringify below, which would overflow the stack on it.
      tooDeep = nestedDeeperThan(value, MAX_JSON_DEPTH);
      // .inf and .nan are valid YAML but not JSON: refuse them rather than turn them into null.
      if (!tooDeep) {
        JSON.stringify(value, (_key, v: unknown) => {
          if (typeof v === 'number' && !Number.isFinite(v)) {
            throw new Error(`the number ${String(v)} cannot be represented in JSON`);
          }
          return v;
        });
      }
    } else {
      value = JSON.parse(body);
      tooDeep = nestedDeeperThan(value, MAX_JSON_DEPTH);
    }
  } catch (err) {
    const format = yaml ? 'YAML' : 'JSON';
    // The YAML parser recurses: deep nesting overflows its stack before our own check can run.
    if (err instanceof RangeError || /Maximum call stack size exceeded/.test(messageOf(err))) {
      return {
        problem: {
          key: rel,
          code: 'data_too_deep',
          message: `file ${quoted} is nested too deeply to be read as ${format} (at most ${MAX_JSON_DEPTH} levels are loaded)`,
        },
      };
    }
    return {
      problem: {
        key: rel,
        code: yaml ? 'invalid_yaml' : 'invalid_json',
        message: `file ${quoted} is not valid ${format}: ${messageOf(err)}`,
      },
    };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    return {
      problem: {
        key: rel,
        code: 'invalid_data',
        message: `file ${quoted} must hold an object (the document of its folder), not ${kind}`,
      },
    };
  }
  // Refused here, before any sink: JSON.stringify and every recursive walk would overflow the stack.
  if (tooDeep) {
    return {
      problem: {
        key: rel,
        code: 'data_too_deep',
        message: `file ${quoted} is nested deeper than ${MAX_JSON_DEPTH} levels: not loaded`,
      },
    };
  }
  return { value: value as Record<string, unknown> };
}

/** What was last read from a data file, kept so that the data files can be judged together. */
interface DataFile {
  text: string;
  parsed: Parsed;
}

/** Per-file scheduling: the quiet-time timer, the read in progress, and whether another was asked for. */
interface FileTask {
  timer: NodeJS.Timeout | undefined;
  running: Promise<void> | undefined;
  again: boolean;
}

export class FolderSource implements Part {
  readonly name = 'folder';
  /** A new run() walks the folder again; files gone meanwhile are removed after that walk. */
  readonly onFailure = 'restart';
  private readonly listed: () => void;
  private isScanned = false;
  private stopped = false;
  private abort = new AbortController();
  /** Rejects run() when the watch or the scan fails: such a failure is the supervisor's to see. */
  private fail: (err: unknown) => void = () => undefined;
  private readonly log: Logger;
  private readonly debounceMs: number;
  /** The folder as given (absolute): events and origins are named relative to it. */
  private readonly root: string;
  /** The folder's real path: what a file's real path must stay inside. */
  private rootReal: string;
  private watcher: FSWatcher | undefined;
  /** Until chokidar's initial walk is done, events only collect the files it found. */
  private walking = true;
  private readonly found = new Set<string>();
  /** Until the initial scan is read, data files are judged together once at its end. */
  private deferData = true;
  private readonly tasks = new Map<string, FileTask>();
  /** The files that have an origin in the state (loaded, or with a problem), with their role. */
  private readonly present = new Map<string, FileRole>();
  private readonly dataFiles = new Map<string, DataFile>();
  /** What was last written for each origin (its text, and its problems), to skip unchanged saves. */
  private readonly written = new LastValues<string, string>();
  /** Symlinks already reported as leaving the folder or looping, with their target: each is logged once. */
  private readonly refusedLinks = new Map<string, string>();

  constructor(private readonly options: FolderSourceOptions) {
    this.log = options.logger;
    this.debounceMs = options.debounceMs ?? 30;
    this.root = path.resolve(options.dir);
    this.rootReal = this.root;
    this.listed = options.state.registerSource(this.name);
  }

  /** True once the initial scan is in the state (at once for a folder that does not exist yet). */
  ready(): boolean {
    return this.isScanned;
  }

  /**
   * Scans the folder, then follows its changes until the signal aborts; then closes the watcher and
   * every timer (reads in progress finish without writing to the state).
   */
  async run(signal: AbortSignal): Promise<void> {
    this.stopped = false;
    this.isScanned = false;
    this.abort = new AbortController();
    this.walking = true;
    this.deferData = true;
    this.found.clear();
    try {
      // Until the signal aborts, or the watch or the scan fails; either way the listener goes with it.
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => resolve();
        signal.addEventListener('abort', onAbort, { once: true });
        this.fail = (err) => {
          signal.removeEventListener('abort', onAbort);
          reject(err instanceof Error ? err : new Error(messageOf(err)));
        };
        this.begin().catch(this.fail);
      });
    } finally {
      this.fail = () => undefined;
      this.stopped = true;
      this.abort.abort();
      for (const task of this.tasks.values()) clearTimeout(task.timer);
      await this.watcher?.close();
      this.watcher = undefined;
      await Promise.all(this.runningReads());
      this.tasks.clear();
    }
  }

  private runningReads(): Promise<void>[] {
    return [...this.tasks.values()].flatMap((t) => (t.running === undefined ? [] : [t.running]));
  }

  private async begin(): Promise<void> {
    // A missing folder is an empty one (the local default `policies` may not exist yet): synced at once,
    // and watched from the moment it appears.
    let warned = false;
    for (;;) {
      try {
        this.rootReal = await realpath(this.root);
        if ((await stat(this.rootReal)).isDirectory()) break;
        throw new Error('not a directory');
      } catch (err) {
        if (!warned) {
          this.log.warn(
            { dir: this.root, err: messageOf(err) },
            'policies folder cannot be read; nothing is loaded from it until it can',
          );
          warned = true;
          this.markSynced();
        }
      }
      await sleep(MISSING_RETRY_MS, this.abort.signal).catch(() => undefined);
      if (this.stopped) return;
    }
    if (this.stopped) return;
    const watcher = watch(this.root, {
      followSymlinks: true,
      ignoreInitial: false,
      // Hidden and temporary names, and symlinks that leave the folder or loop, are never even walked into.
      ignored: (p: string) => this.ignoredByWatcher(p),
    });
    this.watcher = watcher;
    const onFile = (p: string): void => this.fileEvent(p);
    watcher.on('add', onFile);
    watcher.on('change', onFile);
    watcher.on('unlink', onFile);
    watcher.on('unlinkDir', (p: string) => this.folderRemoved(p));
    watcher.on('error', (err: unknown) => {
      this.log.warn({ dir: this.root, err: messageOf(err) }, 'policies folder watch error');
    });
    watcher.once('ready', () => {
      this.initialScanDone().catch((err: unknown) => this.fail(err));
    });
    this.log.info({ dir: this.root }, 'watching the policies folder');
  }

  private markSynced(): void {
    if (this.isScanned) return;
    this.isScanned = true;
    this.listed();
  }

  /**
   * After chokidar's initial walk: reads every file found (a bounded number at a time, without waiting
   * for the quiet time), then judges the data files together once, so that the scan writes no passing
   * overlap between data files read in some order.
   */
  private async initialScanDone(): Promise<void> {
    this.walking = false;
    const found = [...this.found].sort();
    this.found.clear();
    // After a restart: what was loaded from a file that the new walk did not find is gone.
    const walked = new Set(found);
    for (const [rel, role] of [...this.present]) if (!walked.has(rel)) this.forget(rel, role);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < found.length && !this.stopped) {
        const rel = found[next] as string;
        next += 1;
        this.read(rel);
        await this.tasks.get(rel)?.running;
      }
    };
    await Promise.all(Array.from({ length: SCAN_CONCURRENCY }, () => worker()));
    // Files changed during the scan are read by their own timers; the scan is done when they are too.
    while (!this.stopped) {
      const running = this.runningReads();
      if (running.length === 0) break;
      await Promise.all(running);
    }
    if (this.stopped) return;
    this.deferData = false;
    this.writeData();
    this.log.info({ dir: this.root, files: this.present.size }, 'policies folder loaded');
    this.markSynced();
  }

  /** The path relative to the folder, '/'-separated; undefined for the folder itself or outside it. */
  private relativeOf(p: string): string | undefined {
    const rel = relativeInside(this.root, p);
    return rel === '' ? undefined : rel;
  }

  /**
   * chokidar's filter, called before it stats or walks a path: hidden and temporary names, any path
   * whose real path leaves the folder (a symlink to a file or a folder outside), and symlinks that loop
   * back to a folder above them, are left out. Synchronous because chokidar's filter is.
   */
  private ignoredByWatcher(p: string): boolean {
    const rel = this.relativeOf(p);
    // The folder itself, and anything chokidar asks about outside it, are chokidar's own business.
    if (rel === undefined) return false;
    if (isIgnoredName(rel)) return true;
    let real: string;
    try {
      real = realpathSync.native(p);
    } catch {
      // Gone, or a dangling link: nothing to walk; a file event, if any, is judged when it is read.
      return false;
    }
    if (!isInside(this.rootReal, real)) {
      this.refuseLink(rel, real, 'symlink leaves the policies folder: refused, nothing below it is loaded');
      return true;
    }
    if (this.loopsBack(rel, real)) {
      // Followed, such a link would repeat the same files under ever longer paths (up to the kernel's
      // limit of 40 links each, multiplied by every other loop).
      this.refuseLink(rel, real, 'symlink loops back to a folder above it: refused, not followed');
      return true;
    }
    this.refusedLinks.delete(rel);
    return false;
  }

  /** Whether `real` is the real path of the folder, or of a folder on the way down to `rel`. */
  private loopsBack(rel: string, real: string): boolean {
    if (real === this.rootReal) return true;
    let ancestor = this.root;
    for (const segment of rel.split('/').slice(0, -1)) {
      ancestor = path.join(ancestor, segment);
      try {
        if (realpathSync.native(ancestor) === real) return true;
      } catch {
        return false;
      }
    }
    return false;
  }

  /** Logs a refused link once per target (chokidar asks about a path again on every walk of its folder). */
  private refuseLink(rel: string, real: string, message: string): void {
    if (this.refusedLinks.get(rel) === real) return;
    this.refusedLinks.set(rel, real);
    this.log.warn({ file: rel, target: real, dir: this.root }, message);
  }

  private fileEvent(p: string): void {
    const rel = this.relativeOf(p);
    if (rel === undefined || classifyFile(rel) === undefined) return;
    this.schedule(rel);
  }

  /** A removed folder: every file known below it is looked at again (chokidar reports most of them too). */
  private folderRemoved(p: string): void {
    const rel = this.relativeOf(p);
    if (rel === undefined) return;
    for (const known of this.present.keys()) if (known.startsWith(`${rel}/`)) this.schedule(known);
  }

  private taskOf(rel: string): FileTask {
    let task = this.tasks.get(rel);
    if (task === undefined) {
      task = { timer: undefined, running: undefined, again: false };
      this.tasks.set(rel, task);
    }
    return task;
  }

  /** Reads the file again once it has been quiet for the debounce time (after the initial walk). */
  private schedule(rel: string): void {
    if (this.stopped) return;
    if (this.walking) {
      this.found.add(rel);
      return;
    }
    const task = this.taskOf(rel);
    clearTimeout(task.timer);
    task.timer = setTimeout(() => {
      task.timer = undefined;
      this.read(rel);
    }, this.debounceMs);
  }

  /** Reads the file now; one read per file at a time, and one more if it changed meanwhile. */
  private read(rel: string): void {
    if (this.stopped) return;
    const task = this.taskOf(rel);
    if (task.running !== undefined) {
      task.again = true;
      return;
    }
    task.running = this.reconcile(rel)
      .catch((err: unknown) => {
        this.log.error({ file: rel, err: messageOf(err) }, 'could not load a file of the policies folder');
      })
      .finally(() => {
        task.running = undefined;
        if (task.again) {
          task.again = false;
          this.read(rel);
        } else if (task.timer === undefined && this.tasks.get(rel) === task) {
          this.tasks.delete(rel);
        }
      });
  }

  /** Makes the state match what the file is now: loaded, refused, or gone. */
  private async reconcile(rel: string): Promise<void> {
    const role = classifyFile(rel);
    if (role === undefined) return;
    const nameProblem =
      role === 'policy' ? bundleEntryProblem(`/${rel}`) : dataPathProblem(documentPath(rel));
    if (nameProblem !== undefined) {
      this.log.warn({ file: rel, reason: nameProblem }, 'file name refused: not loaded');
      this.forget(rel, role);
      return;
    }
    const text = await this.readContained(rel);
    if (this.stopped) return;
    if (text === undefined) {
      this.forget(rel, role);
      return;
    }
    if (text === null) return;
    if (role === 'policy') this.writePolicy(rel, text);
    else {
      const previous = this.dataFiles.get(rel);
      if (previous?.text !== text) this.dataFiles.set(rel, { text, parsed: parseDataFile(rel, text) });
      this.present.set(rel, 'data');
      if (!this.deferData) this.writeData();
    }
  }

  /**
   * The file's text; undefined when it is gone, is not a regular file, or leaves the folder (all three
   * mean: not loaded); null when it could not be read for another reason (what was loaded is kept).
   */
  private async readContained(rel: string): Promise<string | undefined | null> {
    const abs = path.join(this.root, ...rel.split('/'));
    try {
      const real = await realpath(abs);
      if (!isInside(this.rootReal, real)) {
        this.log.warn(
          { file: rel, target: real, dir: this.root },
          'symlink leaves the policies folder: refused, not loaded',
        );
        return undefined;
      }
      // The real path that was checked is the one read, so a link swapped in meanwhile is not followed.
      return await readFile(real, 'utf8');
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        // Deleted (or renamed away) between the event and the read: the same as a deletion.
        this.log.debug({ file: rel }, 'file gone before it could be read');
        return undefined;
      }
      if (code === 'EISDIR') return undefined;
      this.log.warn(
        { file: rel, err: messageOf(err) },
        'file cannot be read: what was loaded from it is kept',
      );
      return null;
    }
  }

  private origin(rel: string, role: FileRole): FileOrigin {
    return { kind: 'file', role, path: rel };
  }

  /** Writes a state unless the same thing was written last; logs its problems (files have no status). */
  private write(rel: string, state: OriginState, signature: string): void {
    const key = originKey(state.origin);
    // Written again, even if unchanged, when the origin is no longer in the state.
    if (!this.written.changed(key, signature) && this.options.state.get(key) !== undefined) return;
    for (const problem of state.problems) {
      this.log.warn(
        { file: problem.key, code: problem.code, reason: problem.message },
        'file of the policies folder not loaded',
      );
    }
    this.log.debug({ file: rel, role: state.origin.role }, 'file changed');
    this.options.state.set(state);
  }

  private writePolicy(rel: string, text: string): void {
    this.present.set(rel, 'policy');
    this.write(
      rel,
      { origin: this.origin(rel, 'policy'), modules: [{ id: rel, text }], documents: [], problems: [] },
      text,
    );
  }

  /**
   * Writes every data file's state, judged together: two data files whose documents overlap (the same
   * folder, or one inside the other's folder) cannot both be loaded, since each origin owns its
   * subtree (a PUT of the outer document would replace the inner one, and removing either would remove
   * both). The file that comes first (the outer one; `data.json` before `data.yaml`) wins, the other
   * gets a problem naming it. Only files that hold a valid document claim their path.
   */
  private writeData(): void {
    const files = [...this.dataFiles.entries()]
      .map(([rel, file]) => ({ rel, file, docPath: documentPath(rel) }))
      .sort((a, b) => comparePaths(a.docPath, b.docPath) || (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
    const claimed: { rel: string; docPath: string[] }[] = [];
    for (const { rel, file, docPath } of files) {
      const problems: OriginProblem[] = [];
      const documents: DataDocument[] = [];
      if ('problem' in file.parsed) {
        problems.push(file.parsed.problem);
      } else if (docPath.length === 0) {
        problems.push({
          key: rel,
          code: 'data_at_root',
          message:
            `file ${JSON.stringify(rel)} is at the root of the policies folder: opa-sync never writes the root ` +
            'of the data tree; move it into a folder named after the data path it is for (e.g. myapp/data.json)',
        });
      } else {
        const owner = claimed.find((c) => isPathPrefix(c.docPath, docPath));
        if (owner !== undefined) {
          problems.push({
            key: rel,
            code: 'data_overlap',
            message:
              `file ${JSON.stringify(rel)} is refused: its document ${JSON.stringify(docPath)} ` +
              `${owner.docPath.length === docPath.length ? 'is the same as' : 'is inside'} that of ` +
              `${JSON.stringify(owner.rel)}; merge the two files`,
          });
        } else {
          claimed.push({ rel, docPath });
          documents.push({ path: docPath, value: file.parsed.value });
        }
      }
      // dataRoot only for a file that holds its document: a refused file owns no subtree, and removing
      // one must not remove what another file put there.
      const state: OriginState = {
        origin: this.origin(rel, 'data'),
        modules: [],
        documents,
        problems,
        ...(documents.length > 0 ? { dataRoot: docPath } : {}),
      };
      this.write(rel, state, JSON.stringify([file.text, problems]));
    }
  }

  /** The file no longer contributes: its origin is removed, and the other data files judged again. */
  private forget(rel: string, role: FileRole): void {
    if (!this.present.has(rel)) return;
    this.present.delete(rel);
    const origin = this.origin(rel, role);
    this.written.forget(originKey(origin));
    this.options.state.delete(origin);
    this.log.debug({ file: rel, role }, 'file removed');
    if (role === 'data') {
      this.dataFiles.delete(rel);
      if (!this.deferData) this.writeData();
    }
  }
}
