/**
 * The raw handle routes (POST …/files/handles, …/read, /write, /seek, /flush, DELETE): the QGA
 * commands nearly verbatim, plus bookkeeping the agent lacks — every handle opened here is
 * tracked per VM, counted against a per-VM cap, and closed by the reaper after an idle time.
 * A handle this gateway does not know (opened before a restart, say) may still be used; once the
 * agent accepts it, it is adopted and reaped like the others. A handle owned by a streaming
 * transfer is refused: interleaving raw reads with a download would corrupt both.
 */
import { errors } from '../errors.js';
import type { GuestFiles, ReadResult, Whence } from './guest.js';
import type { TrackedHandle } from './handles.js';

export interface RawLimits {
  maxHandlesPerVm: number;
  maxReadBytes: number;
  handleIdleMs: number;
}

export class RawHandles {
  constructor(
    private readonly files: GuestFiles,
    private readonly limits: RawLimits,
  ) {}

  async open(vm: string, path: string, mode = 'r'): Promise<number> {
    if (this.files.registry.count(vm, 'api') >= this.limits.maxHandlesPerVm) {
      throw errors.queueFull(vm, `${this.limits.maxHandlesPerVm} file handles are already open on this VM through the API; close some first`, { retryAfter: Math.ceil(this.limits.handleIdleMs / 1000) });
    }
    return this.files.open(vm, path, mode, 'api');
  }

  async read(vm: string, handle: number, count: number | undefined, signal?: AbortSignal): Promise<ReadResult> {
    const n = count ?? 4096;
    if (n > this.limits.maxReadBytes) {
      throw errors.validation(`count ${n} is above the per-call limit of ${this.limits.maxReadBytes} bytes (files.maxRawReadBytes); use GET …/files/content for large files`, {
        vm,
      });
    }
    return this.use(vm, handle, () => this.files.read(vm, handle, n, signal));
  }

  write(vm: string, handle: number, b64: string, count: number | undefined, signal?: AbortSignal): Promise<{ count: number; eof: boolean }> {
    return this.use(vm, handle, () => this.files.write(vm, handle, b64, count, signal));
  }

  seek(vm: string, handle: number, offset: number, whence: Whence, signal?: AbortSignal): Promise<{ position: number; eof: boolean }> {
    return this.use(vm, handle, () => this.files.seek(vm, handle, offset, whence, signal));
  }

  flush(vm: string, handle: number, signal?: AbortSignal): Promise<void> {
    return this.use(vm, handle, () => this.files.flush(vm, handle, signal));
  }

  async close(vm: string, handle: number): Promise<void> {
    this.checkOwner(vm, handle);
    if (!this.files.registry.get(vm, handle)) this.files.registry.add(vm, handle, { owner: 'api' });
    await this.files.close(vm, handle);
  }

  list(vm: string): Array<TrackedHandle & { expiresAt: number }> {
    return this.files.registry
      .list(vm)
      .filter((t) => t.owner === 'api')
      .map((t) => ({ ...t, expiresAt: t.lastUsedAt + this.limits.handleIdleMs }));
  }

  private async use<T>(vm: string, handle: number, op: () => Promise<T>): Promise<T> {
    this.checkOwner(vm, handle);
    const known = this.files.registry.get(vm, handle) !== undefined;
    const result = await op();
    if (!known && !this.files.registry.get(vm, handle)) this.files.registry.add(vm, handle, { owner: 'api' });
    return result;
  }

  private checkOwner(vm: string, handle: number): void {
    const t = this.files.registry.get(vm, handle);
    if (t && t.owner !== 'api') {
      throw errors.notFound(`file handle ${handle} belongs to a streaming transfer of this gateway`, { vm });
    }
  }
}
