/**
 * The HTTP server's options, and HTTPS when `server.tls` names a certificate and a key (PEM files).
 * The files are read when the app is built and again on SIGHUP (reloadTls: new connections get the
 * new certificate, open ones keep theirs), so a renewed certificate needs no restart.
 */
import { readFileSync } from 'node:fs';
import type { ServerOptions } from 'node:http';
import { createSecureContext, type Server as TlsServer } from 'node:tls';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { errorMessage } from '../util/unknown.js';

type ServerConfig = Config['server'];
export type TlsConfig = NonNullable<ServerConfig['tls']>;

/**
 * The certificate chain and key as PEM, checked to make a usable pair; throws a ConfigError of one
 * line naming the setting and the file.
 */
export function readTls(tls: TlsConfig): { cert: Buffer; key: Buffer } {
  const read = (key: 'cert' | 'key'): Buffer => {
    try {
      return readFileSync(tls[key]);
    } catch (e) {
      throw new ConfigError([`server.tls.${key}: cannot read ${tls[key]}: ${errorMessage(e)}`], 'server.tls');
    }
  };
  const pair = { cert: read('cert'), key: read('key') };
  try {
    createSecureContext(pair);
  } catch (e) {
    throw new ConfigError([`server.tls: ${tls.cert} and ${tls.key} are not a usable PEM certificate and key: ${errorMessage(e)}`], 'server.tls');
  }
  return pair;
}

/**
 * Fastify's server options: `http` always, and `https` (the same options plus the certificate)
 * when TLS is configured, which makes Fastify create an https.Server. Typed as the plain HTTP
 * options so buildApp keeps returning one FastifyInstance type.
 */
export function serverOptions(server: ServerConfig): { http: ServerOptions } {
  const http: ServerOptions = {
    // a request without Host is answered by the Host check (421 problem+json), not by Node's bare 400
    requireHostHeader: false,
    headersTimeout: server.headersTimeoutMs,
    // Node checks its header timeout only this often (default 30 s): check well within it
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, server.headersTimeoutMs / 4 || 1_000)),
  };
  if (!server.tls) return { http };
  const https = { ...http, ...readTls(server.tls) };
  return { http, https } as { http: ServerOptions };
}

/**
 * Swap the certificate of a listening HTTPS server (SIGHUP). Returns false when the server is
 * plain HTTP (turning TLS on or off needs a restart); throws, changing nothing, when a file cannot
 * be read or the pair is not valid.
 */
export function reloadTls(server: unknown, tls: TlsConfig): boolean {
  const s = server as Partial<TlsServer>;
  if (typeof s.setSecureContext !== 'function') return false;
  s.setSecureContext(readTls(tls));
  return true;
}
