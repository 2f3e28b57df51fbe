/**
 * Issue 14 item 2: 200 clients retrying at once on ONE VM (token bench-storm; autocannon ignores
 * Retry-After and sends again at once) while a background load (token bench-load, 64
 * connections) pings the other VMs. Baseline: the same with 64 clients on that VM (≤ maxQueue +
 * 1, so none is refused). Both loads are separate autocannon processes running at the same time;
 * the gateway's CPU is read between the storm child's go and done.
 * Rejection CPU: served cost c_s from the baseline (CPU / ok), then
 * c_r = (CPU_storm − c_s × ok_storm) / refused_storm.
 */
import type { Endpoint } from '../src/qga/types.js';
import { auth, cannon, startGateway, TOKENS, warmMs, type CannonResult, type Measured } from './lib/procs.js';
import { fmtRate, fmtRatio, median, table } from './lib/stats.js';
import { check, type BenchSection } from './section.js';

interface Phase {
  one: Measured<CannonResult>;
  rest: Measured<CannonResult>;
}
const okPerSec = (m: Measured<CannonResult>): number => (m.result.ok / m.wallMs) * 1000;
const refused = (m: Measured<CannonResult>): number => Object.entries(m.result.status).filter(([k]) => k !== '200').reduce((a, [, v]) => a + v, 0);

export async function stormSection(vms: Array<{ name: string; endpoint: Endpoint }>, rounds: number, ms: number): Promise<BenchSection> {
  const gw = await startGateway({ vms });
  const one = [`/v1/vms/${vms[0].name}/ping`];
  const rest = vms.slice(1).map((v) => `/v1/vms/${v.name}/ping`);
  const phase = async (callers: number): Promise<Phase> => {
    const [o, r] = await Promise.all([
      cannon({ base: gw.base, paths: one, connections: callers, durationMs: ms, headers: auth(TOKENS.storm) }, [gw.pid]),
      cannon({ base: gw.base, paths: rest, connections: 64, durationMs: ms, headers: auth(TOKENS.load) }, []),
    ]);
    return { one: o, rest: r };
  };
  const base: Phase[] = [];
  const storm: Phase[] = [];
  try {
    if (ms >= 1000) await cannon({ base: gw.base, paths: [...one, ...rest], connections: 64, durationMs: warmMs(ms), headers: auth(TOKENS.load) }, []);
    for (let i = 0; i < rounds; i++) {
      base.push(await phase(64));
      storm.push(await phase(200));
    }
  } finally {
    await gw.stop();
  }
  const oneRatio = storm.map((s, i) => okPerSec(s.one) / okPerSec(base[i].one));
  const restRatio = storm.map((s, i) => okPerSec(s.rest) / okPerSec(base[i].rest));
  const rejRatio = storm.map((s, i) => {
    const b = base[i];
    const cs = b.one.cpu[0] / Math.max(1, b.one.result.ok + b.rest.result.ok * (b.one.wallMs / b.rest.wallMs));
    const served = s.one.result.ok + s.rest.result.ok * (s.one.wallMs / s.rest.wallMs);
    const cr = (s.one.cpu[0] - cs * served) / Math.max(1, refused(s.one));
    return cr / cs;
  });
  const rows = storm.map((s, i) => {
    const b = base[i];
    return [
      i + 1,
      fmtRate(okPerSec(b.one)),
      `${fmtRate(okPerSec(s.one))} ok, ${fmtRate((refused(s.one) / s.one.wallMs) * 1000)} refused (${Object.entries(s.one.result.status).map(([k, v]) => `${k}×${v}`).join(' ')})`,
      fmtRatio(oneRatio[i]),
      fmtRate(okPerSec(b.rest)),
      fmtRate(okPerSec(s.rest)),
      fmtRatio(restRatio[i]),
      `${((b.one.cpu[0] / b.one.wallMs) * 1e5).toFixed(0)} % / ${((s.one.cpu[0] / s.one.wallMs) * 1e5).toFixed(0)} %`,
      fmtRatio(rejRatio[i]),
    ];
  });
  return {
    title: 'Storm: 200 clients retrying on one VM, background load on the other VMs (simulator)',
    markdown: [
      `${vms.length} simulated VMs, gateway process with shipped defaults (agent.maxQueue 64, limits.perPrincipalConcurrency 256), ` +
        `${(ms / 1000).toFixed(1)} s per phase, ${rounds} rounds, baseline and storm alternating. "one VM": ${vms[0].name}, token bench-storm; ` +
        `"other VMs": the other ${vms.length - 1} VMs at 64 connections, token bench-load.`,
      '',
      table(['round', 'one VM ok/s, 64 clients', 'one VM, 200 clients retrying', 'storm/base', 'other VMs ok/s, base', 'other VMs ok/s, storm', 'storm/base', 'gateway CPU base / storm', 'CPU refusal / served'], rows),
      '',
      'The gateway CPU column is its share of one core during the phase: a share that FALLS in the storm phase means the ' +
        'gateway was starved by the other processes (autocannon with 200 retrying connections, the simulator, anything else ' +
        'on the machine), not busy refusing; the refusal cost is then an estimate from a noisy difference.',
      '',
      `Medians: one VM ${fmtRatio(median(oneRatio))} (${oneRatio.map(fmtRatio).join(', ')}), other VMs ${fmtRatio(median(restRatio))} ` +
        `(${restRatio.map(fmtRatio).join(', ')}), refusal/served CPU ${fmtRatio(median(rejRatio))} (${rejRatio.map(fmtRatio).join(', ')}).`,
    ].join('\n'),
    checks: [
      check('2', 'storm: ok/s on the stormed VM / its 64-client throughput', median(oneRatio), '≥', 0.8),
      check('2', 'storm: other VMs ok/s / no storm', median(restRatio), '≥', 0.8),
      check('2', 'storm: CPU of a refusal (429) / served request (estimated)', median(rejRatio), '≤', 0.25),
    ],
  };
}
