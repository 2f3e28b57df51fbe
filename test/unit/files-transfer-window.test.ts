/**
 * The read-ahead of a download and the write window of an upload, against a fake GuestFiles
 * whose replies the test releases one by one: how many agent commands are out at once, that a
 * client that stops reading stops the reads, that nothing is read past the known length, that an
 * abort abandons the reads and closes the handle, and that bytesWritten is the confirmed prefix.
 */
import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { DownloadStream, READ_AHEAD } from '../../src/files/download.js';
import { SocketTurns, type GuestFiles, type ReadResult } from '../../src/files/guest.js';
import { upload, WRITE_AHEAD } from '../../src/files/upload.js';
import { errors, isGatewayError } from '../../src/errors.js';

const CHUNK = 4096;

interface Call {
  op: 'read' | 'write' | 'close' | 'open' | 'flush' | 'seek';
  count?: number;
  bytes?: number;
  settle?: (fail?: Error) => void;
  signal?: AbortSignal;
}

/** A fake agent file: reads and writes wait until the test settles them, oldest first. */
class FakeFiles {
  readonly calls: Call[] = [];
  /** bytes in the file (reads) / written so far (writes) */
  size = 0;
  pos = 0;
  written: Buffer[] = [];
  /** a write returns this count instead of all of it (once), to model a short fwrite */
  shortWrite?: number;
  maxOut = 0;
  /** socket sharing (GuestFiles.socketTurns): never due here; the sharing is tested in files-sim */
  socketTurns(): SocketTurns {
    return new SocketTurns(Infinity, () => undefined);
  }

  get out(): Call[] {
    return this.calls.filter((c) => c.settle !== undefined);
  }

  private track(): void {
    this.maxOut = Math.max(this.maxOut, this.out.filter((c) => c.op === 'read' || c.op === 'write').length);
  }

  read(_vm: string, _handle: number, count: number, signal?: AbortSignal): Promise<ReadResult> {
    return new Promise<ReadResult>((resolve, reject) => {
      const call: Call = { op: 'read', count, signal };
      call.settle = (fail) => {
        call.settle = undefined;
        if (fail) return reject(fail);
        const n = Math.max(0, Math.min(count, this.size - this.pos));
        const data = Buffer.alloc(n, (this.pos / CHUNK) & 0xff);
        this.pos += n;
        resolve({ count: n, b64: data.toString('base64'), eof: this.pos >= this.size });
      };
      signal?.addEventListener('abort', () => {
        if (call.settle) {
          call.settle = undefined;
          reject(new Error('aborted'));
        }
      });
      this.calls.push(call);
      this.track();
    });
  }

  write(_vm: string, _handle: number, b64: string, _count: number | undefined, signal?: AbortSignal): Promise<{ count: number; eof: boolean }> {
    return new Promise((resolve, reject) => {
      const data = Buffer.from(b64, 'base64');
      const call: Call = { op: 'write', bytes: data.length, signal };
      call.settle = (fail) => {
        call.settle = undefined;
        if (fail) return reject(fail);
        const n = this.shortWrite ?? data.length;
        this.shortWrite = undefined;
        this.written.push(data.subarray(0, n));
        resolve({ count: n, eof: false });
      };
      this.calls.push(call);
      this.track();
    });
  }

  async open(): Promise<number> {
    this.calls.push({ op: 'open' });
    return 7;
  }

  async flush(): Promise<void> {
    this.calls.push({ op: 'flush' });
  }

  async seek(): Promise<{ position: number; eof: boolean }> {
    this.calls.push({ op: 'seek' });
    return { position: Buffer.concat(this.written).length, eof: false };
  }

  async closeQuietly(): Promise<boolean> {
    this.calls.push({ op: 'close' });
    return true;
  }

  count(op: Call['op']): number {
    return this.calls.filter((c) => c.op === op).length;
  }

  /** Settle the oldest open read/write and let the stream react. */
  async settleNext(fail?: Error): Promise<void> {
    const c = this.out[0];
    if (!c?.settle) throw new Error('nothing to settle');
    c.settle(fail);
    await turns();
  }

  /** Settle whatever is open until nothing new is sent. */
  async drain(): Promise<void> {
    while (this.out.length > 0) await this.settleNext();
  }
}

/** Let promise chains and stream callbacks (nextTick, microtasks) run. */
async function turns(n = 10): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

const asFiles = (f: FakeFiles) => f as unknown as GuestFiles;

