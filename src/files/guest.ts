/**
 * The guest-file-* commands with handle bookkeeping. Every handle opened here is registered
 * before anything else can fail, and every close goes through `close`/`closeQuietly`, which run
 * with their own timeout and never with a caller's abort signal: a close must still happen when
 * the caller that needed the handle is gone.
 *
 * `guest-file-open` is sent without the caller's signal too: an open abandoned in flight would
 * leave a handle in the agent whose number nobody ever learns.
 */
import { isGatewayError, errors } from '../errors.js';
import type { JsonObject, JsonValue } from '../qga/types.js';
import type { Base64Text } from '../qga/command-line.js';
import type { AgentCaller, SocketSharing } from '../agent/service.js';
import { mapFileError } from './errors.js';
import { HandleRegistry, type HandleOwner } from './handles.js';
import { VM_GONE_GRACE_MS } from '../registry/types.js';

export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export type Whence = typeof SEEK_SET | typeof SEEK_CUR | typeof SEEK_END;

export interface FilesLogger {
  warn(obj: object, msg: string): void;
}

export interface ReadResult {
  count: number;
  b64: string;
  eof: boolean;
}

export class GuestFiles {
  /** bytes read from and written to guest files through this gateway (qga_transfer_bytes_total) */
  readonly transferred = { download: 0, upload: 0 };
  readonly registry = new HandleRegistry();
  private reaperTimer?: NodeJS.Timeout;
  private reaping = false;

  constructor(
    private readonly agent: AgentCaller & Partial<SocketSharing>,
    private readonly opts: { closeTimeoutMs: number; handleIdleMs: number; reaperIntervalMs: number },
    private readonly log?: FilesLogger,
  ) {}

  /**
   * A long transfer's turns on the VM's socket: it lets the socket go every idle release of the VM
   * (the longest another tool should wait behind the gateway), between two of its commands once the
   * ones out are answered; never when the VM never releases its socket (or the agent cannot say).
   */
  socketTurns(vm: string): SocketTurns {
    const every = this.agent.idleReleaseMsOf?.(vm) ?? 0;
    return new SocketTurns(every > 0 ? every : Infinity, () => void this.agent.yieldSocket?.(vm));
  }

  async open(vm: string, path: string, mode: string, owner: HandleOwner): Promise<number> {
    let reply: JsonValue;
    try {
      reply = await this.agent.call(vm, 'guest-file-open', { path, mode });
    } catch (e) {
      throw mapFileError(e, { vm, path });
    }
    if (typeof reply !== 'number' || !Number.isSafeInteger(reply)) {
      throw errors.unexpectedReply(vm, 'guest-file-open', 'no handle');
    }
    this.registry.add(vm, reply, { owner, path, mode });
    return reply;
  }

  async read(vm: string, handle: number, count: number, signal?: AbortSignal): Promise<ReadResult> {
    const r = await this.on(vm, handle, 'guest-file-read', { handle, count }, signal);
    const b64 = r['buf-b64'];
    if (typeof r.count !== 'number' || typeof b64 !== 'string' || typeof r.eof !== 'boolean') {
      throw errors.unexpectedReply(vm, 'guest-file-read', 'an unexpected reply');
    }
    this.transferred.download += r.count;
    return { count: r.count, b64, eof: r.eof };
  }

  async write(vm: string, handle: number, b64: string | Base64Text, count: number | undefined, signal?: AbortSignal): Promise<{ count: number; eof: boolean }> {
    // a Base64Text travels as an opaque argument: the command writer copies its bytes as they are, any other writer gets its string (toJSON)
    const args: JsonObject = { handle, 'buf-b64': b64 as JsonValue };
    if (count !== undefined) args.count = count;
    const r = await this.on(vm, handle, 'guest-file-write', args, signal);
    if (typeof r.count !== 'number') {
      throw errors.unexpectedReply(vm, 'guest-file-write', 'no count');
    }
    this.transferred.upload += r.count;
    return { count: r.count, eof: r.eof === true };
  }

  async seek(vm: string, handle: number, offset: number, whence: Whence, signal?: AbortSignal): Promise<{ position: number; eof: boolean }> {
    // Numeric whence: the symbolic names only exist since QGA 2.6, the numbers always did.
    const r = await this.on(vm, handle, 'guest-file-seek', { handle, offset, whence }, signal);
    const pos = r.position;
    if (typeof pos !== 'number' && typeof pos !== 'bigint') {
      throw errors.unexpectedReply(vm, 'guest-file-seek', 'no position');
    }
    return { position: Number(pos), eof: r.eof === true };
  }

