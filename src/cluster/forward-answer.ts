/**
 * The undici dispatch handler of one forwarded request (cluster/forward.ts, NodePools): what
 * undici's own `request()` does for reply-from, without what a forwarded request does not need
 * (issue 17 item 6: the entry node's CPU per forwarded request). undici's request() makes per
 * request an AsyncResource, an abort listener on the request's signal, a parsed header object that
 * reply-from then copies again, and a Readable for the body even when the answer is a few bytes
 * (its 'data'/'end' events and nextTicks). Here:
 *  - an answer whose Content-Length is at most SMALL_ANSWER (not HEAD) is read whole and handed over
 *    once complete, as a WholeBody (reply-from passes it to onResponse as `stream`; its destroy() is
 *    what reply-from calls when the client went away meanwhile): a node dying mid-body is still an
 *    error before the answer's headers are sent, so a 503;
 *  - any other answer is handed over at its headers with a Readable that keeps undici's
 *    backpressure (push() false pauses the socket, read() resumes it);
 *  - the headers are parsed once, without the hop-by-hop ones and those the entry node gives
 *    itself (Date, X-Request-Id; Content-Length of an answer read whole), with X-Qga-Node set;
 *  - the abort: one listener per signal (the connection's, shared by its requests) for every
 *    request in flight on it, not one added and removed per request.
 * A failure before the handover calls back with the error (on a microtask, as undici does); after
 * it, destroys the body stream. On a failure the request's body stream is destroyed as undici's
 * request() does (an IncomingMessage without taking its socket with it).
 */
import { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { util, type Dispatcher } from 'undici';
import { unwatchAbort, watchAbort, type AbortWatcher } from '../util/abort.js';
import { NODE_HEADER } from './hop.js';

/** answers up to this size are read whole and sent as one buffer */
export const SMALL_ANSWER = 65_536;

/** Response headers that do not cross back (hop-by-hop). */
const DROPPED_RESPONSE: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'transfer-encoding']);

/** the body of an answer read whole: what onResponse gets as `stream` for a small answer */
export class WholeBody {
  constructor(readonly bytes: Buffer) {}
  /** reply-from calls it when the client went away before the answer: nothing to release */
  destroy(): void {}
}

export interface ForwardResponse {
  statusCode: number;
  headers: Record<string, string | string[]>;
  body: WholeBody | Readable;
}
export type ForwardCallback = (err: Error | null, res?: ForwardResponse) => void;

type Abort = (err?: Error) => void;

function noop(): void {}

/** as undici's util.destroy: an IncomingMessage is destroyed without its socket */
function destroyBody(body: unknown, err: Error): void {
  if (!(body instanceof Readable) || body.destroyed) return;
  body.on('error', noop);
  if (Object.getPrototypeOf(body) === IncomingMessage.prototype) (body as unknown as { socket: unknown }).socket = null;
  body.destroy(err);
}

/**
 * Answer headers not copied to the client's answer, though not hop-by-hop: the entry node gives
 * them itself (issue 17 item 6: each copied header is one more reply.header() and serialization
 * on the entry node). `date`: the entry node's HTTP server writes its own when none is set (the
 * serving node sends none on a forwarded request's answer: http/plugins/forward.ts);
 * `x-request-id`: the entry node set it on its reply first (request-log.ts), to the id it sent,
 * which the serving node echoes.
 */
const GIVEN_HERE: ReadonlySet<string> = new Set(['date', 'x-request-id']);

/** the parsed answer headers and whether the answer is read whole (then without content-length: Fastify sets it from the bytes) */
interface Parsed {
  headers: Record<string, string | string[]>;
  whole: boolean;
}

/** The node's answer headers as the client gets them: minus hop-by-hop and GIVEN_HERE, X-Qga-Node set. */
function answerHeaders(raw: Buffer[], nodeId: string, method: string): Parsed {
  const out: Record<string, string | string[]> = {};
  let length: string | undefined;
  let lengths = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = util.headerNameToString(raw[i]);
    if (DROPPED_RESPONSE.has(name) || GIVEN_HERE.has(name) || name === '__proto__') continue;
    const value = raw[i + 1].toString('latin1');
    if (name === 'content-length' && lengths++ === 0) {
      length = value;
      continue;
    }
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (typeof had === 'string') out[name] = [had, value];
    else had.push(value);
  }
  if (typeof out[NODE_HEADER] !== 'string') out[NODE_HEADER] = nodeId;
  // one content-length at most SMALL_ANSWER (not HEAD): read whole, sent with the length of its bytes
  const whole = lengths === 1 && method !== 'HEAD' && Number(length) <= SMALL_ANSWER;
  if (!whole && length !== undefined) {
    const more = out['content-length'];
    out['content-length'] = more === undefined ? length : [length, ...[more].flat()];
  }
  return { headers: out, whole };
}

