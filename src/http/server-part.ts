// An HTTP server as a Part: listens when run() starts, closes when the signal aborts. A server that
// cannot listen (port in use, no permission) stops opa-sync with an error that names the address and
// the flag that chose it: nothing can be served without it.
import type { Part } from '../lifecycle/part.js';
import { untilAborted } from '../lifecycle/wake.js';
import { OpaSyncError, messageOf } from '../util/errors.js';

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

export interface ServerPartOptions {
  name: string;
  /** The flag that chose the address, named in a listen error (e.g. `--bundle-addr`). */
  flag: string;
  host: string;
  port: number;
  listen(): Promise<RunningServer>;
  /** Called once listening, with the port (the one chosen when 0 was asked for). */
  onListening?: (port: number) => void;
}

/** Why a listen failed, in words a person can act on. */
function listenProblem(err: unknown, host: string, port: number, flag: string): string {
  const code = (err as { code?: unknown }).code;
  const where = `${host}:${port}`;
  if (code === 'EADDRINUSE') {
    return `cannot listen on ${where}: the port is already in use (another opa-sync still running?); stop that process or choose another port with ${flag}=HOST:PORT`;
  }
  if (code === 'EACCES')
    return `cannot listen on ${where}: permission denied; choose a port above 1023 with ${flag}`;
  if (code === 'EADDRNOTAVAIL')
    return `cannot listen on ${where}: no such address on this machine; fix ${flag}`;
  return `cannot listen on ${where} (${flag}): ${messageOf(err)}`;
}

/**
 * @example
 * const ops = new ServerPart({ name: 'ops', flag: '--health-endpoint', host, port, listen: () => listen(app, host, port) });
 * // ops.port is known once ops.ready()
 */
export class ServerPart implements Part {
  readonly name: string;
  readonly onFailure = 'exit';
  private listeningOn: number | undefined;

  constructor(private readonly options: ServerPartOptions) {
    this.name = options.name;
  }

  /** The port it listens on, once ready(). */
  get port(): number | undefined {
    return this.listeningOn;
  }

  ready(): boolean {
    return this.listeningOn !== undefined;
  }

  async run(signal: AbortSignal): Promise<void> {
    const { host, port, flag } = this.options;
    let server: RunningServer;
    try {
      server = await this.options.listen();
    } catch (err) {
      throw new OpaSyncError('listen_failed', listenProblem(err, host, port, flag), { cause: err });
    }
    try {
      this.listeningOn = server.port;
      this.options.onListening?.(server.port);
      await untilAborted(signal);
    } finally {
      this.listeningOn = undefined;
      await server.close();
    }
  }
}
