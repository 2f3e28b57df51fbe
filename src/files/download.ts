/**
 * Streaming download: open 'r' → (seek end for the size) → seek to the start → read chunk by
 * chunk → close. One chunk is read only when the HTTP side wants more (Readable backpressure),
 * so memory is flat in file size; each read is its own queued agent command, so other requests
 * to the VM interleave with a long transfer. The handle is closed when the last byte is read,
 * and on every other way out (agent error, client abort → destroy()).
 */
import { Readable } from 'node:stream';
import { isGatewayError, errors } from '../errors.js';
import { SEEK_END, SEEK_SET, type GuestFiles } from './guest.js';
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

export class DownloadStream extends Readable {
  private readonly abort = new AbortController();
  private closing?: Promise<boolean>;
  private emptyReads = 0;
  /** the first chunk, read by prefetch() before the response starts */
  private first?: { buf: Buffer; done: boolean };

  constructor(
    private readonly files: GuestFiles,
    private readonly vm: string,
    readonly handle: number,
    /** bytes still to send; undefined = until EOF */
    private remaining: number | undefined,
    private readonly chunkBytes: number,
  ) {
    super({ highWaterMark: chunkBytes });
  }

  /** Read the first chunk now; errors reach the caller instead of a half-sent response. */
  async prefetch(signal?: AbortSignal): Promise<void> {
    if (this.remaining === 0) return;
    const onAbort = () => this.abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      this.first = await this.readChunk();
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  override _read(): void {
    const first = this.first;
    if (first) {
      this.first = undefined;
      this.deliver(first).catch((e: unknown) => this.destroy(e instanceof Error ? e : new Error(String(e))));
      return;
    }
    this.next().catch((e: unknown) => this.destroy(e instanceof Error ? e : new Error(String(e))));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Abandon an in-flight read (its reply is discarded), then close with a fresh deadline.
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

  /** Read until there is data to push or the end is reached (an empty read pushes nothing). */
  private async readChunk(): Promise<{ buf: Buffer; done: boolean }> {
    for (;;) {
      if (this.remaining === 0) return { buf: Buffer.alloc(0), done: true };
      const count = this.remaining === undefined ? this.chunkBytes : Math.min(this.chunkBytes, this.remaining);
      const r = await this.files.read(this.vm, this.handle, count, this.abort.signal);
      let buf = Buffer.from(r.b64, 'base64');
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

  private async next(): Promise<void> {
    const chunk = await this.readChunk();
    if (this.destroyed) return;
    await this.deliver(chunk);
  }

  private async deliver({ buf, done }: { buf: Buffer; done: boolean }): Promise<void> {
    if (done) {
      // Close before the last push: the handle is released as soon as the data is in hand.
      await this.closeHandle();
      if (this.destroyed) return;
      if (buf.length > 0) this.push(buf);
      this.push(null);
      return;
    }
    this.push(buf);
  }
}
