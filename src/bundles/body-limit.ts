// A hard cap on a request body, enforced while it arrives. express.json() refuses a body over its
// limit, but only after reading the rest of it ("read off entire request"): a client that streams
// without end, or declares gigabytes, would keep the server reading for as long as it likes. Here a
// declared Content-Length over the cap is refused before anything is read, and a body that grows past
// it is answered 413 at once and its connection closed, so nothing more of it is read.
import type { NextFunction, Request, Response } from 'express';
import { OpaSyncError } from '../util/errors.js';
import { answerFor, writeErrorAnswer } from './error-answer.js';

function tooLarge(limitBytes: number): OpaSyncError {
  return new OpaSyncError('request_too_large', `the request body is over the limit of ${limitBytes} bytes`, {
    status: 413,
  });
}

/**
 * Middleware for a route whose body a parser with the same limit reads next (put it first): refuses
 * bodies over `limitBytes`. The parser then fails too, once the connection is closed, and its error
 * reaches the error handler as usual (counted and logged there once; the answer is already written).
 *
 * @example
 * app.post('/status', limitBody(1024 * 1024), express.json({ limit: '1mb' }), handler);
 */
export function limitBody(limitBytes: number) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limitBytes) {
      next(tooLarge(limitBytes));
      return;
    }
    let seen = 0;
    const count = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen <= limitBytes) return;
      req.off('data', count);
      if (!res.headersSent) {
        // Connection: close: Node ends the connection once the answer is written, unread body and all.
        writeErrorAnswer(res, false, answerFor(tooLarge(limitBytes)), true);
      }
      req.pause();
    };
    req.on('data', count);
    req.once('end', () => req.off('data', count));
    next();
  };
}
