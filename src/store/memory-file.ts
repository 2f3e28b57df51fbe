/**
 * The embedded store's state file: the whole state as JSON, written to a temp file and renamed in.
 * StateFile.write() makes the changes of one event-loop turn ONE write at its end
 * (util/turn-end.ts): the file holds every tombstone (up to MemoryStore's maxEndedLeases), so a
 * write can take milliseconds of the event loop (~5 ms with 10,000 measured here), and a backup
 * system freezing and thawing many VMs at once must not pay that once per call.
 */
import { accessSync, constants, existsSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import type { Config } from '../config/schema.js';
import { errors } from '../errors.js';
import { atTurnEnd } from '../util/turn-end.js';
import { errorMessage } from '../util/unknown.js';
import type { EndedRecord, Lease, VmRegistration } from './types.js';

export interface Snapshot {
  epoch: string;
  lastFence: number;
  sessions: Lease[];
  locks: Array<[string, { session: string; leaseId: string }]>;
  deadlines: Array<[string, number]>;
  idem: Array<[string, { session: string; leaseId: string; keys?: string; forgetAt: number }]>;
  vms: VmRegistration[];
  /** tombstones, oldest first; absent in files written before they existed */
  ended?: Array<[string, EndedRecord]>;
}

export function writeSnapshot(file: string, snap: Snapshot): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, JSON.stringify(snap), { mode: 0o600 });
    // rename is atomic: a crash leaves the old state or the new one, never half of either
    renameSync(tmp, file);
  } catch (e) {
    throw errors.storeUnavailable(`cannot write the lease state file ${file}: ${errorMessage(e)}`, { cause: e });
  }
}

/**
 * The state file, read and checked. A file that cannot be read, is not JSON, or does not have the
 * shape of a snapshot (an empty or truncated file, `{}`, a directory) throws one line naming it:
 * the gateway must not start without the leases it holds, or the guests they froze would stay
 * frozen with nothing left to thaw them.
 */
