// --bundles-dir: each published bundle as `<dir>/<name>.tar.gz`, for static hosting. Written to
// `<file>.partial-<pid>` first and renamed, so a reader (or a crash) never sees half a bundle.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export async function writeBundleFile(dir: string, name: string, bytes: Uint8Array): Promise<void> {
  const file = path.join(dir, `${name}.tar.gz`);
  await mkdir(path.dirname(file), { recursive: true });
  const partial = `${file}.partial-${process.pid}`;
  await writeFile(partial, bytes);
  await rename(partial, file);
}
