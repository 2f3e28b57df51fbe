/**
 * Streaming upload: open → (seek for a resume) → write chunk by chunk → flush → close.
 * The body is consumed with for-await, so TCP backpressure holds the client while a chunk is
 * being written; memory is one chunk buffer however large the file. Each chunk is its own
 * queued agent command, so other requests to the VM interleave with a long transfer.
 *
 * Modes: `truncate` opens "w" (create or empty the file), `append` opens "a". An `offset`
 * resumes an interrupted upload: the file is opened "r+" (it must exist; nothing is truncated,
 * QGA has no truncate) and writing starts at `offset`, which may not lie beyond its end.
 */
import { GatewayError, errors } from '../errors.js';
import { SEEK_CUR, SEEK_END, SEEK_SET, type GuestFiles } from './guest.js';

export type UploadMode = 'truncate' | 'append';

export interface UploadOptions {
  mode: UploadMode;
  offset?: number;
  chunkBytes: number;
  /** 0 = no limit */
  maxBytes: number;
  signal?: AbortSignal;
}

export interface UploadResult {
  bytesWritten: number;
  /** the file position after the last byte written (the file size, unless bytes lay beyond it) */
  position: number;
}

export async function upload(
  files: GuestFiles,
  vm: string,
  path: string,
  body: AsyncIterable<Buffer | string>,
  opts: UploadOptions,
): Promise<UploadResult> {
  if (opts.offset !== undefined && opts.mode === 'append') {
    throw errors.validation('offset cannot be combined with mode=append (appending always writes at the end)');
  }
  const fopenMode = opts.offset !== undefined ? 'r+' : opts.mode === 'append' ? 'a' : 'w';
  const { signal } = opts;
  const handle = await files.open(vm, path, fopenMode, 'transfer');
  let written = 0;
  try {
    if (opts.offset !== undefined) {
      const size = (await files.seek(vm, handle, 0, SEEK_END, signal)).position;
      if (opts.offset > size) {
        throw errors.outsideFile(vm, `offset ${opts.offset}`, size);
      }
      await files.seek(vm, handle, opts.offset, SEEK_SET, signal);
    }
    // Two buffers: the next chunk fills from the request while the previous one is being
    // written, so the network and the agent work at the same time. One write in flight at a
    // time keeps the order; a buffer is refilled only after its write has finished.
    const bufs = [Buffer.allocUnsafe(opts.chunkBytes), Buffer.allocUnsafe(opts.chunkBytes)];
    let cur = 0;
    let fill = 0;
    let inFlight: Promise<void> | undefined;
    let received = 0;
    const submit = async () => {
      const data = bufs[cur].subarray(0, fill);
      if (inFlight) await inFlight;
      inFlight = writeAll(files, vm, handle, data, signal).then(() => {
        written += data.length;
      });
      inFlight.catch(() => undefined); // observed at the next await; never unhandled
      cur ^= 1;
      fill = 0;
    };
    try {
      for await (const piece of body) {
        const buf = typeof piece === 'string' ? Buffer.from(piece) : piece;
        received += buf.length;
        if (opts.maxBytes > 0 && received > opts.maxBytes) {
          throw errors.tooLarge('upload', opts.maxBytes, 'files.maxUploadBytes', { vm });
        }
        let p = 0;
        while (p < buf.length) {
          const n = buf.copy(bufs[cur], fill, p);
          fill += n;
          p += n;
          if (fill === opts.chunkBytes) await submit();
        }
      }
      if (fill > 0) await submit();
    } finally {
      // Settle the last write before anything else (success: flush after it; failure: `written` is final).
      await inFlight?.catch(() => undefined);
    }
    if (inFlight) await inFlight;
    await files.flush(vm, handle, signal);
    const position = (await files.seek(vm, handle, 0, SEEK_CUR, signal)).position;
    // The data is flushed: a failed close no longer concerns the caller (the reaper retries it).
    await files.closeQuietly(vm, handle);
    return { bytesWritten: written, position };
  } catch (e) {
    await files.closeQuietly(vm, handle);
    throw withProgress(e, written);
  }
}

/** guest-file-write may write less than asked (fwrite); send the rest until all is written. */
async function writeAll(files: GuestFiles, vm: string, handle: number, data: Buffer, signal?: AbortSignal): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const part = off === 0 ? data : data.subarray(off);
    const { count } = await files.write(vm, handle, part.toString('base64'), undefined, signal);
    if (count <= 0) throw errors.agentError(vm, 'guest-file-write', 'the agent wrote nothing (disk full?)');
    off += count;
  }
}

/** Tell the caller how far the upload got, so it can resume with `offset`. */
function withProgress(e: unknown, written: number): unknown {
  if (e instanceof GatewayError && e.extra?.bytesWritten === undefined) {
    return errors.rewrap(e, e.code, e.message, { extra: { ...e.extra, bytesWritten: written }, cause: e.cause });
  }
  return e;
}
