/**
 * Issue 14 item 4 (simulator): a freeze group of N VMs (64) against the slowest single freeze of
 * the same VMs, through the gateway process. Each round freezes (and thaws) every VM on its own,
 * one after another, then the group; the time is the POST's round trip.
 */
import type { Endpoint } from '../src/qga/types.js';
import { auth, startGateway, TOKENS } from './lib/procs.js';
import { fmtMs, fmtRatio, median, table } from './lib/stats.js';
import { check, type BenchSection } from './section.js';

const H = { ...auth(TOKENS.admin), 'content-type': 'application/json' };

async function timed(url: string, init: RequestInit, want: number): Promise<{ ms: number; body: Record<string, unknown> }> {
  const t = performance.now();
  const r = await fetch(url, init);
  const body = (await r.json()) as Record<string, unknown>;
  const ms = performance.now() - t;
  if (r.status !== want) throw new Error(`${init.method} ${url}: ${r.status} ${JSON.stringify(body)}`);
  return { ms, body };
}

export async function groupsSection(vms: Array<{ name: string; endpoint: Endpoint }>, size: number, rounds: number): Promise<BenchSection> {
  const members = vms.slice(0, size).map((v) => v.name);
  const gw = await startGateway({ vms });
  const rows: Array<Array<string | number>> = [];
  const ratios: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const singles: number[] = [];
      for (const vm of members) {
        const f = await timed(`${gw.base}/v1/vms/${vm}/fsfreeze`, { method: 'POST', headers: H, body: JSON.stringify({ ttlSeconds: 60 }) }, 201);
        singles.push(f.ms);
        await timed(`${gw.base}/v1/vms/${vm}/fsfreeze?leaseId=${encodeURIComponent(String(f.body.leaseId))}`, { method: 'DELETE', headers: auth(TOKENS.admin) }, 200);
      }
      const g = await timed(`${gw.base}/v1/freeze-groups`, { method: 'POST', headers: H, body: JSON.stringify({ vms: members, ttlSeconds: 60 }) }, 201);
      await timed(`${gw.base}/v1/freeze-groups/${String(g.body.id)}?leaseId=${encodeURIComponent(String(g.body.leaseId))}`, { method: 'DELETE', headers: auth(TOKENS.admin) }, 200);
      const slowest = Math.max(...singles);
      ratios.push(g.ms / slowest);
      rows.push([r + 1, fmtMs(median(singles)), fmtMs(slowest), fmtMs(g.ms), fmtRatio(g.ms / slowest)]);
    }
  } finally {
    await gw.stop();
  }
  return {
    title: `Freeze group of ${size} VMs vs the slowest single freeze (simulator)`,
    markdown: [
      `Gateway process, shipped defaults; ${size} simulated VMs each frozen and thawed on its own (sequentially), then frozen together as one group and thawed. Time = the freeze POST's round trip.`,
      '',
      table(['round', 'single freeze, median', 'single freeze, slowest', 'group freeze', 'group / slowest single'], rows),
    ].join('\n'),
    checks: [check('4', `group freeze of ${size} / slowest single freeze`, median(ratios), '≤', 1.5)],
  };
}
