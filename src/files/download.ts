/**
 * Streaming download: open 'r' → (seek end for the size) → seek to the start → read chunk by
 * chunk → close. Chunks are pushed only when the HTTP side wants more (Readable backpressure)
 * and at most READ_AHEAD reads run ahead of them, so memory is flat in file size; each read is
 * its own queued agent command, so other requests to the VM interleave with a long transfer. The handle is closed when the last byte is read,
 * and on every other way out (agent error, client abort → destroy()).
 */
import { Readable } from 'node:stream';
import { isGatewayError, errors } from '../errors.js';
import { SEEK_END, SEEK_SET, type GuestFiles, type ReadResult, type SocketTurns } from './guest.js';
import { parseRange, resolveRange } from './range.js';

export interface DownloadPlan {
  status: 200 | 206;
  /** file size, when the agent could seek to its end (not for pipes, /proc files …) */
  size?: number;
  start: number;
  /** bytes the body will carry; undefined when the size is unknown */
  length?: number;
  stream: DownloadStream;
}

export async function planDownload(
  files: GuestFiles,
  vm: string,
  path: string,
  rangeHeader: string | undefined,
  chunkBytes: number,
  signal?: AbortSignal,
): Promise<DownloadPlan> {
  const handle = await files.open(vm, path, 'r', 'transfer');
  try {
    let size: number | undefined;
    try {
      size = (await files.seek(vm, handle, 0, SEEK_END, signal)).position;
    } catch (e) {
      // Not seekable: stream to EOF without a length, and without honouring Range.
      if (!(isGatewayError(e) && e.code === 'AGENT_ERROR')) throw e;
    }
    // A size of 0, or a whole file smaller than a chunk, is read to its end before it is believed:
    // /proc files say 0 and /sys files a page (4096) whatever they hold, and a regular file that
    // small costs no more read either way. What the first read finds is the size; a file that
    // goes on past it is streamed to its end without a length (and without Range), as a pipe.
    if (size !== undefined && (size === 0 || (size < chunkBytes && parseRange(rangeHeader) === undefined))) {
      const stream = new DownloadStream(files, vm, handle, undefined, chunkBytes, 1);
      await files.seek(vm, handle, 0, SEEK_SET, signal);
      await stream.prefetch(signal);
      const whole = stream.firstChunk();
      const real = whole?.done ? whole.length : undefined;
      // a size that was not the file's (a pseudo-file): a length for this answer, but no Range on it
      return { status: 200, ...(real === size ? { size } : {}), start: 0, length: real, stream };
    }
    let start = 0;
    let end = size === undefined ? undefined : size - 1;
    let status: 200 | 206 = 200;
    const spec = size === undefined ? undefined : parseRange(rangeHeader);
    if (spec && size !== undefined) {
      const r = resolveRange(spec, size);
      if (r === 'unsatisfiable') {
        throw errors.outsideFile(vm, `range "${rangeHeader}"`, size);
      }
      ({ start, end } = r);
      status = 206;
    }
    if (size !== undefined) await files.seek(vm, handle, start, SEEK_SET, signal);
    const length = end === undefined ? undefined : end - start + 1;
    const stream = new DownloadStream(files, vm, handle, length, chunkBytes);
    // Read the first chunk before any header goes out, so that a file that opens but cannot be
    // read (a directory: EISDIR) is a clean 422 rather than a response cut off mid-stream.
    await stream.prefetch(signal);
    return { status, size, start, length, stream };
  } catch (e) {
    await files.closeQuietly(vm, handle);
    throw e;
  }
}

type Chunk = { buf: Buffer; done: boolean };
/** a guest-file-read sent ahead, with the count it asked for */
type Sent = { count: number; reply: Promise<ReadResult> };

/** Reads sent ahead of the one being handed on: one runs in the agent, one waits behind it. */
export const READ_AHEAD = 2;

/**
 * Reads ahead: while a chunk is decoded and written to the client, the next read is already in
 * the agent and the one after it waits in the channel's line, so the agent never sits idle
 * between chunks (a raw read loop leaves it idle while the client decodes each reply). Memory
 * stays bounded in chunks, not in file size: new reads are sent only when the HTTP side asks for
 * more data (Readable backpressure), so at most `readAhead` replies, the chunk in the stream's
 * buffer and the one being written are held. Reads never ask past the known length, so a whole
 * download ends with nothing in flight.
 */
export class DownloadStream extends Readable {
  private readonly abort = new AbortController();
  private closing?: Promise<boolean>;
  private emptyReads = 0;
  /** the first chunk, read by prefetch() before the response starts */
  private first?: Chunk;
  /** reads sent and not yet handed on, oldest first */
  private readonly sent: Sent[] = [];
  /** bytes not yet asked for; undefined = until EOF */
  private unasked: number | undefined;
  private eof = false;
  /** when the socket is let go, once the reads out are answered (GuestFiles.socketTurns) */
  private readonly turns: SocketTurns;

