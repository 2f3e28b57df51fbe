/**
 * The leases a Redis-backed gateway process holds (the ones its local timers thaw), kept in a small
 * file beside its state file: `<freeze.stateFile>.held`. Redis is where leases live; this file is
 * for one case it cannot cover: Redis loses its data (restarted without persistence, a failover to
 * a replica behind) AND the process that held a lease restarts before its deadline. Before this
 * file the lease was then nowhere, and its guest stayed frozen with no deadline (h10 F1). At start
 * the process reads what it held: a lease the store still has is the store's (sweeper, holder); one
 * the store ended (its tombstone) or replaced is done; one the store does not know at all gets its
 * local timer back and is thawed at its deadline (at once if it passed), as it would have been had
 * the process not restarted.
 *
 * Best effort: the store stays the truth and nothing waits for this file. It is written at the end
 * of the turn that changed the held leases (a temp file renamed in), by one process at a time (the
 * `.lock` of the embedded store's state file: a second process on the same state file keeps no
 * journal, and says so once); a write that fails is logged once, not refused.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { atTurnEnd } from '../util/turn-end.js';
import { errorMessage } from '../util/unknown.js';
import { lockStateFile } from '../store/memory-file.js';
import type { Lease } from '../store/types.js';
import type { FreezeLogger as Logger } from './types.js';

const VERSION = 1;

export class HeldJournal {
  private releaseLock?: () => void;
  private enabled = false;
  private pending = false;
  private failing = false;

  constructor(
    readonly file: string,
    private readonly logger: Logger,
    /** the leases held now (ThawEngine's local timers) */
    private readonly held: () => Lease[],
  ) {}

  /** Take the journal (one process at a time) and read what the last process on it held; [] when it cannot. */
  open(): Lease[] {
    try {
      this.releaseLock = lockStateFile(this.file);
    } catch (e) {
      this.logger.warn({ file: this.file, err: errorMessage(e) }, 'freeze: no journal of held leases (another process keeps it, or it cannot be written): a lease Redis loses while this process restarts would not be thawed by it');
      return [];
    }
    this.enabled = true;
    if (!existsSync(this.file)) return [];
    try {
      const doc = JSON.parse(readFileSync(this.file, 'utf8')) as { version?: unknown; leases?: unknown };
      if (doc.version !== VERSION || !Array.isArray(doc.leases)) throw new Error('not a journal of held leases');
      return doc.leases.filter(isLease);
    } catch (e) {
      this.logger.warn({ file: this.file, err: errorMessage(e) }, 'freeze: the journal of held leases cannot be read; ignored');
      return [];
    }
  }

  /** The held leases changed: written at the end of this turn. */
  changed(): void {
    if (!this.enabled || this.pending) return;
    this.pending = true;
    atTurnEnd(this.write, undefined, undefined);
  }

  private readonly write = (): void => {
    this.pending = false;
    if (!this.enabled) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify({ version: VERSION, leases: this.held() }), { mode: 0o600 });
      renameSync(tmp, this.file);
      if (this.failing) this.logger.info({ file: this.file }, 'freeze: the journal of held leases is written again');
      this.failing = false;
    } catch (e) {
      if (!this.failing) this.logger.error({ file: this.file, err: errorMessage(e) }, 'freeze: cannot write the journal of held leases (retried at the next change)');
      this.failing = true;
    }
  };

  /** Stop writing (shutdown) and let another process take the journal. */
  close(): void {
    this.enabled = false;
    this.releaseLock?.();
    this.releaseLock = undefined;
  }
}

function isLease(v: unknown): v is Lease {
  const l = v as Partial<Lease> | null;
  return (
    typeof l === 'object' && l !== null && typeof l.session === 'string' && typeof l.leaseId === 'string' && typeof l.owner === 'string' &&
    Number.isFinite(l.expiresAt) && Array.isArray(l.keys)
  );
}
