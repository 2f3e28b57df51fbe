/**
 * Streaming download: open 'r' → (seek end for the size) → seek to the start → read chunk by
 * chunk → close. One chunk is read only when the HTTP side wants more (Readable backpressure),
 * so memory is flat in file size; each read is its own queued agent command, so other requests
 * to the VM interleave with a long transfer. The handle is closed when the last byte is read,
 * and on every other way out (agent error, client abort → destroy()).
 */
import { Readable } from 'node:stream';
import { GatewayError, isGatewayError } from '../errors.js';
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
        throw new GatewayError('RANGE_NOT_SATISFIABLE', `range "${rangeHeader}" is outside the file (${size} bytes)`, {
          vm,
          extra: { size },
        });
      }
      ({ start, end } = r);
      status = 206;
    }
    if (size !== undefined) await files.seek(vm, handle, start, SEEK_SET, signal);
    const length = end === undefined ? undefined : end - start + 1;
    return { status, size, start, length, stream: new DownloadStream(files, vm, handle, length, chunkBytes) };
  } catch (e) {
    await files.closeQuietly(vm, handle);
    throw e;
  }
}

export class DownloadStream extends Readable {
  private readonly abort = new AbortController();
  private closing?: Promise<boolean>;
  private emptyReads = 0;

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

  override _read(): void {
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

  /** Read until something can be pushed (an empty read pushes nothing) or the end is reached. */
  private async next(): Promise<void> {
    for (;;) {
      if (this.remaining === 0) return this.finish();
      const count = this.remaining === undefined ? this.chunkBytes : Math.min(this.chunkBytes, this.remaining);
      const r = await this.files.read(this.vm, this.handle, count, this.abort.signal);
      if (this.destroyed) return;
      let buf = Buffer.from(r.b64, 'base64');
      if (this.remaining !== undefined) {
        if (buf.length > this.remaining) buf = buf.subarray(0, this.remaining);
        this.remaining -= buf.length;
        if (this.remaining > 0 && r.eof) {
          // The file shrank under us: the promised Content-Length cannot be met. Failing the
          // stream aborts the response, so the client sees a truncated transfer, not a short file.
          throw new GatewayError('AGENT_ERROR', `file ended ${this.remaining} bytes early (it shrank while being read)`, {
            vm: this.vm,
            command: 'guest-file-read',
          });
        }
      }
      const done = this.remaining === 0 || (this.remaining === undefined && r.eof);
      if (buf.length === 0 && !done) {
        if (++this.emptyReads > 1000) throw new GatewayError('AGENT_ERROR', 'the file keeps returning no data', { vm: this.vm });
        continue;
      }
      if (done) {
        await this.closeHandle();
        if (buf.length > 0) this.push(buf);
        this.push(null);
        return;
      }
      this.emptyReads = 0;
      this.push(buf);
      return;
    }
  }

  private async finish(): Promise<void> {
    await this.closeHandle();
    this.push(null);
  }
}
