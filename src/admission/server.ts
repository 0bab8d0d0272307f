// The admission webhook's HTTPS server (--admission-addr): `POST /validate/configmaps` takes an
// AdmissionReview v1 and answers with the validator's judgement; anything else is 404, a body that is
// not an AdmissionReview 400, one over the limit 413. Plain node:https (one route needs no framework),
// with the certificate reloaded when its files change (src/http/tls-files.ts).
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from '../http/metrics.js';
import type { RunningServer } from '../http/server-part.js';
import { statusOf, type ErrorCode } from '../util/error-codes.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { BadReviewError, parseReview, reviewAnswer } from './review.js';
import { readTlsPair, reloadOnChange, type TlsFilePair } from '../http/tls-files.js';
import type { AdmissionValidator } from './validator.js';

/** A ConfigMap holds at most 1 MiB; an UPDATE's review carries two of them, and JSON escapes. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;
export const ADMISSION_PATH = '/validate/configmaps';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, code: ErrorCode, message: string): void {
  sendJson(res, statusOf(code) ?? 500, { code, message });
}

class TooLarge extends Error {}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new TooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The request handler: one route, every answer counted and timed. */
export function createAdmissionHandler(
  validator: AdmissionValidator,
  metrics: Metrics,
  logger: Logger,
): Handler {
  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method !== 'POST' || path !== ADMISSION_PATH) {
      sendError(
        res,
        'not_found',
        `${req.method ?? ''} ${path ?? ''} is not served here: POST ${ADMISSION_PATH}`,
      );
      return;
    }
    const stop = metrics.admissionDuration.startTimer();
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (err) {
      metrics.admissionRequests.inc({ verdict: 'invalid' });
      if (err instanceof TooLarge)
        sendError(res, 'request_too_large', `the body is over ${MAX_BODY_BYTES} bytes`);
      else sendError(res, 'bad_request', `the body is not JSON: ${messageOf(err)}`);
      return;
    }
    let request;
    try {
      request = parseReview(body);
    } catch (err) {
      if (!(err instanceof BadReviewError)) throw err;
      metrics.admissionRequests.inc({ verdict: 'invalid' });
      sendError(res, 'bad_request', err.message);
      return;
    }
    const judgement = await validator.judge(request);
    metrics.admissionRequests.inc({ verdict: judgement.verdict });
    const seconds = stop();
    logger.info(
      {
        configmap: `${request.namespace}/${request.name}`,
        operation: request.operation,
        dryRun: request.dryRun,
        verdict: judgement.verdict,
        ms: Math.round(seconds * 1000),
        ...(judgement.message === undefined ? {} : { message: judgement.message }),
        ...(judgement.warnings.length === 0 ? {} : { warnings: judgement.warnings }),
      },
      'admission request answered',
    );
    sendJson(res, 200, reviewAnswer(request.uid, judgement));
  };
  return (req, res) => {
    answer(req, res).catch((err: unknown) => {
      // The one place that maps an unexpected error to an answer on this server.
      logger.error({ err }, 'admission webhook failed');
      if (res.headersSent) res.destroy();
      else sendError(res, 'internal_error', 'internal error');
    });
  };
}

/** Listens over HTTPS on host:port (0 = any free port); the certificate follows its files. */
export async function listenAdmission(
  handler: Handler,
  host: string,
  port: number,
  tls: TlsFilePair,
  logger: Logger,
  onClose: () => Promise<void>,
): Promise<RunningServer> {
  const server: Server = createServer(await readTlsPair(tls), handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const stopReload = reloadOnChange(server, tls, logger);
  let closing: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      closing ??= (async () => {
        stopReload();
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await stopped;
        await onClose();
      })();
      return closing;
    },
  };
}
