/**
 * The gateway's logger: pino, JSON lines on stdout, or pino-pretty's one-line human format when
 * stdout is a terminal (`log.pretty: auto`, the default) or `log.pretty: true` (`--pretty`).
 *
 * Cost (issue 14): the JSON destination is asynchronous (SonicBoom, sync: false): a line is copied
 * into a buffer and written by the next write, so lines logged while a write is in flight go out
 * in one system call instead of one each; the lines of one event-loop turn reach SonicBoom as one
 * string (TurnBatch). To a regular file, each turn's lines are one synchronous write (FileSink). Nothing is held back when it is quiet (minLength 0: a
 * lone line is written at once). The buffer is flushed synchronously at process exit (pino
 * registers that for every asynchronous destination it builds: process.exit(), the end of the
 * event loop, and an uncaught exception all run it); flushLogs() flushes it in the shutdown path.
 * Pretty output is written synchronously: it is for people at a terminal, not for throughput.
 */
import { fstatSync, writeSync } from 'node:fs';
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
  if (wantsPretty(log, isTTY)) return pino(options, prettyStream(fd, isTTY));
  const sink = isRegularFile(fd) ? new FileSink(fd) : (pino.destination({ dest: fd, sync: false, minLength: 0 }) as unknown as Boom);
  return pino(options, new TurnBatch(sink));
}

function isRegularFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile();
  } catch {
    return false;
  }
}

/**
 * Output to a regular file (log.file redirection, the bench): each turn's lines in ONE
 * synchronous write (a page-cache copy) instead of SonicBoom's asynchronous write through the
 * thread pool, whose hand-off and completion cost more than the write itself when a turn logs one
 * line (one request at a time: ~8-10 µs a line against ~2 µs).
 */
class FileSink implements Boom {
  readonly batchesAlways = true;
  constructor(readonly fd: number) {}

  write(data: string): boolean {
    writeAllSync(this.fd, data);
    return true;
  }

  flushSync(): void {
    // nothing held
  }
}

/** Write all of `text` to `fd` now (a regular file, or at exit): partial writes continued, EAGAIN (a full pipe) waited out, up to 1 s. */
function writeAllSync(fd: number, text: string): void {
  const buf = Buffer.from(text);
  const until = Date.now() + 1_000;
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() > until) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

/** the batches holding lines not yet handed to SonicBoom: ONE exit handler for all loggers of the process */
const holding = new Set<TurnBatch>();
process.on('exit', () => {
  for (const batch of holding) batch.exitFlush();
  holding.clear();
});

/** what TurnBatch uses of pino's asynchronous destination (SonicBoom) */
interface Boom {
  readonly fd: number;
  /** every line goes through the turn's batch (a synchronous sink), not only while a write is in flight */
  readonly batchesAlways?: boolean;
  write(data: string): boolean;
  flushSync(): void;
  _writing?: boolean;
  _len?: number;
}

/**
 * The lines logged while SonicBoom has a write in flight, handed to it as ONE string at the end of
 * the event-loop turn (setImmediate: before that write's completion can be seen, so nothing goes
 * out later than before) instead of one write() each (issue 14): SonicBoom measures the UTF-8
 * length of its whole pending buffer (a concatenated string, flattened for it) on every write(),
 * so at 64 connections each line cost a copy of up to 16 KiB. While SonicBoom is idle a line is
 * written at once, as before. Lines still here at process exit
 * (process.exit(), the end of the loop, an uncaught exception) are written synchronously by this
 * batch's own exit handler; flushLogs() hands them over first.
 */
class TurnBatch {
  private lines: string[] = [];
  private scheduled = false;
  private readonly flush = (): void => {
    this.scheduled = false;
    this.handOver();
  };

  constructor(readonly boom: Boom) {}

  write(line: string): boolean {
    // SonicBoom idle: the line goes out now, as it would without this batch
    if (this.lines.length === 0 && this.boom._writing !== true && this.boom.batchesAlways !== true) return this.boom.write(line);
    this.lines.push(line);
    if (!this.scheduled) {
      this.scheduled = true;
      holding.add(this);
      setImmediate(this.flush);
    }
    return true;
  }

  /** give SonicBoom what this turn logged */
  handOver(): void {
    const { lines } = this;
    holding.delete(this);
    if (lines.length === 0) return;
    this.lines = [];
    this.boom.write(lines.length === 1 ? lines[0] : lines.join(''));
  }

  /** at exit: what SonicBoom holds (pino's own exit handler may have written it already), then these lines, synchronously */
  exitFlush(): void {
    const text = this.lines.join('');
    this.lines = [];
    try {
      this.boom.flushSync();
      writeAllSync(this.boom.fd, text);
    } catch {
      // nothing more can be done for the last lines of a dying process
    }
  }

  get pending(): boolean {
    return this.lines.length > 0 || this.boom._writing === true || (this.boom._len ?? 0) > 0;
  }
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


/**
 * Wait (at most 1 s) until the logger's asynchronous destination has written everything it holds:
 * the shutdown path calls it before process.exit(). Pretty (synchronous) output has nothing to wait for.
 */
export async function flushLogs(logger: Logger): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  if (!(stream instanceof TurnBatch)) return;
  stream.handOver();
  const until = Date.now() + 1_000;
  while (stream.pending && Date.now() < until) {
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