/** A client whose socket accepts `accept` writes, then stops taking data until released. */
function stalledClient(accept: number): { sink: Writable; got: () => number; release: () => void } {
  let got = 0;
  let held: (() => void)[] = [];
  let open = accept;
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      got += chunk.length;
      if (open > 0) {
        open--;
        cb();
      } else held.push(cb);
    },
  });
  return {
    sink,
    got: () => got,
    release: () => {
      open = Infinity;
      const h = held;
      held = [];
      for (const cb of h) cb();
    },
  };
}

describe('download read-ahead', () => {
  test(`${READ_AHEAD} reads are out while a chunk is handed on; a stalled client stops the reads; none past the length`, async () => {
    const f = new FakeFiles();
    f.size = 10 * CHUNK;
    const s = new DownloadStream(asFiles(f), 'vm', 7, 10 * CHUNK, CHUNK);
    const pre = s.prefetch();
    await turns();
    expect(f.count('read')).toBe(2); // the first read and one ahead, before the response starts
    await f.settleNext();
    await pre;
    // chunk 1 in hand: read 2 is in the agent, read 3 was sent behind it
    expect(f.count('read')).toBe(3);
    expect(s.readsInFlight).toBe(2);

    const client = stalledClient(1);
    s.pipe(client.sink);
    // settle every read the stream sends while the client takes nothing more
    await f.drain();
    const readsWhileStalled = f.count('read');
    // chunk 1 taken by the client, chunk 2 held in its write, chunk 3 in the stream's buffer,
    // reads 4 and 5 answered and waiting: nothing more until the client reads again
    expect(readsWhileStalled).toBe(5);
    expect(client.got()).toBe(2 * CHUNK);
    await turns();
    expect(f.count('read')).toBe(readsWhileStalled);

    client.release();
    const done = new Promise((r) => client.sink.once('finish', r));
    for (;;) {
      await turns();
      if (f.out.length === 0) break;
      await f.drain();
    }
    await done;
    expect(client.got()).toBe(10 * CHUNK);
    expect(f.count('read')).toBe(10); // exactly the length: no read past the end
    expect(f.maxOut).toBe(READ_AHEAD);
    expect(f.calls.at(-1)?.op).toBe('close');
    expect(f.count('close')).toBe(1);
  });

  test('size unknown: the reads sent past EOF are answered before the handle is closed', async () => {
    const f = new FakeFiles();
    f.size = 3 * CHUNK - 100;
    const s = new DownloadStream(asFiles(f), 'vm', 7, undefined, CHUNK);
    const pre = s.prefetch();
    await f.settleNext();
    await pre;
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    const ended = new Promise((r) => s.once('end', r));
    for (;;) {
      await turns();
      if (f.out.length === 0) break;
      await f.drain();
    }
    await ended;
    expect(Buffer.concat(chunks).length).toBe(3 * CHUNK - 100);
    const ops = f.calls.map((c) => c.op);
    expect(ops.filter((o) => o === 'read').length).toBe(4); // 3 with data (the last one EOF) + 1 sent ahead
    expect(ops.at(-1)).toBe('close');
    expect(ops.lastIndexOf('read')).toBeLessThan(ops.indexOf('close'));
  });

  test('destroyed mid-way (client gone): the reads out are abandoned and the handle closed once', async () => {
    const f = new FakeFiles();
    f.size = 100 * CHUNK;
    const s = new DownloadStream(asFiles(f), 'vm', 7, 100 * CHUNK, CHUNK);
    const pre = s.prefetch();
    await f.settleNext();
    await pre;
    s.resume();
    await f.settleNext();
    await f.settleNext();
    expect(f.out.length).toBe(READ_AHEAD);
    const signals = f.out.map((c) => c.signal);
    const closed = new Promise((r) => s.once('close', r));
    s.destroy();
    await closed;
    expect(signals.every((sig) => sig?.aborted)).toBe(true);
    expect(f.out.length).toBe(0);
    expect(f.count('close')).toBe(1);
    const reads = f.count('read');
    await turns();
    expect(f.count('read')).toBe(reads);
    expect(reads).toBe(5);
  });
});

async function* pieces(total: number, size: number): AsyncGenerator<Buffer> {
  for (let off = 0; off < total; off += size) yield Buffer.alloc(Math.min(size, total - off), (off / CHUNK) & 0xff);
}