  async flush(vm: string, handle: number, signal?: AbortSignal): Promise<void> {
    await this.on(vm, handle, 'guest-file-flush', { handle }, signal);
  }

  /** Close and forget the handle; throws the agent's error (a handle it does not know is forgotten too). */
  async close(vm: string, handle: number): Promise<void> {
    this.registry.begin(vm, handle);
    try {
      await this.agent.call(vm, 'guest-file-close', { handle }, { timeoutMs: this.opts.closeTimeoutMs });
      this.registry.remove(vm, handle);
    } catch (e) {
      const mapped = mapFileError(e, { vm, handle });
      const t = this.registry.get(vm, handle);
      const now = Date.now();
      if (isGatewayError(mapped) && mapped.code === 'VM_NOT_FOUND' && t !== undefined && now - (t.vmGoneSince ??= now) < VM_GONE_GRACE_MS) {
        // the VM may come back with the same agent, which still holds the handle: the reaper tries again
        t.closeFailed = true;
      } else if (isGatewayError(mapped) && (mapped.code === 'NOT_FOUND' || mapped.code === 'VM_NOT_FOUND')) {
        this.registry.remove(vm, handle);
      } else if (t) {
        t.closeFailed = true;
      }
      throw mapped;
    } finally {
      this.registry.end(vm, handle);
    }
  }

  /** Close on a cleanup path: never throws; a failed close is left to the reaper. */
  async closeQuietly(vm: string, handle: number): Promise<boolean> {
    try {
      await this.close(vm, handle);
      return true;
    } catch (e) {
      if (this.registry.get(vm, handle)) this.log?.warn({ vm, handle, err: e }, 'files: close failed; the reaper will retry');
      return false;
    }
  }

  startReaper(): void {
    if (this.reaperTimer) return;
    this.reaperTimer = setInterval(() => void this.reapOnce(), this.opts.reaperIntervalMs);
    this.reaperTimer.unref();
  }

  stop(): void {
    if (this.reaperTimer) clearInterval(this.reaperTimer);
    this.reaperTimer = undefined;
  }

  /**
   * At shutdown: close what the API opened (nobody could close or reap it after a restart) and
   * retry failed closes, within one close deadline. Transfers close their own handles.
   */
  async shutdown(): Promise<void> {
    this.stop();
    const open = this.registry.due(0).filter((t) => t.owner === 'api' || t.closeFailed);
    if (open.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((r) => (timer = setTimeout(r, this.opts.closeTimeoutMs)));
    await Promise.race([Promise.all(open.map((t) => this.closeQuietly(t.vm, t.handle))), deadline]);
    clearTimeout(timer);
  }

  /** Close idle raw handles and retry failed closes (one pass; exported for tests). */
  async reapOnce(): Promise<number> {
    if (this.reaping) return 0;
    this.reaping = true;
    try {
      const due = this.registry.due(this.opts.handleIdleMs);
      const closed = await Promise.all(due.map((t) => this.closeQuietly(t.vm, t.handle)));
      return closed.filter(Boolean).length;
    } finally {
      this.reaping = false;
    }
  }

  /** Run a command on an open handle, marking it busy so the reaper leaves it alone. */
  private async on(vm: string, handle: number, command: string, args: JsonObject, signal?: AbortSignal): Promise<JsonObject> {
    this.registry.begin(vm, handle);
    try {
      const r = await this.agent.call(vm, command, args, signal ? { signal } : undefined);
      if (typeof r !== 'object' || r === null || Array.isArray(r)) {
        throw errors.unexpectedReply(vm, command, 'an unexpected reply');
      }
      return r;
    } catch (e) {
      const mapped = mapFileError(e, { vm, handle });
      if (isGatewayError(mapped) && mapped.code === 'NOT_FOUND') this.registry.remove(vm, handle);
      throw mapped;
    } finally {
      this.registry.end(vm, handle);
    }
  }
}

/** When a transfer lets the VM's socket go (GuestFiles.socketTurns): due() every `everyMs`, then letGo(). */
export class SocketTurns {
  private dueAt: number;

  constructor(
    private readonly everyMs: number,
    private readonly yieldSocket: () => void,
  ) {
    this.dueAt = performance.now() + everyMs;
  }

  due(): boolean {
    return performance.now() >= this.dueAt;
  }

  /** let the socket go now (the transfer's commands out are answered); the next turn is due `everyMs` from now */
  letGo(): void {
    this.yieldSocket();
    this.dueAt = performance.now() + this.everyMs;
  }
}
