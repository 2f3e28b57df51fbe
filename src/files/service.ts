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
    opts: { mode: UploadMode; offset?: number; signal?: AbortSignal },
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
      const size = (await this.guest.seek(vm, handle, 0, SEEK_END, signal)).position;
      if (size !== 0) return size;
      // 0 is what /proc files say whatever they hold: a byte read tells them from an empty file
      await this.guest.seek(vm, handle, 0, SEEK_SET, signal);
      const r = await this.guest.read(vm, handle, 1, signal);
      return r.b64 === '' ? 0 : undefined;
    } catch (e) {
      if (isGatewayError(e) && e.code === 'AGENT_ERROR') return undefined;
      throw e;
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