export function readSnapshot(file: string): Snapshot {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw damaged(file, `cannot be read: ${errorMessage(e)}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw damaged(file, text.trim() === '' ? 'it is empty' : `not JSON: ${errorMessage(e)}`);
  }
  const why = shapeProblem(v);
  if (why !== undefined) throw damaged(file, why);
  return v as Snapshot;
}

/**
 * What keeps the embedded store from its state file, in one line naming it (serve refuses to
 * start, check-config to pass): a path it cannot write or a file it cannot load. Undefined when all is well, and with Redis (which keeps the leases).
 */
export function stateFileProblems(config: Config): string | undefined {
  if (config.store.type !== 'memory' || config.freeze.stateFile === undefined) return undefined;
  return writeProblem(config.freeze.stateFile) ?? contentProblem(config.freeze.stateFile);
}

/**
 * Whether the state file can be written where it is configured: its directory is created (as a
 * write does, 0700) and a probe file written and removed next to it (a write makes a temp file
 * and renames it in). The one-line problem naming the path and the OS error, or undefined.
 */
function writeProblem(file: string): string | undefined {
  const probe = `${file}.${process.pid}.probe`;
  try {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    } catch (e) {
      // mkdir -p says EEXIST when a component is a file: what the operator needs is ENOTDIR
      if (e instanceof Error && 'code' in e && e.code === 'EEXIST') return `cannot write the freeze lease state file ${file} (freeze.stateFile): ENOTDIR: ${dirname(file)} is not a directory`;
      throw e;
    }
    writeFileSync(probe, '', { mode: 0o600 });
    unlinkSync(probe);
    if (existsSync(file)) accessSync(file, constants.R_OK);
    return undefined;
  } catch (e) {
    return `cannot write the freeze lease state file ${file} (freeze.stateFile): ${errorMessage(e)}`;
  }
}

/** Why the state file cannot be loaded, or undefined when it loads or does not exist yet. */
function contentProblem(file: string): string | undefined {
  if (!existsSync(file)) return undefined;
  try {
    readSnapshot(file);
    return undefined;
  } catch (e) {
    return errorMessage(e);
  }
}

function damaged(file: string, why: string): Error {
  return new Error(
    `the freeze lease state file ${file} (freeze.stateFile) ${why.startsWith('cannot') ? why : `is damaged: ${why}`}; the gateway does not start without the leases ` +
      'it holds (the guests they froze would stay frozen). Restore the file, or move it aside to start without them: then GET /v1/freezes ' +
      'lists the guests still frozen as owner "external", to thaw with force=true (or freeze.externalThawAfterMs)',
  );
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function shapeProblem(v: unknown): string | undefined {
  if (!isObj(v)) return 'not a JSON object';
  if (typeof v.epoch !== 'string') return '"epoch" is missing or not a string';
  if (typeof v.lastFence !== 'number' || !Number.isFinite(v.lastFence)) return '"lastFence" is missing or not a number';
  for (const k of ['sessions', 'locks', 'deadlines', 'idem', 'vms'] as const) if (!Array.isArray(v[k])) return `"${k}" is missing or not a list`;
  if (v.ended !== undefined && !Array.isArray(v.ended)) return '"ended" is not a list';
  const sessions = v.sessions as unknown[];
  const bad = sessions.findIndex((l) => !isObj(l) || typeof l.session !== 'string' || typeof l.leaseId !== 'string' || typeof l.expiresAt !== 'number' || !Array.isArray(l.keys));
  if (bad >= 0) return `sessions[${bad}] is not a lease`;
  for (const k of ['locks', 'deadlines', 'idem', 'ended'] as const) {
    const list = (v[k] ?? []) as unknown[];
    const i = list.findIndex((e) => !Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string');
    if (i >= 0) return `${k}[${i}] is not a [key, value] pair`;
  }
  return undefined;
}

/**
 * Take the state file for this process: `<file>.lock` holds the pid of the gateway using it. Two
 * processes on one state file would overwrite each other's leases (each writes its whole state),
 * and a guest frozen under a lease the other one overwrote would never be thawed. A lock whose
 * process is gone (killed) is taken over. Returns the release (also run at process exit).
 */
export function lockStateFile(file: string): () => void {
  const lock = `${file}.lock`;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(lock, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if (!(e instanceof Error && 'code' in e && e.code === 'EEXIST') || attempt > 0) throw new Error(`cannot take the freeze lease state file ${file} (freeze.stateFile): ${errorMessage(e)}`);
      const pid = Number.parseInt(readFileSync(lock, 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && holdsLock(pid, lock)) {
        throw new Error(
          `the freeze lease state file ${file} (freeze.stateFile) is in use by another gateway process (pid ${pid}, ${lock}): two processes on one state file ` +
            'overwrite each other\'s leases. Give each its own freeze.stateFile, or share leases through Redis (store.type redis)',
        );
      }
      unlinkSync(lock);
    }
  }
  let held = true;
  const release = (): void => {
    if (!held) return;
    held = false;
    process.off('exit', release);
    try {
      if (Number.parseInt(readFileSync(lock, 'utf8'), 10) === process.pid) unlinkSync(lock);
    } catch {
      // gone already
    }
  };
  process.on('exit', release);
  return release;
}

/**
 * Whether process `pid` may still be the gateway that wrote `lock`: alive, and not obviously
 * another process that got its pid later — a lock written before this boot is stale whoever has
 * the pid now (a state directory kept across a reboot), and so is one whose pid now runs something
 * that is not node (Linux: /proc/<pid>/cmdline).
 */
function holdsLock(pid: number, lock: string): boolean {
  if (!alive(pid)) return false;
  try {
    const bootedAt = Date.now() - os.uptime() * 1000;
    if (statSync(lock).mtimeMs < bootedAt - 1_000) return false;
  } catch {
    // cannot tell: keep it
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!/node|qga-gateway/.test(cmdline)) return false;
  } catch {
    // no /proc (not Linux) or not readable: alive is all we know
  }
  return true;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, owned by someone else
    return e instanceof Error && 'code' in e && e.code === 'EPERM';
  }
}

export class StateFile {
  /** the write that will carry the changes made since the last one */
  private pending: { written: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | undefined;

  constructor(
    readonly path: string,
    private readonly snapshot: () => Snapshot,
  ) {}

  /**
   * A change was made: settles once the file holds it (a write at the end of this turn, shared by
   * every change of the turn). Rejects (STORE_UNAVAILABLE) if that write fails.
   */
  write(): Promise<void> {
    if (this.pending === undefined) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const written = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.pending = { written, resolve, reject };
      atTurnEnd(this.writePending, undefined, undefined);
    }
    return this.pending.written;
  }

  /** The pending write, now (at the end of its turn, or when the store closes). */
  readonly writePending = (): void => {
    const w = this.pending;
    if (w === undefined) return;
    this.pending = undefined;
    try {
      writeSnapshot(this.path, this.snapshot());
    } catch (e) {
      w.reject(e);
      return;
    }
    w.resolve();
  };
}
