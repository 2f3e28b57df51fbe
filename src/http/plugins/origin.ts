/**
 * Host and Origin checks, before authentication and before any body is read (onRequest):
 *  - a Host header (or the authority of an absolute-form target) that is not one of the gateway's
 *    names is 421 MISDIRECTED_REQUEST: a web page that rebinds its own DNS name to 127.0.0.1
 *    reaches the loopback gateway with its own name in Host, and is refused here (DNS rebinding);
 *  - a request carrying an Origin that is not in server.allowedOrigins is 403 ORIGIN_FORBIDDEN: a
 *    browser sends Origin on cross-site POSTs, which is how a page the operator visits could
 *    otherwise shut a VM down (CSRF). Clients that are not browsers send no Origin.
 */
import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../config/schema.js';
import { errors } from '../../errors.js';

const WILDCARD_BINDS = new Set(['0.0.0.0', '::', '[::]', '']);

/**
 * The loopback names: always accepted, also with server.allowedHosts set. A rebinding page makes
 * the browser send its own DNS name, never these; and local probes (the Docker HEALTHCHECK on
 * 127.0.0.1, an operator's curl) must not be 421 because a proxy's name was configured.
 */
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

/** The Host names to accept, or undefined for any. The host of cluster.advertiseUrl is always one. */
export function allowedHostNames(server: Config['server'], advertiseUrl?: string): Set<string> | undefined {
  const advertised = advertiseUrl === undefined ? [] : [normalizeHost(new URL(advertiseUrl).host)];
  if (server.allowedHosts) return new Set([...server.allowedHosts.map(normalizeHost), ...LOOPBACK_NAMES, ...advertised]);
  if (WILDCARD_BINDS.has(server.host)) return undefined;
  return new Set([...LOOPBACK_NAMES, normalizeHost(server.host), hostname().toLowerCase(), ...advertised].filter((h) => h !== ''));
}

/** `Example.org:8080` → `example.org`, `[::1]:80` → `::1` */
export function normalizeHost(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') > 0 ? h.indexOf(']') : undefined);
  const colon = h.indexOf(':');
  return colon >= 0 && h.indexOf(':', colon + 1) < 0 ? h.slice(0, colon) : h;
}

/** the authority of an absolute-form request target, without userinfo; undefined if it is not one */
function authorityOf(url: string): string | undefined {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url);
  if (m === null) return undefined;
  const at = m[1].lastIndexOf('@');
  return at >= 0 ? m[1].slice(at + 1) : m[1];
}

export function registerOriginChecks(app: FastifyInstance, server: Config['server'], advertiseUrl?: string): void {
  const hosts = allowedHostNames(server, advertiseUrl);
  const origins = new Set(server.allowedOrigins.map((o) => o.toLowerCase().replace(/\/+$/, '')));
  // callback style: an async hook costs a promise per request (issue 14)
  app.addHook('onRequest', (request, _reply, done) => {
    if (hosts) {
      // an absolute-form target (`GET http://name/… HTTP/1.1`) names the host itself, and the Host
      // header is then to be ignored (RFC 9112 §3.2.2): its authority is what is checked
      const url = request.raw.url;
      const host = url !== undefined && url.charCodeAt(0) !== 47 ? authorityOf(url) : request.headers.host;
      if (typeof host !== 'string' || !hosts.has(normalizeHost(host))) {
        done(errors.misdirected(typeof host === 'string' ? host : ''));
        return;
      }
    }
    const origin = request.headers.origin;
    if (typeof origin === 'string' && !origins.has(origin.toLowerCase().replace(/\/+$/, ''))) done(errors.originForbidden(origin));
    else done();
  });
}
