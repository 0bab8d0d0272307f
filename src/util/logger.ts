// Structured logging (pino): JSON by default, a readable single line per event with --log-format=text.
// Components take a child logger named after themselves. No log line holds a secret: opa-sync logs token
// files by path and tokens by count, never by value; as a second guard, fields that carry credentials
// by name (an Authorization or Cookie header, a token, a password) are replaced by "[redacted]" at every
// level and in both formats (test/e2e/security.test.ts greps every line for every secret).
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'text';

/** The field names that hold credentials, wherever they are in a line (top level or one object down). */
const SECRET_FIELDS = ['authorization', 'cookie', 'set-cookie', 'token', 'password', 'secret'];
export const REDACTED = '[redacted]';
const REDACT: pino.redactOptions = {
  paths: SECRET_FIELDS.flatMap((f) => [`["${f}"]`, `*["${f}"]`, `headers["${f}"]`, `*.headers["${f}"]`]),
  censor: REDACTED,
};

export function createLogger(
  level: LogLevel,
  format: LogFormat,
  destination: NodeJS.WritableStream = process.stderr,
): Logger {
  if (format === 'json') {
    return pino({ level, base: { app: 'opa-sync' }, redact: REDACT }, destination as pino.DestinationStream);
  }
  // A plain text line without a transport thread: time level [component] msg key=value…
  const stream = {
    write(line: string): void {
      const entry = JSON.parse(line) as Record<string, unknown>;
      const { time, level: lvl, msg, component, app: _app, pid: _pid, hostname: _host, ...rest } = entry;
      const fields = Object.entries(rest)
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(' ');
      const label = pino.levels.labels[Number(lvl)] ?? String(lvl);
      const comp = typeof component === 'string' ? ` [${component}]` : '';
      destination.write(
        `${new Date(Number(time)).toISOString()} ${label.toUpperCase()}${comp} ${typeof msg === 'string' ? msg : ''}${fields ? ` ${fields}` : ''}\n`,
      );
    },
  };
  return pino({ level, base: { app: 'opa-sync' }, redact: REDACT }, stream);
}

/** A logger that drops everything, for unit tests of components. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
