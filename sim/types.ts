/** Options, statistics and the bounded command log of a simulated VM. */
import { summarizeArgs, type QObj } from './qobject.js';

export interface SimVmOptions {
  name: string;
  /** qemu-ga version to imitate (default 10.0.0) */
  version?: string;
  /** commands disabled by the guest admin, as with `qemu-ga -b` */
  disabled?: string[];
  /** commands this agent build lacks (absent from guest-info from 9.1, disabled before) */
  lacks?: string[];
  /** listen on 127.0.0.1:<ephemeral> instead of <dir>/<name>.sock */
  tcp?: boolean;
  /** the unix socket's path instead of <dir>/<name>.sock (e.g. Proxmox's <vmid>.qga) */
  socketPath?: string;
  /** start with filesystems frozen */
  frozen?: boolean;
  hostname?: string;
  /** multiplies simulated durations (exec of /bin/sleep, reboot); default 1 */
  timeScale?: number;
  /** how long after guest-shutdown the VM goes away, ms (default 100) */
  shutdownDelayMs?: number;
  /** how long a guest reboot keeps the agent away, ms before timeScale (default 1000) */
  rebootMs?: number;
  /** override the version's exec-status truncation-flag behaviour */
  execTruncatedFlags?: 'fixed' | 'buggy';
}

export interface CommandLogEntry {
  command: string;
  args: unknown;
  at: number;
}

export interface SimStats {
  /** connections accepted since start */
  connections: number;
  /** most requests received but not yet finished at any moment (pipelining depth) */
  maxConcurrentCommands: number;
  /** the last COMMAND_LOG_MAX requests, oldest first (long strings and passwords elided) */
  commandLog: CommandLogEntry[];
  openHandles: number;
  execRecords: number;
  frozen: boolean;
  connected: boolean;
  waitingClients: number;
  /** reply bytes waiting for a client */
  pendingOutputBytes: number;
  queuedRequests: number;
}

const COMMAND_LOG_MAX = 10_000;

/** A ring of the last COMMAND_LOG_MAX requests, with long strings and passwords elided. */
export class CommandLog {
  private items: CommandLogEntry[] = [];
  private head = 0;

  record(command: string, req: QObj): void {
    const args = req.t === 'dict' ? summarizeArgs(req.v.get('arguments')) : null;
    const entry = { command, args, at: Date.now() };
    if (this.items.length < COMMAND_LOG_MAX) {
      this.items.push(entry);
    } else {
      this.items[this.head] = entry;
      this.head = (this.head + 1) % COMMAND_LOG_MAX;
    }
  }

  /** oldest first */
  entries(): CommandLogEntry[] {
    return [...this.items.slice(this.head), ...this.items.slice(0, this.head)];
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
