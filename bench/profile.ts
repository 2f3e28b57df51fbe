/**
 * The gateway process under the HTTP ping load (64 autocannon connections over the simulator's
 * VMs), started with `node --cpu-prof`; the profile's samples inside the load window are ranked
 * by self time (bench/lib/cpuprofile.ts).
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Endpoint } from '../src/qga/types.js';
import { topSelfTime } from './lib/cpuprofile.js';
import { auth, cannon, startGateway, TOKENS, warmMs } from './lib/procs.js';
import { fmtRate, table } from './lib/stats.js';
import type { BenchSection } from './section.js';

export async function profileSection(vms: Array<{ name: string; endpoint: Endpoint }>, ms: number): Promise<BenchSection> {
  const gw = await startGateway({ vms, cpuProf: true });
  const paths = vms.map((v) => `/v1/vms/${v.name}/ping`);
  const headers = auth(TOKENS.load);
  let file: string | undefined;
  let window = { fromUs: 0, toUs: 0 };
  let okPerSec = 0;
  try {
    if (ms >= 1000) await cannon({ base: gw.base, paths, connections: 64, durationMs: warmMs(ms), headers }, []);
    const m = await cannon({ base: gw.base, paths, connections: 64, durationMs: ms, headers }, [gw.pid]);
    window = { fromUs: m.goUs, toUs: m.doneUs };
    okPerSec = (m.result.ok / m.wallMs) * 1000;
  } finally {
    file = await gw.stop();
  }
  if (!file) return { title: 'CPU profile of the gateway under HTTP ping load', markdown: '_no .cpuprofile was written (the gateway did not exit normally)_' };
  const top = await topSelfTime(file, window);
  await rm(path.dirname(file), { recursive: true, force: true });
  return {
    title: 'CPU profile of the gateway under HTTP ping load (top 10 self time)',
    markdown: [
      `\`node --cpu-prof\` on the gateway process, ${(ms / 1000).toFixed(1)} s of GET …/ping at 64 connections over ${vms.length} simulated VMs ` +
        `(${fmtRate(okPerSec)} ok/s while profiled). ${top.windowed ? 'Samples inside the load window only' : 'Whole profile (the load window could not be matched)'}: ` +
        `${top.busyMs.toFixed(0)} ms busy, ${top.idleMs.toFixed(0)} ms idle. Share = of the busy time. Profile: ${path.basename(file)} (deleted with the temp dir).`,
      '',
      table(['#', 'function', 'where', 'self ms', 'share'], top.rows.map((r, i) => [i + 1, `\`${r.fn}\``, r.where || '—', r.ms.toFixed(0), `${(r.share * 100).toFixed(1)} %`])),
    ].join('\n'),
  };
}
