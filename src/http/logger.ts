/**
 * The gateway's logger: pino, JSON lines on stdout, or pino-pretty's one-line human format when
 * stdout is a terminal (`log.pretty: auto`, the default) or `log.pretty: true` (`--pretty`).
 *
 * Cost (issue 14): the JSON destination is asynchronous (SonicBoom, sync: false): a line is copied
 * into a buffer and written by the next write, so lines logged while a write is in flight go out
 * in one system call instead of one each. Nothing is held back when it is quiet (minLength 0: a
 * lone line is written at once). The buffer is flushed synchronously at process exit (pino
 * registers that for every asynchronous destination it builds: process.exit(), the end of the
 * event loop, and an uncaught exception all run it); flushLogs() flushes it in the shutdown path.
 * Pretty output is written synchronously: it is for people at a terminal, not for throughput.
 */
import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
import type { Config } from '../config/schema.js';

const require = createRequire(import.meta.url);

export interface LoggerTarget {
  /** file descriptor written to; default 1 (stdout) */
  fd?: number;
  /** whether that descriptor is a terminal; default process.stdout.isTTY */
  isTTY?: boolean;
}

export function wantsPretty(log: Config['log'], isTTY: boolean): boolean {
  return log.pretty === 'auto' ? isTTY : log.pretty;
}

export function createLogger(log: Config['log'], target: LoggerTarget = {}): Logger {
  const fd = target.fd ?? 1;
  const isTTY = target.isTTY ?? (fd === 1 && process.stdout.isTTY === true);
  const options: pino.LoggerOptions = {
    level: log.level,
    // never log credentials, even if someone logs a request object with headers (see redactSecrets)
    formatters: { log: redactSecrets },
    // a query string may carry anything a caller put there (a token, a password): log the path only
    serializers: { req: logRequest },
  };
  return pino(options, wantsPretty(log, isTTY) ? prettyStream(fd, isTTY) : pino.destination({ dest: fd, sync: false, minLength: 0 }));
}

function prettyStream(fd: number, colorize: boolean): DestinationStream {
  // loaded only when asked for: JSON output does not pay for it at start-up
  const pretty = require('pino-pretty') as (options: PrettyOptions) => DestinationStream;
  return pretty({
    destination: fd,
    sync: true,
    colorize,
    singleLine: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
  });
}

/** what the flush below reads of SonicBoom's state (pino's asynchronous destination) */
interface BufferedDestination {
  _writing?: boolean;
  _len?: number;
}

/**
 * Wait (at most 1 s) until the logger's asynchronous destination has written everything it holds:
 * the shutdown path calls it before process.exit(). Pretty (synchronous) output has nothing to wait for.
 */
export async function flushLogs(logger: Logger): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as BufferedDestination | undefined;
  if (!stream || typeof stream._len !== 'number') return;
  const until = Date.now() + 1_000;
  while ((stream._writing === true || (stream._len ?? 0) > 0) && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const CENSOR = '[redacted]';

/**
 * What pino's `redact` option did with the paths req.headers.authorization, headers.authorization
 * and *.password, without its cost (issue 14): with a wildcard path, pino ran every field of every
 * line (strings and numbers too) through @pinojs/redact, which parses its paths and clones on each
 * call. Here each top-level field is looked at once; the object is copied only when it holds a
 * secret (the caller's object is never changed).
 */
export function redactSecrets(obj: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key in obj) {
    const value = obj[key];
    if (value === null || typeof value !== 'object') continue;
    let v = value as Record<string, unknown>;
    if (Object.hasOwn(v, 'password')) v = { ...v, password: CENSOR };
    if (key === 'headers') v = censorAuthorization(v);
    else if (key === 'req' && v.headers !== null && typeof v.headers === 'object') {
      const headers = censorAuthorization(v.headers as Record<string, unknown>);
      if (headers !== v.headers) v = { ...v, headers };
    }
    if (v !== value) (out ??= { ...obj })[key] = v;
  }
  return out ?? obj;
}

function censorAuthorization(headers: Record<string, unknown>): Record<string, unknown> {
  return Object.hasOwn(headers, 'authorization') ? { ...headers, authorization: CENSOR } : headers;
}

/** The request as logged: method, path without its query string, host and peer. */
function logRequest(req: { method?: string; url?: string; headers?: Record<string, unknown>; socket?: { remoteAddress?: string; remotePort?: number } }): Record<string, unknown> {
  return {
    method: req.method,
    url: typeof req.url === 'string' ? req.url.split('?')[0] : req.url,
    host: req.headers?.host,
    remoteAddress: req.socket?.remoteAddress,
    remotePort: req.socket?.remotePort,
  };
}
