// The page's live updates: a server-sent event stream per open page (GET /ui/events), each event the
// server-rendered sections for that page's filter. While at least one page is open, a snapshot is
// taken every LOOK_MS and rendered once per distinct filter; a page gets an event only when its HTML
// changed. Looking at the snapshot, rather than wiring a notification into every part, keeps the page
// a reader of the parts' snapshot functions and bounds its cost (one snapshot per LOOK_MS however
// often things change, none while no page is open), at the price of up to LOOK_MS of delay.
import type { ServerResponse } from 'node:http';
import { stamp } from './render-page.js';
import { renderSections, type PolicyFilter } from './render-sections.js';
import type { UiSnapshot } from './snapshot.js';

/** How often the snapshot is looked at while a page is open: a change shows within this (+ render). */
export const LOOK_MS = 250;
/** A comment line this often keeps idle proxies from closing the stream. */
const HEARTBEAT_MS = 15_000;

interface Client {
  res: ServerResponse;
  filter: PolicyFilter;
  /** The sections last sent. */
  sent: string | undefined;
}

const filterKey = (f: PolicyFilter): string => `${f.errorsOnly ? 1 : 0}:${f.namespace}`;

export class LiveUpdates {
  private readonly clients = new Set<Client>();
  private timer: NodeJS.Timeout | undefined;
  private lastHeartbeat = 0;

  constructor(private readonly snapshot: () => UiSnapshot) {}

  /** Starts the stream on `res` (headers included) and sends the current sections at once. */
  open(res: ServerResponse, filter: PolicyFilter): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    // A reconnecting browser waits this long (ms) between tries.
    res.write('retry: 1000\n\n');
    const client: Client = { res, filter, sent: undefined };
    this.clients.add(client);
    res.once('close', () => {
      this.clients.delete(client);
      if (this.clients.size === 0) this.stop();
    });
    this.push(this.snapshot(), [client]);
    this.timer ??= setInterval(() => this.look(), LOOK_MS);
    this.timer.unref();
  }

  /** Open streams, for tests and /metrics-like curiosity. */
  get size(): number {
    return this.clients.size;
  }

  /** Ends every stream (the server is closing). */
  closeAll(): void {
    for (const client of this.clients) client.res.end();
    this.clients.clear();
    this.stop();
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private look(): void {
    const now = Date.now();
    if (now - this.lastHeartbeat >= HEARTBEAT_MS) {
      this.lastHeartbeat = now;
      for (const client of this.clients) client.res.write(': heartbeat\n\n');
    }
    this.push(this.snapshot(), [...this.clients]);
  }

  private push(snapshot: UiSnapshot, clients: readonly Client[]): void {
    const rendered = new Map<string, string>();
    for (const client of clients) {
      const key = filterKey(client.filter);
      let html = rendered.get(key);
      if (html === undefined) {
        html = renderSections(snapshot, client.filter);
        rendered.set(key, html);
      }
      if (html === client.sent) continue;
      client.sent = html;
      // JSON has no raw newline, so one `data:` line carries the whole event.
      client.res.write(`data: ${JSON.stringify({ main: html, stamp: stamp(snapshot) })}\n\n`);
    }
  }
}
