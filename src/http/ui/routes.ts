/**
 * GET /ui: the read-only fleet page (issue 15 item 5). Its shell, script and style are public and
 * hold no data: the page asks for a token and calls the API with it, so the token's scopes and VM
 * globs apply as for any client. Served with a strict Content-Security-Policy: scripts, styles and
 * fetches from this origin only, no inline script or style, no framing, no forms posted anywhere,
 * no referrer. The browser sends no Origin header on the page's same-origin GETs, so the Origin
 * check (plugins/origin.ts) passes them; the Host check applies as to every request.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type } from 'typebox';
import { operation } from '../routes/operation.js';
import { APP_JS } from './app-js.js';
import { PAGE_CSS, PAGE_HTML, PAGE_ICON } from './page.js';

export const UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

function send(reply: FastifyReply, type: string, body: string): FastifyReply {
  return reply
    .type(type)
    .header('content-security-policy', UI_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('x-frame-options', 'DENY')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-cache')
    .serializer((s: unknown) => String(s))
    .send(body);
}

const asset = (operationId: string, summary: string, type: string) =>
  operation('service', operationId, {
    public: true,
    summary,
    ok: { 200: { description: summary, content: { [type]: { schema: Type.String() } } } },
    errors: [],
  });

export default async function uiRoutes(app: FastifyInstance): Promise<void> {
  app.get('/ui', asset('fleetPage', 'The read-only fleet page (HTML shell; it asks for a token and reads the API with it)', 'text/html'), async (_request, reply) =>
    send(reply, 'text/html; charset=utf-8', PAGE_HTML),
  );
  app.get('/ui/app.js', asset('fleetPageScript', "The fleet page's script", 'text/javascript'), async (_request, reply) =>
    send(reply, 'text/javascript; charset=utf-8', APP_JS),
  );
  app.get('/ui/app.css', asset('fleetPageStyle', "The fleet page's style sheet", 'text/css'), async (_request, reply) =>
    send(reply, 'text/css; charset=utf-8', PAGE_CSS),
  );
  // named by the page, so that a browser does not ask for /favicon.ico (a 401 without the token,
  // which is an audit record of a denied request at every opening of the page)
  app.get('/ui/icon.svg', asset('fleetPageIcon', "The fleet page's icon", 'image/svg+xml'), async (_request, reply) => send(reply, 'image/svg+xml', PAGE_ICON));
}