  constructor(
    private readonly files: GuestFiles,
    private readonly vm: string,
    readonly handle: number,
    /** bytes still to send; undefined = until EOF */
    private remaining: number | undefined,
    private readonly chunkBytes: number,
    private readonly readAhead = READ_AHEAD,
  ) {
    super({ highWaterMark: chunkBytes });
    this.unasked = remaining;
    this.turns = files.socketTurns(vm);
  }

  /** what prefetch() read: its length, and whether it was the whole file (EOF) */
  firstChunk(): { length: number; done: boolean } | undefined {
    return this.first === undefined ? undefined : { length: this.first.buf.length, done: this.first.done };
  }

  /** reads sent to the agent and not yet handed on (for tests and metrics) */
  get readsInFlight(): number {
    return this.sent.length;
  }

  /** Read the first chunk now; errors reach the caller instead of a half-sent response. */
  async prefetch(signal?: AbortSignal): Promise<void> {
    if (this.remaining === 0) return;
    const onAbort = () => this.abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      this.first = await this.readChunk();
    } catch (e) {
      // the read sent ahead must not hold up the close that follows (planDownload closes)
      this.abort.abort();
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  override _read(): void {
    this.pull().catch((e: unknown) => this.destroy(e instanceof Error ? e : new Error(String(e))));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Abandon the reads in flight (their replies are discarded), then close with a fresh deadline.
    this.abort.abort();
    this.closeHandle().then(
      () => cb(err),
      () => cb(err),
    );
  }

  private closeHandle(): Promise<boolean> {
    this.closing ??= this.files.closeQuietly(this.vm, this.handle);
    return this.closing;
  }

  /** One chunk to the stream (Readable calls _read again only after a push). */
  private async pull(): Promise<void> {
    let chunk = this.first;
    this.first = undefined;
    chunk ??= await this.readChunk();
    if (this.destroyed) return;
    if (!chunk.done) this.send();
    await this.deliver(chunk);
  }

  /** Send reads until `readAhead` are out, never past the known length or a seen EOF. */
  private send(): void {
    if (this.turns.due()) {
      // time to let another tool have the agent (it serves one client): once the reads out are
      // answered, the socket goes; the next read connects again (the handle lives in the agent)
      if (this.sent.length > 0) return;
      this.turns.letGo();
    }
    while (this.sent.length < this.readAhead && !this.eof && this.unasked !== 0) {
      const count = this.unasked === undefined ? this.chunkBytes : Math.min(this.chunkBytes, this.unasked);
      if (this.unasked !== undefined) this.unasked -= count;
      const reply = this.files.read(this.vm, this.handle, count, this.abort.signal);
      // a failure is seen when its turn comes; a read abandoned by destroy() is no one's error
      reply.catch(() => undefined);
      this.sent.push({ count, reply });
    }
  }

  /** The next chunk with data, or the end (an empty read pushes nothing). */
  private async readChunk(): Promise<Chunk> {
    for (;;) {
      if (this.remaining === 0 || (this.eof && this.sent.length === 0)) return { buf: Buffer.alloc(0), done: true };
      if (this.sent.length === 0) {
        // every byte was asked for, yet some are missing (a short read): ask for them again
        if (this.unasked === 0) this.unasked = this.remaining;
        this.send();
      }
      const { count, reply } = this.sent.shift() as Sent;
      const r = await reply;
      if (r.eof) this.eof = true;
      // the next read goes out before this reply is decoded: the agent works meanwhile
      if (!this.eof) this.send();
      let buf = Buffer.from(r.b64, 'base64');
      if (this.unasked !== undefined && buf.length < count) this.unasked += count - buf.length;
      if (this.remaining !== undefined) {
        if (buf.length > this.remaining) buf = buf.subarray(0, this.remaining);
        this.remaining -= buf.length;
        if (this.remaining > 0 && r.eof) {
          // The file shrank under us: the promised Content-Length cannot be met. Failing the
          // stream aborts the response, so the client sees a truncated transfer, not a short file.
          throw errors.agentError(this.vm, 'guest-file-read', `file ended ${this.remaining} bytes early (it shrank while being read)`);
        }
      }
      const done = this.remaining === 0 || (this.remaining === undefined && r.eof);
      if (buf.length > 0 || done) {
        this.emptyReads = 0;
        return { buf, done };
      }
      if (++this.emptyReads > 1000) throw errors.agentError(this.vm, 'guest-file-read', 'the file keeps returning no data');
    }
  }

  private async deliver({ buf, done }: Chunk): Promise<void> {
    if (done) {
      // Reads sent past an EOF (size unknown) answer at once; let them, so the close finds the
      // channel in step. Then close before the last push: the handle is released as soon as the
      // data is in hand.
      await Promise.allSettled(this.sent.splice(0).map((s) => s.reply));
      await this.closeHandle();
      if (this.destroyed) return;
      if (buf.length > 0) this.push(buf);
      this.push(null);
      return;
    }
    this.push(buf);
  }
}
