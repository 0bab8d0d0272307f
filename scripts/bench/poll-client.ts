// A long-poll client for the serving benchmarks: opens many keep-alive connections to 127.0.0.1 at
// once, each sending one prebuilt GET with If-None-Match and `Prefer: …;wait=60`, and notes when each
// answer has fully arrived. Raw sockets, so that it costs little of the cores it shares with the server.
import net from 'node:net';
import { BUNDLE_NAME } from './serving.js';

export interface Poll {
  socket: net.Socket;
  buffered: Buffer | undefined;
  bodyLeft: number;
  status: number;
  answeredAt: number;
}

/** Opens `count` long polls at once; resolves when every one has connected and sent its request. */
export class PollClient {
  readonly polls: Poll[] = [];
  answered200 = 0;
  answeredOther = 0;
  errors = 0;
  private onAnswered: (() => void) | undefined;

  constructor(
    private readonly port: number,
    private readonly etag: string,
  ) {}

  open(count: number): Promise<void> {
    const request = Buffer.from(
      `GET /bundles/${BUNDLE_NAME} HTTP/1.1\r\nHost: 127.0.0.1:${this.port}\r\nIf-None-Match: ${this.etag}\r\n` +
        'Prefer: modes=snapshot,delta;wait=60\r\nUser-Agent: opa-sync-bench\r\n\r\n',
    );
    let written = 0;
    return new Promise((resolve) => {
      for (let i = 0; i < count; i += 1) {
        const socket = net.connect({ port: this.port, host: '127.0.0.1' });
        const poll: Poll = { socket, buffered: undefined, bodyLeft: -1, status: 0, answeredAt: 0 };
        this.polls.push(poll);
        socket.setNoDelay(true);
        socket.on('connect', () => {
          socket.write(request, () => {
            written += 1;
            if (written === count) resolve();
          });
        });
        socket.on('data', (chunk: Buffer) => this.data(poll, chunk));
        socket.on('error', () => {
          this.errors += 1;
          written += 1;
          if (written === count) resolve();
        });
      }
    });
  }

  /** Resolves once `n` polls were answered with a 200, or after `ms`. */
  answers(n: number, ms: number): Promise<void> {
    if (this.answered200 >= n) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.onAnswered = () => {
        if (this.answered200 >= n) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
  }

  close(): void {
    for (const p of this.polls) p.socket.destroy();
  }

  private data(poll: Poll, chunk: Buffer): void {
    if (poll.bodyLeft >= 0) {
      poll.bodyLeft -= chunk.length;
      if (poll.bodyLeft <= 0) this.done(poll);
      return;
    }
    const all = poll.buffered === undefined ? chunk : Buffer.concat([poll.buffered, chunk]);
    const end = all.indexOf('\r\n\r\n');
    if (end === -1) {
      poll.buffered = all;
      return;
    }
    poll.buffered = undefined;
    const head = all.subarray(0, end).toString('latin1');
    poll.status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1];
    poll.bodyLeft = (length === undefined ? 0 : Number(length)) - (all.length - end - 4);
    if (poll.bodyLeft <= 0) this.done(poll);
  }

  private done(poll: Poll): void {
    poll.answeredAt = Date.now();
    if (poll.status === 200) this.answered200 += 1;
    else this.answeredOther += 1;
    this.onAnswered?.();
  }
}
