/**
 * Request bodies are taken as they are sent. A body in a content coding (Content-Encoding gzip,
 * br…) would be parsed, or written to a guest file, as the compressed bytes: it is 415 before
 * anything is read (RFC 9110 §8.4.1), once the caller is known (registered after auth); `identity`
 * is no coding, and a request without a body has nothing to decode.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errors } from '../errors.js';

/** the request announces a body (chunked, or a Content-Length other than 0) */
export function hasBody(request: FastifyRequest): boolean {
  const h = request.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}

export function registerBodyCoding(app: FastifyInstance): void {
  // callback style: an async hook costs a promise per request (issue 14)
  app.addHook('onRequest', (request, _reply, done) => {
    const coding = request.headers['content-encoding'];
    if (coding === undefined || !hasBody(request)) return done();
    const c = coding.trim().toLowerCase();
    if (c === '' || c === 'identity') done();
    else done(errors.unsupportedEncoding(coding));
  });
}
