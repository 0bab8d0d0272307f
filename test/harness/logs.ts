// A logger for tests of components: debug level, every line kept as an object, so that a test can
// check what a user would be told (message, level and fields).
import { pino } from 'pino';
import type { Logger } from '../../src/util/logger.js';

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: 'debug' },
    {
      write(line: string): void {
        lines.push(JSON.parse(line) as LogLine);
      },
    },
  );
  return { logger, lines };
}