describe('upload write window', () => {
  test(`${WRITE_AHEAD} writes out at most, in order; the body is read while they run; the file is exact`, async () => {
    const f = new FakeFiles();
    const total = 10 * CHUNK + 123;
    const p = upload(asFiles(f), 'vm', '/x', pieces(total, 1000), { mode: 'truncate', chunkBytes: CHUNK, maxBytes: 0 });
    await turns();
    // two chunks encoded and sent; the third is being filled, waiting for a free slot
    expect(f.count('write')).toBe(WRITE_AHEAD);
    for (;;) {
      await turns();
      if (f.out.length === 0) break;
      await f.drain();
    }
    const r = await p;
    expect(r.bytesWritten).toBe(total);
    expect(f.maxOut).toBe(WRITE_AHEAD);
    expect(f.count('write')).toBe(11);
    expect(Buffer.concat(f.written).equals(Buffer.concat(await collect(pieces(total, 1000))))).toBe(true);
    expect(f.calls.slice(-3).map((c) => c.op)).toEqual(['flush', 'seek', 'close']);
  });

  test('a write that fails: bytesWritten counts only the chunks before it, even if the one after it succeeded', async () => {
    const f = new FakeFiles();
    const p = upload(asFiles(f), 'vm', '/x', pieces(6 * CHUNK, CHUNK), { mode: 'truncate', chunkBytes: CHUNK, maxBytes: 0 });
    p.catch(() => undefined);
    await turns();
    await f.settleNext(); // chunk 1 written
    expect(f.count('write')).toBe(3);
    await f.settleNext(errors.agentError('vm', 'guest-file-write', 'No space left on device')); // chunk 2 fails
    await f.drain(); // chunk 3, already sent, succeeds
    const e = await p.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isGatewayError(e) && e.code).toBe('AGENT_ERROR');
    expect(isGatewayError(e) && e.extra?.bytesWritten).toBe(CHUNK);
    expect(f.count('write')).toBe(3);
    expect(f.count('flush')).toBe(0);
    expect(f.calls.at(-1)?.op).toBe('close');
  });

  test('a short write with the next chunk already sent stops the upload at the confirmed prefix', async () => {
    const f = new FakeFiles();
    const p = upload(asFiles(f), 'vm', '/x', pieces(4 * CHUNK, CHUNK), { mode: 'truncate', chunkBytes: CHUNK, maxBytes: 0 });
    p.catch(() => undefined);
    await turns();
    f.shortWrite = 100;
    await f.settleNext(); // chunk 1: 100 of 4096 bytes, chunk 2 already out
    await f.drain();
    const e = await p.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isGatewayError(e) && e.code).toBe('AGENT_ERROR');
    expect(isGatewayError(e) && e.extra?.bytesWritten).toBe(0);
    expect(f.count('write')).toBe(2);
  });

  test('a short write of the last chunk: the rest is sent again and the upload completes', async () => {
    const f = new FakeFiles();
    const p = upload(asFiles(f), 'vm', '/x', pieces(CHUNK + 500, CHUNK + 500), { mode: 'truncate', chunkBytes: 2 * CHUNK, maxBytes: 0 });
    await turns();
    f.shortWrite = 200;
    await f.settleNext();
    await f.drain();
    const r = await p;
    expect(r.bytesWritten).toBe(CHUNK + 500);
    expect(f.calls.filter((c) => c.op === 'write').map((c) => c.bytes)).toEqual([CHUNK + 500, CHUNK + 300]);
    expect(Buffer.concat(f.written).length).toBe(CHUNK + 500);
  });
});

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return out;
}

describe('download prefetch failure', () => {
  test('the first read fails: the read sent ahead is abandoned (its signal aborted), the error reaches the caller', async () => {
    const f = new FakeFiles();
    f.size = 10 * CHUNK;
    const s = new DownloadStream(asFiles(f), 'vm', 7, 10 * CHUNK, CHUNK);
    const pre = s.prefetch().then(
      () => undefined,
      (e: unknown) => e,
    );
    await turns();
    expect(f.count('read')).toBe(2);
    const ahead = f.out[1];
    await f.settleNext(errors.agentError('vm', 'guest-file-read', 'Is a directory'));
    const e = await pre;
    expect(isGatewayError(e) && e.message).toBe('Is a directory');
    expect(ahead.signal?.aborted).toBe(true);
    expect(f.out.length).toBe(0);
    expect(f.count('read')).toBe(2);
  });
});
