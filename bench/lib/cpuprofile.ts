/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and ranks functions by self time, optionally only the
 * samples taken inside a time window (µs on the profile's clock: the monotonic clock that
 * process.hrtime also reads, so the bench can cut out start-up and shutdown).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  fn: string;
  where: string;
  ms: number;
  /** share of the non-idle samples in the window */
  share: number;
}

export async function topSelfTime(file: string, window?: { fromUs: number; toUs: number }, top = 10): Promise<{ rows: SelfTime[]; busyMs: number; idleMs: number; windowed: boolean }> {
  const p = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let t = p.startTime;
  let inWindow = 0;
  const total = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    const dt = p.timeDeltas[i + 1] ?? 0;
    const n = byId.get(p.samples[i]);
    if (!n) continue;
    const cf = n.callFrame;
    const url = cf.url.startsWith('file://') ? path.relative(process.cwd(), cf.url.slice(7)) : cf.url;
    const key = `${cf.functionName || '(anonymous)'}\t${url ? `${url}:${cf.lineNumber + 1}` : ''}`;
    total.set(key, (total.get(key) ?? 0) + dt);
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    inWindow++;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const windowed = window !== undefined && inWindow > 100;
  const use = windowed ? self : total;
  let idle = 0;
  let busy = 0;
  for (const [k, v] of use) {
    if (k.startsWith('(idle)')) idle += v;
    else busy += v;
  }
  const rows = [...use]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => {
      const [fn, where] = k.split('\t');
      return { fn, where, ms: v / 1000, share: busy ? v / busy : 0 };
    });
  return { rows, busyMs: busy / 1000, idleMs: idle / 1000, windowed };
}
