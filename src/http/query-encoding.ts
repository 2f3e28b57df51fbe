/**
 * A query string must be valid percent-encoding of UTF-8. Fastify's parser keeps a value it cannot
 * decode (`%C3%28`, a lone `%`) as it was written, so `?path=%C3%28` named the guest file literally
 * called `%C3%28`, the same as the correctly encoded `%25C3%2528`: such a request is 400 instead,
 * naming the parameter. Checked before validation, on the routes that take a query string only
 * (nothing is added to a route without one), and only when the query holds a `%`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction, RouteOptions } from 'fastify';
import { errors } from '../errors.js';

function decodes(text: string): boolean {
  try {
    decodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}

function checkQuery(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
  const url = request.url;
  const q = url.indexOf('?');
  if (q < 0 || url.indexOf('%', q) < 0) return done();
  for (const pair of url.slice(q + 1).split('&')) {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    const value = eq < 0 ? '' : pair.slice(eq + 1);
    if (decodes(name) && decodes(value)) continue;
    const shown = decodes(name) ? decodeURIComponent(name) : name;
    done(errors.validation(`querystring/${shown.slice(0, 64)} is not valid percent-encoding of UTF-8 text (a % must be followed by two hex digits, the bytes must be UTF-8); write a literal % as %25`));
    return;
  }
  done();
}

export function registerQueryEncoding(app: FastifyInstance): void {
  app.addHook('onRoute', (route: RouteOptions) => {
    const schema = route.schema as { querystring?: unknown } | undefined;
    if (schema?.querystring === undefined) return;
    route.preValidation = route.preValidation === undefined ? [checkQuery] : [checkQuery, ...[route.preValidation].flat()];
  });
}
