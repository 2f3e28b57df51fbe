/**
 * FilesService: whole-file streaming (download with Range, upload with truncate/append/resume)
 * and the raw handle API, over one GuestFiles that tracks every handle the gateway opens.
 */
import type { Config } from '../config/schema.js';
import type { AgentCaller } from '../agent/service.js';
import { planDownload, type DownloadPlan } from './download.js';
import { isGatewayError } from '../errors.js';
import { GuestFiles, SEEK_END, SEEK_SET, type FilesLogger } from './guest.js';
import { RawHandles } from './raw.js';
import { upload, type UploadMode, type UploadResult } from './upload.js';

export type FilesSettings = Config['files'];

/** The agent reads at most 48 MB per guest-file-read. */
const AGENT_MAX_READ = 48 * 1000 * 1000;

export class FilesService {
  readonly guest: GuestFiles;
  readonly raw: RawHandles;
  private readonly readChunk: number;

  /**
   * @param maxReplyBytes the channel's reply cap: a read chunk's base64 reply must fit in it,
   *   or every chunk would be dropped as oversized.
   */
  constructor(
    agent: AgentCaller,
    readonly settings: FilesSettings,
    maxReplyBytes: number,
    log?: FilesLogger,
  ) {
    const handleIdleMs = settings.handleIdleSeconds * 1000;
    this.guest = new GuestFiles(agent, { closeTimeoutMs: settings.closeTimeoutMs, handleIdleMs, reaperIntervalMs: settings.handleReaperIntervalMs }, log);
    this.raw = new RawHandles(this.guest, { maxHandlesPerVm: settings.maxHandlesPerVm, maxReadBytes: settings.maxRawReadBytes, handleIdleMs });
    const fitsReply = Math.floor(((maxReplyBytes - 4096) * 3) / 4);
    this.readChunk = Math.max(4096, Math.min(settings.readChunkBytes, AGENT_MAX_READ, fitsReply));
  }

  download(vm: string, path: string, range: string | undefined, signal?: AbortSignal): Promise<DownloadPlan> {
    return planDownload(this.guest, vm, path, range, this.readChunk, signal);
  }

  upload(
    vm: string,
    path: string,
    body: AsyncIterable<Buffer | string>,
    opts: { mode?: UploadMode; offset?: number; signal?: AbortSignal },
  ): Promise<UploadResult> {
    return upload(this.guest, vm, path, body, {
      ...opts,
      chunkBytes: this.settings.writeChunkBytes,
      maxBytes: this.settings.maxUploadBytes,
    });
  }

  /** The file's size (for HEAD and upload resumes); undefined when it cannot be seeked. */
  async size(vm: string, path: string, signal?: AbortSignal): Promise<number | undefined> {
    const handle = await this.guest.open(vm, path, 'r', 'transfer');
    try {
      let size: number;
      try {
        size = (await this.guest.seek(vm, handle, 0, SEEK_END, signal)).position;
      } catch (e) {
        // not seekable (a pipe): no size
        if (isGatewayError(e) && e.code === 'AGENT_ERROR') return undefined;
        throw e;
      }
      // 0 is what /proc files say whatever they hold, and a directory's end is past any file's (2^63
      // - 1 on Linux): one byte read tells them apart from an empty or a huge file, and a directory's
      // read fails as GET's does (422 "Is a directory"), instead of a Content-Length of 9.2e18
      if (size !== 0 && size <= Number.MAX_SAFE_INTEGER) return size;
      await this.guest.seek(vm, handle, 0, SEEK_SET, signal);
      const r = await this.guest.read(vm, handle, 1, signal);
      return size !== 0 ? size : r.b64 === '' ? 0 : undefined;
    } finally {
      await this.guest.closeQuietly(vm, handle);
    }
  }

  startReaper(): void {
    this.guest.startReaper();
  }

  /** Stop the reaper and close the handles opened through the API. */
  stop(): Promise<void> {
    return this.guest.shutdown();
  }
}
