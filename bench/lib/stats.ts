/** Latency samples and the few statistics the scale benchmarks print. */

/** A bounded sample of latencies in milliseconds (keeps the first `cap`, counts the rest). */
export class Latencies {
  private readonly buf: Float64Array;
  private n = 0;
  count = 0;

  constructor(cap = 1_000_000) {
    this.buf = new Float64Array(cap);
  }

  add(ms: number): void {
    this.count++;
    if (this.n < this.buf.length) this.buf[this.n++] = ms;
  }

  addAll(other: Latencies | number[]): void {
    for (const v of other instanceof Latencies ? other.values() : other) this.add(v);
  }

  values(): Float64Array {
    return this.buf.subarray(0, this.n);
  }

  /** q in [0, 1]; NaN when empty */
  quantile(q: number): number {
    return quantile(this.values(), q);
  }
}

export function quantile(xs: ArrayLike<number>, q: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = Float64Array.from(xs).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** milliseconds → "123 µs" / "1.23 ms" */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a';
  return ms < 1 ? `${Math.round(ms * 1000)} µs` : `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
}

export function fmtRate(perSec: number): string {
  if (!Number.isFinite(perSec)) return 'n/a';
  return perSec >= 100 ? Math.round(perSec).toLocaleString('en-US') : perSec.toFixed(1);
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? r.toFixed(2) : 'n/a';
}

export function table(head: string[], rows: Array<Array<string | number>>): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Resident set size of a process in bytes, from /proc (Linux); undefined when unreadable. */
export async function rssOf(pid: number): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat; NaN if unreadable. */
export async function cpuSecondsOf(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesised command name; utime and stime are the 12th and 13th of them
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return Number.NaN;
  }
}

/** Busy fraction of one core over an interval, for this process and others (by pid). */
export class CpuMeter {
  private t0 = 0;
  private self0 = process.cpuUsage();
  private others0: number[] = [];

  constructor(private readonly pids: number[]) {}

  async start(): Promise<void> {
    this.others0 = await Promise.all(this.pids.map(cpuSecondsOf));
    this.self0 = process.cpuUsage();
    this.t0 = performance.now();
  }

  /** [this process, ...others], each as a share of ONE core (1.0 = one core busy) */
  async stop(): Promise<number[]> {
    const wall = (performance.now() - this.t0) / 1000;
    const self = process.cpuUsage(this.self0);
    const others = await Promise.all(this.pids.map(cpuSecondsOf));
    return [(self.user + self.system) / 1e6 / wall, ...others.map((c, i) => (c - this.others0[i]) / wall)];
  }
}

export function fmtCpu(share: number): string {
  return Number.isFinite(share) ? `${Math.round(share * 100)} %` : 'n/a';
}

/**
 * Run `op` from `concurrency` workers until `durationMs` passed or `maxOps` were started,
 * recording each latency. Errors are counted by their `code` (or name), not thrown.
 */
export async function closedLoop(opts: {
  concurrency: number;
  durationMs: number;
  maxOps: number;
  op: (i: number) => Promise<unknown>;
}): Promise<{ ops: number; elapsedMs: number; perSec: number; lat: Latencies; errors: Map<string, number> }> {
  const lat = new Latencies(Math.min(opts.maxOps, 2_000_000));
  const errors = new Map<string, number>();
  let started = 0;
  const t0 = performance.now();
  const end = t0 + opts.durationMs;
  const worker = async (): Promise<void> => {
    while (started < opts.maxOps && performance.now() < end) {
      const i = started++;
      const s = performance.now();
      try {
        await opts.op(i);
        lat.add(performance.now() - s);
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        const key = typeof code === 'string' ? code : e instanceof Error ? e.name : 'error';
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const elapsedMs = performance.now() - t0;
  return { ops: lat.count, elapsedMs, perSec: (lat.count / elapsedMs) * 1000, lat, errors };
}

export function fmtErrors(errors: Map<string, number>): string {
  return errors.size === 0 ? 'none' : [...errors].map(([k, v]) => `${k} × ${v}`).join(', ');
}
