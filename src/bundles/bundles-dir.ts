// --bundles-dir: each published bundle as `<dir>/<name>.tar.gz`, for static hosting. Written to
// `<file>.partial-<pid>` first and renamed, so a reader never sees half a bundle, and neither does anyone
// after opa-sync crashed (kill -9): the file is the previous bundle or the new one. (Not flushed to disk
// before the rename: on a loaded disk an fsync per bundle held up every rebuild's statuses, and a machine
// crash is the storage's to survive.) What a crash leaves is a partial file; the first write into a
// folder removes those of processes that no longer run, so they do not pile up over restarts.
import { readdir, rename, unlink, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

const PARTIAL = /\.tar\.gz\.partial-(\d+)$/;

/** Folders whose stale partial files this process has removed already. */
const cleaned = new Set<string>();

export async function writeBundleFile(dir: string, name: string, bytes: Uint8Array): Promise<void> {
  const file = path.join(dir, `${name}.tar.gz`);
  await mkdir(path.dirname(file), { recursive: true });
  await removeStalePartials(dir);
  const partial = `${file}.partial-${process.pid}`;
  await writeFile(partial, bytes);
  await rename(partial, file);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the partial files under `dir` (bundle names may hold `/`) left by processes that no longer
 * run; once per folder and process. One of a running process (another opa-sync writing into the same
 * folder) is left to it.
 */
export async function removeStalePartials(dir: string): Promise<string[]> {
  if (cleaned.has(dir)) return [];
  cleaned.add(dir);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return removed;
    throw err;
  }
  for (const name of names) {
    const pid = Number(PARTIAL.exec(name)?.[1] ?? NaN);
    if (Number.isNaN(pid) || pid === process.pid || isRunning(pid)) continue;
    try {
      await unlink(path.join(dir, name));
      removed.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return removed;
}
