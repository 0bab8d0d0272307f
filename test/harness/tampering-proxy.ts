// A small HTTP proxy for tests that sits between an OPA and a bundle server and, when told, changes a
// byte of one file inside each bundle it passes on (a man in the middle): gunzip, change the entry,
// tar and gzip again, same headers (ETag included) but the new length. Everything else (304s, errors,
// long polls, status reports) goes through as it is.
import http from 'node:http';
import { gunzipSync, gzipSync } from 'node:zlib';
import getPort from 'get-port';
import tar, { type Header } from 'tar-stream';

/** Which entry of a bundle to change (its tar name, e.g. `/.manifest`), and how. */
export interface Tampering {
  entry: (name: string) => boolean;
  change: (content: Buffer) => Buffer;
}

export interface TamperingProxy {
  /** http://127.0.0.1:<port>: give it to OPA as the service URL. */
  readonly url: string;
  /** From now on, change bundles this way (undefined: pass them on as they are). */
  tamper(how: Tampering | undefined): void;
  /** How many bundles were changed so far. */
  tampered(): number;
  /** How many bundles were passed on unchanged so far. */
  passed(): number;
  stop(): Promise<void>;
}

/** Changes one byte of `text` at the first `from` (a single character) into `to`. Fails if absent. */
export function changeByte(content: Buffer, at: (text: string) => number): Buffer {
  const text = content.toString('latin1');
  const i = at(text);
  if (i < 0 || i >= text.length)
    throw new Error(`tampering-proxy: no byte to change in ${text.slice(0, 80)}`);
  const bytes = Buffer.from(content);
  bytes[i] = bytes[i] === 0x41 ? 0x42 : 0x41; // 'A' <-> 'B', or anything -> 'A'
  return bytes;
}

async function rewrite(gz: Buffer, how: Tampering): Promise<{ body: Buffer; changed: boolean }> {
  const entries: { header: Header; data: Buffer }[] = [];
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        entries.push({ header, data: Buffer.concat(chunks) });
        next();
      });
      stream.resume();
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(gunzipSync(gz));
  await done;
  let changed = false;
  const pack = tar.pack();
  const out: Buffer[] = [];
  pack.on('data', (c: unknown) => out.push(c as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', resolve));
  for (const { header, data } of entries) {
    let content = data;
    if (!changed && how.entry(header.name)) {
      content = how.change(data);
      changed = true;
    }
    pack.entry({ ...header, size: content.length }, content);
  }
  pack.finalize();
  await ended;
  return { body: gzipSync(Buffer.concat(out)), changed };
}

/** Starts the proxy in front of `target` (http://host:port of the bundle server). */
export async function startTamperingProxy(target: string): Promise<TamperingProxy> {
  const upstream = new URL(target);
  let how: Tampering | undefined;
  let tampered = 0;
  let passed = 0;
  const server = http.createServer((req, res) => {
    const forward = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: upstream.host },
      },
      (answer) => {
        const isBundle =
          answer.statusCode === 200 &&
          req.method === 'GET' &&
          String(answer.headers['content-type']).startsWith('application/vnd.openpolicyagent.bundles');
        const current = how;
        if (!isBundle || current === undefined) {
          if (isBundle) passed += 1;
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        answer.on('data', (c: Buffer) => chunks.push(c));
        answer.on('end', () => {
          rewrite(Buffer.concat(chunks), current).then(
            ({ body, changed }) => {
              if (changed) tampered += 1;
              const headers = { ...answer.headers, 'content-length': String(body.length) };
              delete headers['transfer-encoding'];
              res.writeHead(200, headers);
              res.end(body);
            },
            (err: unknown) => {
              res.writeHead(502, { 'content-type': 'text/plain' });
              res.end(`tampering-proxy: ${String(err)}`);
            },
          );
        });
      },
    );
    forward.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`tampering-proxy: ${err.message}`);
    });
    req.pipe(forward);
  });
  const port = await getPort({ host: '127.0.0.1' });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    tamper(next) {
      how = next;
    },
    tampered: () => tampered,
    passed: () => passed,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
