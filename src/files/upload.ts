/**
 * Streaming upload: open → (seek for a resume) → write chunk by chunk → flush → close.
 * The body is consumed with for-await, so TCP backpressure holds the client while the agent is
 * behind; memory is one chunk buffer and two encoded chunks however large the file. Each chunk is its own
 * queued agent command, so other requests to the VM interleave with a long transfer.
 *
 * Modes: `truncate` opens "w" (create or empty the file), `append` opens "a". An `offset`
 * resumes an interrupted upload: the file is opened "r+" (it must exist; nothing is truncated,
 * QGA has no truncate) and writing starts at `offset`, which may not lie beyond its end.
 */
import { GatewayError, errors } from '../errors.js';
import { Base64Text } from '../qga/command-line.js';
import { SEEK_CUR, SEEK_END, SEEK_SET, type GuestFiles } from './guest.js';

export type UploadMode = 'truncate' | 'append';

export interface UploadOptions {
  /** default truncate; not with offset (a resume neither truncates nor appends) */
  mode?: UploadMode;
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
  if (opts.offset !== undefined && opts.mode !== undefined) {
    const why = opts.mode === 'append' ? 'appending always writes at the end' : 'a resume writes into the existing file from offset and truncates nothing';
    throw errors.validation(`offset cannot be combined with mode=${opts.mode}: ${why} (omit mode)`, { vm });
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
    // The chunk is encoded to base64 as soon as it is full (a Base64Text: the copy the write
    // carries, copied into the command line as it is; the one buffer refills at once), and up to
    // WRITE_AHEAD writes are sent: one runs in the agent while the next waits in the channel's
    // line, so the agent starts on it the moment it answers the first, while the next chunk fills
    // from the request. The channel runs them in
    // order; memory is one buffer and at most WRITE_AHEAD encoded chunks however large the file.
    const buf = Buffer.allocUnsafe(opts.chunkBytes);
    let fill = 0;
    let received = 0;
    const writes = new WriteWindow(files, vm, handle, signal, (n) => (written += n));
    // the socket is let go now and then between two writes (the ones out answered first), so
    // another tool waits behind a long upload about the VM's idle release at most
    const turns = files.socketTurns(vm);
    const send = async (b64: Base64Text, bytes: number): Promise<void> => {
      if (turns.due()) {
        await writes.settle();
        turns.letGo();
      }
      await writes.send(b64, bytes);
    };
    try {
      for await (const piece of body) {
        const data = typeof piece === 'string' ? Buffer.from(piece) : piece;
        received += data.length;
        if (opts.maxBytes > 0 && received > opts.maxBytes) {
          throw errors.tooLarge('upload', opts.maxBytes, 'files.maxUploadBytes', { vm });
        }
        let p = 0;
        while (p < data.length) {
          const n = data.copy(buf, fill, p);
          fill += n;
          p += n;
          if (fill === opts.chunkBytes) {
            await send(Base64Text.encode(buf, 0, fill), fill);
            fill = 0;
          }
        }
      }
      if (fill > 0) await send(Base64Text.encode(buf, 0, fill), fill);
    } finally {
      // Settle every write before anything else (success: flush after them; failure: `written` is final).
      await writes.settle().catch(() => undefined);
    }
    await writes.settle();
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

/** Writes sent ahead: one in the agent, one waiting behind it in the channel's line. */
export const WRITE_AHEAD = 2;

/**
 * The writes of one upload, in order, at most WRITE_AHEAD at a time. `onWritten` counts the
 * bytes the agent confirmed, in order and only up to the first failure, so the count is the
 * prefix of the file that is known to be written (the offset to resume at).
 */
class WriteWindow {
  private readonly out: Promise<void>[] = [];
  /** writes sent so far, to tell whether one was sent after a given one */
  private sentCount = 0;
  private failed = false;
  private error?: { e: unknown };

  constructor(
    private readonly files: GuestFiles,
    private readonly vm: string,
    private readonly handle: number,
    private readonly signal: AbortSignal | undefined,
    private readonly onWritten: (bytes: number) => void,
    private readonly ahead = WRITE_AHEAD,
  ) {}

  /** Send one encoded chunk of `bytes` bytes, first waiting while `ahead` writes are out. */
  async send(b64: Base64Text, bytes: number): Promise<void> {
    while (this.out.length >= this.ahead) {
      try {
        await this.out.shift();
      } catch (e) {
        this.error ??= { e };
        throw e;
      }
    }
    const seq = ++this.sentCount;
    const w = this.writeAll(b64, bytes, seq).then(
      () => {
        if (!this.failed) this.onWritten(bytes);
      },
      (e: unknown) => {
        this.failed = true;
        throw e;
      },
    );
    w.catch(() => undefined); // observed when its turn comes; never unhandled
    this.out.push(w);
  }

  /** Wait for every write sent; throws the first failure (again on every later call). */
  async settle(): Promise<void> {
    while (this.out.length > 0) {
      try {
        await this.out.shift();
      } catch (e) {
        this.error ??= { e };
      }
    }
    if (this.error) throw this.error.e;
  }

  /**
   * guest-file-write may write less than asked (fwrite); the rest is sent again, unless a later
   * chunk already went out (it would land before the rest): then the upload stops there, and
   * `bytesWritten` tells the caller where to resume.
   */
  private async writeAll(b64: Base64Text, bytes: number, seq: number): Promise<void> {
    let { count } = await this.files.write(this.vm, this.handle, b64, undefined, this.signal);
    while (count < bytes) {
      if (count <= 0) throw errors.agentError(this.vm, 'guest-file-write', 'the agent wrote nothing (disk full?)');
      if (this.sentCount > seq) {
        throw errors.agentError(this.vm, 'guest-file-write', `the agent wrote ${count} of ${bytes} bytes of a chunk (disk full?); resume at bytesWritten`);
      }
      const rest = Buffer.from(b64.text, 'base64');
      bytes -= count;
      b64 = Base64Text.encode(rest, count);
      ({ count } = await this.files.write(this.vm, this.handle, b64, undefined, this.signal));
    }
  }
}

/** Tell the caller how far the upload got, so it can resume with `offset`. */
function withProgress(e: unknown, written: number): unknown {
  if (e instanceof GatewayError && e.extra?.bytesWritten === undefined) {
    return errors.rewrap(e, e.code, e.message, { extra: { ...e.extra, bytesWritten: written }, cause: e.cause });
  }
  return e;
}
