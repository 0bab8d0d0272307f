// A TCP proxy on 127.0.0.1 for fault tests of the connections between opa-sync and a server (the API
// server): it forwards bytes both ways, and on demand
// - freeze()s the connections open now: they stop forwarding in both directions but stay open, as a
//   half-dead NAT or load balancer entry does (no FIN, no RST; the bytes queue up, unread); connections
//   made after the freeze are forwarded as usual;
// - thaw()s them again (what queued up meanwhile is delivered);
// - cut()s every connection (destroyed at once, both sides see a reset or close).
// TLS goes through untouched: the client verifies the server's certificate for 127.0.0.1.
import net from 'node:net';
import getPort from 'get-port';

export interface TcpProxy {
  /** 127.0.0.1:<port> */
  readonly address: string;
  readonly port: number;
  /** Connections open now (frozen ones included). */
  openConnections(): number;
  /** Stops forwarding on every connection open now; they stay open. Resolves with how many. */
  freeze(): number;
  /** Forwards again on the frozen connections. */
  thaw(): void;
  /** Destroys every connection open now. */
  cut(): void;
  /** Closes the listener and every connection. */
  stop(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  frozen: boolean;
}

/** Starts a proxy that forwards every connection to `target` (host:port). */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    const pair: Pair = { client, upstream, frozen: false };
    pairs.add(pair);
    // Both ways by hand (not pipe), so that a frozen pair neither reads nor writes.
    const forward = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => {
        if (!pair.frozen) from.resume();
      });
      from.on('end', () => to.end());
    };
    forward(client, upstream);
    forward(upstream, client);
    const close = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  const port = await getPort({ host: '127.0.0.1' });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    address: `127.0.0.1:${port}`,
    port,
    openConnections: () => pairs.size,
    freeze() {
      for (const pair of pairs) {
        pair.frozen = true;
        // Paused sockets read nothing more: the kernel buffers fill and then the peers' writes block,
        // as with a peer that vanished without a word.
        pair.client.pause();
        pair.upstream.pause();
      }
      return pairs.size;
    },
    thaw() {
      for (const pair of pairs) {
        if (!pair.frozen) continue;
        pair.frozen = false;
        pair.client.resume();
        pair.upstream.resume();
      }
    },
    cut() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
    },
    async stop() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
