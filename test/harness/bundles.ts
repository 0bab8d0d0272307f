// Bundles as tests see them: downloaded from a bundle server and unpacked (gzip + tar), so a test can
// assert on the exact files opa-sync serves; and OPAs configured to pull them.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { extraOpa, type OpaOptions, type OpaServer } from './index.js';
import { httpRequest, type HttpResponse } from './http.js';
import { runDir } from './run-dir.js';

/** The files of a `.tar.gz` bundle by name, without a leading `/` (OPA writes `/.manifest`, …). */
export async function bundleFiles(gz: Buffer): Promise<Map<string, string>> {
  const extract = tar.extract();
  const files = new Map<string, string>();
  const reading = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      const type = entry.header.type ?? 'file';
      if (type === 'file') {
        files.set(entry.header.name.replace(/^\/+/, ''), Buffer.concat(chunks).toString('utf8'));
      }
    }
  })();
  extract.end(gunzipSync(gz));
  await reading;
  return files;
}

export interface DownloadedBundle {
  response: HttpResponse;
  etag: string | undefined;
  files: Map<string, string>;
}

/** GET <serverUrl>/bundles/<name> (with a bearer token if given); fails unless the answer is 200. */
export async function downloadBundle(
  serverUrl: string,
  name: string,
  token?: string,
): Promise<DownloadedBundle> {
  const response = await httpRequest(`${serverUrl}/bundles/${name}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  if (response.status !== 200) {
    throw new Error(`GET /bundles/${name} answered ${response.status}: ${response.body}`);
  }
  const etag = typeof response.headers.etag === 'string' ? response.headers.etag : undefined;
  return { response, etag, files: await bundleFiles(response.bytes) };
}

let configs = 0;

/**
 * Another OPA (see extraOpa) started with `--config-file` holding `config` (written as JSON, which OPA
 * reads as the YAML it is) — e.g. services and bundles to pull from opa-sync.
 */
export async function opaWithConfig(config: unknown, options: OpaOptions = {}): Promise<OpaServer> {
  const file = path.join(runDir(), `opa-config-${++configs}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return extraOpa({ ...options, extraArgs: [`--config-file=${file}`, ...(options.extraArgs ?? [])] });
}
