// The logger's second guard against leaks: fields that carry credentials by name are redacted at every
// level and in both formats, wherever opa-sync's code puts them (top level, one object down, headers).
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { REDACTED, createLogger, type LogFormat, type LogLevel } from '../../src/util/logger.js';

function capture(
  level: LogLevel,
  format: LogFormat,
): { logger: ReturnType<typeof createLogger>; text: () => string } {
  const chunks: string[] = [];
  const out = new Writable({
    write(chunk: Buffer | string, _enc, done): void {
      chunks.push(chunk.toString());
      done();
    },
  });
  // pino writes synchronously to a plain object stream; a Writable gets each line as one write.
  return { logger: createLogger(level, format, out), text: () => chunks.join('') };
}

const SECRET = 's3cr3t-value-0123456789';

describe('security: the logger redacts credential fields', function () {
  for (const level of ['debug', 'info', 'warn', 'error'] as const) {
    for (const format of ['json', 'text'] as const) {
      it(`at ${level}, ${format}: authorization, cookie, token, password and secret fields never show their value`, function () {
        const { logger, text } = capture(level, format);
        const lines = [
          { authorization: `Bearer ${SECRET}` },
          { token: SECRET },
          { password: SECRET },
          { secret: SECRET },
          { cookie: `opa_sync_ui=${SECRET}` },
          { headers: { authorization: `Bearer ${SECRET}`, 'set-cookie': SECRET } },
          { req: { headers: { authorization: `Basic ${Buffer.from(`u:${SECRET}`).toString('base64')}` } } },
          { credential: { password: SECRET, token: SECRET } },
        ];
        for (const fields of lines) logger[level](fields, 'a line with a secret field');
        const out = text();
        expect(out.split('\n').filter((l) => l.includes('a line with a secret field'))).to.have.lengthOf(
          lines.length,
        );
        expect(out).to.not.include(SECRET);
        expect(out).to.not.include(Buffer.from(`u:${SECRET}`).toString('base64'));
        expect(out).to.include(REDACTED);
      });
    }
  }

  it('keeps the fields that only count or name credentials (tokens: 2, file: …)', function () {
    const { logger, text } = capture('info', 'json');
    logger.info({ tokens: 2, before: 1, file: '/etc/opa-sync/tokens' }, 'token file reloaded');
    const line = JSON.parse(text()) as Record<string, unknown>;
    expect(line).to.include({ tokens: 2, before: 1, file: '/etc/opa-sync/tokens' });
  });
});