/** dispatches to other nodes not yet complete or failed, in this process */
let open = 0;

/** forwarded requests on their way (http/plugins/forward.ts: an answer defers its send while others are) */
export function forwardsOpen(): number {
  return open;
}

export class ForwardAnswer implements Dispatcher.DispatchHandler, AbortWatcher {
  private cb: ForwardCallback | undefined;
  private abort: Abort | undefined;
  private reason: Error | undefined;
  /** the signal watched (util/abort.ts: one listener per signal), until settled or fired */
  private watched: AbortSignal | undefined;
  private statusCode = 0;
  private headers: Record<string, string | string[]> | undefined;
  private chunks: Buffer[] | undefined;
  private stream: Readable | undefined;
  private resume: (() => void) | undefined;
  private ended = false;

  constructor(
    private readonly method: string,
    private body: unknown,
    private readonly nodeId: string,
    signal: AbortSignal | undefined,
    cb: ForwardCallback,
    /** told first when the request fails without an answer (ForwardContext.failing) */
    private readonly ctx?: { failing?(): void },
  ) {
    this.cb = cb;
    open++;
    if (signal === undefined) return;
    if (signal.aborted) this.reason = signal.reason as Error;
    else {
      this.watched = signal;
      watchAbort(signal, this);
    }
  }

  onSignalAbort(signal: AbortSignal): void {
    this.cancel(signal.reason as Error);
  }

  /** the signal fired: abort the request, or end its body stream with the reason */
  cancel(reason: Error): void {
    this.watched = undefined;
    this.reason ??= reason;
    if (this.stream !== undefined) this.stream.on('error', noop).destroy(reason);
    else this.abort?.(reason);
  }

  private settle(): void {
    if (this.watched !== undefined) unwatchAbort(this.watched, this);
    this.watched = undefined;
  }

  private handOver(res: ForwardResponse): void {
    const cb = this.cb;
    this.cb = undefined;
    if (cb === undefined) return;
    try {
      cb(null, res);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  onConnect(abort: Abort): void {
    if (this.reason !== undefined) {
      abort(this.reason);
      return;
    }
    this.abort = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true;
    this.statusCode = statusCode;
    const { headers, whole } = answerHeaders(rawHeaders, this.nodeId, this.method);
    this.headers = headers;
    if (whole) {
      this.chunks = [];
      return true;
    }
    this.resume = resume;
    const stream = new Readable({
      read: () => this.resume?.(),
      destroy: (err, done) => {
        // the consumer stopped reading (the client went away): the node's connection goes too
        if (!this.ended) this.abort?.(err ?? new Error('the forwarded answer was not read to its end'));
        this.settle();
        done(err);
      },
    });
    this.stream = stream;
    this.handOver({ statusCode, headers, body: stream });
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.chunks !== undefined) {
      this.chunks.push(chunk);
      return true;
    }
    return this.stream === undefined || this.stream.push(chunk);
  }

  onComplete(): void {
    if (!this.ended) open--;
    this.ended = true;
    this.settle();
    this.body = undefined;
    const chunks = this.chunks;
    if (chunks !== undefined) {
      this.chunks = undefined;
      const bytes = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      this.handOver({ statusCode: this.statusCode, headers: this.headers ?? {}, body: new WholeBody(bytes) });
      return;
    }
    this.stream?.push(null);
  }

  onError(err: Error): void {
    if (!this.ended) open--;
    this.ended = true;
    this.settle();
    this.chunks = undefined;
    const cb = this.cb;
    if (cb !== undefined) {
      this.cb = undefined;
      this.ctx?.failing?.();
      queueMicrotask(() => cb(err));
    }
    const stream = this.stream;
    if (stream !== undefined && !stream.destroyed) queueMicrotask(() => stream.on('error', noop).destroy(err));
    if (this.body !== undefined) {
      const body = this.body;
      this.body = undefined;
      destroyBody(body, err);
    }
  }
}
