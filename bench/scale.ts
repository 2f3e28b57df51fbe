/**
 * Issue 14 item 3 on the simulator: a gateway process with N (10,000) registered VMs: start-up
 * (spawn → first 200 from /healthz), RSS per idle open channel (1,000 channels opened by pings,
 * /proc RSS before and after, no forced GC: an upper bound), GET /v1/vms paged by 1,000 (when the
 * route takes `limit`/`cursor`), and churn: random pings over all N VMs at 64 connections with
 * agent.maxOpen 100 against a gateway that keeps every channel open, each on a simulator of its own,
 * both up at once, rounds alternating.
 */
import type { Endpoint } from '../src/qga/types.js';
import { auth, cannon, fullGc, GC_ON_USR2, startGateway, TOKENS, warmMs, type CannonResult, type GatewayProc, type Measured } from './lib/procs.js';
import { gatewayEntry } from './lib/build.js';
import { startSimChild } from './lib/sim-child.js';
import { fmtMs, fmtRate, fmtRatio, median, table } from './lib/stats.js';
import { check, type BenchSection, type Check } from './section.js';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';

const H = auth(TOKENS.admin);

async function pingAll(gw: GatewayProc, names: string[], concurrency: number): Promise<number> {
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < names.length) {
        const vm = names[next++];
        const r = await fetch(`${gw.base}/v1/vms/${vm}/ping`, { headers: H });
        await r.arrayBuffer();
        if (r.status !== 200) failed++;
      }
    }),
  );
  return failed;
}

interface Paging {
  built: boolean;
  firstPageMs: number[];
  allPagesMs: number[];
  pages: number;
  items: number;
  note: string;
}

function itemsOf(body: unknown): { items: unknown[]; cursor?: string } {
  const b = body as Record<string, unknown>;
  const items = Array.isArray(body) ? body : Array.isArray(b.vms) ? b.vms : Array.isArray(b.items) ? b.items : [];
  const c = b && !Array.isArray(body) ? (b.nextCursor ?? b.cursor ?? b.next) : undefined;
  return { items, cursor: typeof c === 'string' && c ? c : undefined };
}

async function paging(gw: GatewayProc, total: number, rounds: number): Promise<Paging> {
  const get = async (q: string) => {
    const t = performance.now();
    const r = await fetch(`${gw.base}/v1/vms${q}`, { headers: H });
    const body = (await r.json()) as unknown;
    return { ms: performance.now() - t, status: r.status, body, ...itemsOf(body) };
  };
  const probe = await get('?limit=1000');
  // built: the route honours limit (a full page when there are more) and says where to go on
  const built =
    probe.status === 200 &&
    (total > 1000 ? probe.items.length === 1000 : probe.items.length === total && typeof probe.body === 'object' && probe.body !== null && ['nextCursor', 'cursor', 'next'].some((k) => k in (probe.body as object)));
  const res: Paging = { built, firstPageMs: [], allPagesMs: [], pages: 0, items: 0, note: '' };
  if (!built) {
    const all = await get('');
    res.allPagesMs.push(all.ms);
    res.items = all.items.length;
    res.note = `n/a: paging not built (GET /v1/vms?limit=1000 answered ${probe.status} with ${probe.items.length} items; one unpaged GET of all ${all.items.length} took ${fmtMs(all.ms)})`;
    return res;
  }
  for (let r = 0; r < rounds; r++) {
    const first = await get('?limit=1000');
    res.firstPageMs.push(first.ms);
    let items = first.items.length;
    let pages = 1;
    let cursor = first.cursor;
    let ms = first.ms;
    while (cursor && pages < 1000) {
      const p = await get(`?limit=1000&cursor=${encodeURIComponent(cursor)}`);
      ms += p.ms;
      items += p.items.length;
      pages++;
      cursor = p.cursor;
    }
    res.allPagesMs.push(ms);
    res.pages = pages;
    res.items = items;
  }
  res.note = `${res.pages} pages, ${res.items} VMs listed`;
  return res;
}

export async function scaleSection(vms: Array<{ name: string; endpoint: Endpoint }>, opts: { channels: number; rounds: number; ms: number; dir: string; /** the simulator of `vms` (its CPU is reported) */ simPid?: number }): Promise<BenchSection> {
  const names = vms.map((v) => v.name);
  const pathsFile = path.join(opts.dir, 'scale-paths.txt');
  await writeFile(pathsFile, names.map((n) => `/v1/vms/${n}/ping`).join('\n'));
  const checks: Check[] = [];
  const lines: string[] = [];
  // start-up, memory, paging: shipped defaults
  const starts: number[] = [];
  let perChannel = Number.NaN;
  let pg: Paging | undefined;
  let openFailed = 0;
  let rssBefore = 0;
  let rssAfter = 0;
  for (let r = 0; r < opts.rounds; r++) {
    // idle release off: the channels opened must stay open while their memory is measured
    // round 1 measures memory: its gateway takes a full GC on SIGUSR2 (--expose-gc), so the RSS
    // readings hold live objects, not the garbage of the requests that opened the channels
    const gw = await startGateway({ vms, agent: { idleReleaseMs: 0 }, ...(r === 0 ? { entry: [...GC_ON_USR2, ...(await gatewayEntry()).entry] } : {}) });
    starts.push(gw.startMs);
    try {
      if (r === 0) {
        await new Promise((res) => setTimeout(res, 500));
        await fullGc(gw);
        rssBefore = (await gw.rss()) ?? Number.NaN;
        openFailed = await pingAll(gw, names.slice(0, opts.channels), 64);
        await new Promise((res) => setTimeout(res, 1000));
        await fullGc(gw);
        rssAfter = (await gw.rss()) ?? Number.NaN;
        perChannel = (rssAfter - rssBefore) / opts.channels;
        pg = await paging(gw, vms.length, opts.rounds);
      }
    } finally {
      await gw.stop();
    }
  }
  checks.push(check('3', `scale: start-up with ${vms.length} VMs (s)`, median(starts) / 1000, '<', 2));
  checks.push(check('3', 'scale: RSS per idle open channel (KiB)', perChannel / 1024, '≤', 16, (x) => x.toFixed(1)));
  if (pg?.built) {
    checks.push(check('3', 'scale: GET /v1/vms page of 1000 (ms)', median(pg.firstPageMs), '<', 100, (x) => x.toFixed(1)));
    checks.push(check('3', `scale: all ${vms.length} VMs paged through (ms)`, median(pg.allPagesMs), '<', 1000, (x) => x.toFixed(0)));
  } else {
    checks.push({ item: '3', what: 'scale: GET /v1/vms page of 1000 / full paging', value: 'n/a: paging not built', target: '< 100 ms / < 1 s' });
  }
  lines.push(
    `${vms.length} simulated VMs (simulator child process), gateway process with shipped defaults except agent.idleReleaseMs 0 (channels stay open while measured; agent.maxOpen 1000). ` +
      `Start-up (spawn of node on the transpiled src/server.js → first 200 from /healthz), ${opts.rounds} starts: ${starts.map((s) => fmtMs(s)).join(', ')}. ` +
      `Opening ${opts.channels} channels (one ping each, 64 at a time, ${openFailed} failed): RSS ${(rssBefore / 2 ** 20).toFixed(1)} → ` +
      `${(rssAfter / 2 ** 20).toFixed(1)} MiB, ${(perChannel / 1024).toFixed(1)} KiB per channel (both readings after a full GC: this gateway runs with --expose-gc and collects on SIGUSR2). ` +
      `GET /v1/vms: ${pg?.built ? `first page of 1000 ${pg.firstPageMs.map((x) => fmtMs(x)).join(', ')}; all pages ${pg.allPagesMs.map((x) => fmtMs(x)).join(', ')} (${pg.note})` : pg?.note}.`,
  );

  // churn: maxOpen 100 vs every channel kept open. A simulated agent, like qemu-ga, serves one
  // client, so the two gateways get simulators of their own (the same N VMs each): both stay up and
  // their rounds alternate (ABBA), so a load change on the shared machine hits both alike.
  const a: Array<Measured<CannonResult>> = [];
  const b: Array<Measured<CannonResult>> = [];
  const spec = { pathsFile, order: 'random' as const, connections: 64, durationMs: opts.ms, headers: H };
  let openAllMs = 0;
  let failed = 0;
  let churnAllMs = 0;
  let failedChurn = 0;
  const sim2 = await startSimChild(vms.length, 300_000);
  const open = await startGateway({ vms, agent: { maxOpen: vms.length, idleReleaseMs: 0 } });
  let churn: GatewayProc | undefined;
  try {
    churn = await startGateway({ vms: sim2.vms, agent: { maxOpen: 100 } });
    const t = performance.now();
    failed = await pingAll(open, names, 64);
    openAllMs = performance.now() - t;
    // the churn gateway has met every VM once too (its channels know each agent's guest-info), as
    // the all-open one has: steady churn, not first contacts, is measured
    const t2 = performance.now();
    failedChurn = await pingAll(churn, names, 64);
    churnAllMs = performance.now() - t2;
    if (opts.ms >= 1000) {
      await cannon({ ...spec, durationMs: warmMs(opts.ms), base: churn.base }, []);
      await cannon({ ...spec, durationMs: warmMs(opts.ms), base: open.base }, []);
    }
    for (let r = 0; r < opts.rounds; r++) {
      // each timed run right after 1 s of the same load on that gateway: it sat idle while the other
      // ran (round 1 of churn, after 6 s idle, came out at 0.31-0.33 while later rounds gave 0.5-0.7)
      const rewarm = (base: string) => (opts.ms >= 1000 ? cannon({ ...spec, durationMs: 1000, base }, []) : Promise.resolve());
      const runOpen = async () => {
        await rewarm(open.base);
        b.push(await cannon({ ...spec, base: open.base }, [open.pid, ...(opts.simPid ? [opts.simPid] : [])]));
      };
      const runChurn = async () => {
        await rewarm((churn as GatewayProc).base);
        a.push(await cannon({ ...spec, base: (churn as GatewayProc).base }, [(churn as GatewayProc).pid, sim2.pid]));
      };
      if (r % 2 === 0) {
        await runOpen();
        await runChurn();
      } else {
        await runChurn();
        await runOpen();
      }
    }
    const ok = (m: Measured<CannonResult>) => (m.result.ok / m.wallMs) * 1000;
    const us = (m: Measured<CannonResult>, i: number) => (m.cpu[i] === undefined ? '?' : ((m.cpu[i] * 1e6) / Math.max(1, m.result.ok)).toFixed(0));
    const ratios = a.map((x, i) => ok(x) / ok(b[i]));
    lines.push(
      '',
      `Churn: random pings over all ${vms.length} VMs, 64 autocannon connections, ${(opts.ms / 1000).toFixed(1)} s per run, agent.maxOpen 100 (shipped idle release) against agent.maxOpen ${vms.length} with agent.idleReleaseMs 0. ` +
        `Each gateway has a simulator of its own with the same ${vms.length} VMs (an agent serves one client), both stay up, rounds alternate (ABBA) after a ${(warmMs(opts.ms) / 1000).toFixed(1)} s warm-up of each, and each timed run follows 1 s of the same load on its gateway. The all-open gateway ` +
        `had every channel opened first (${fmtMs(openAllMs)}, ${failed} failed); the maxOpen 100 one pinged every VM once first too (${fmtMs(churnAllMs)}, ${failedChurn} failed), ` +
        `so its channels know each agent's guest-info (agent.infoMaxAgeMs 60 s: a longer run re-reads it on a VM's first new socket after that). CPU µs per ok answer of the gateway and of its simulator (the agents' side).`,
      '',
      table(
        ['round', 'all open ok/s (gateway / simulator CPU µs/req)', 'maxOpen 100 ok/s (gateway / simulator CPU µs/req)', 'statuses (maxOpen 100)', 'ratio'],
        a.map((x, i) => [
          i + 1,
          `${fmtRate(ok(b[i]))} (${us(b[i], 0)} / ${us(b[i], 1)})`,
          `${fmtRate(ok(x))} (${us(x, 0)} / ${us(x, 1)})`,
          Object.entries(x.result.status).map(([k, v]) => `${k}×${v}`).join(' '),
          fmtRatio(ratios[i]),
        ]),
      ),
    );
    checks.push(check('3', `churn over ${vms.length} VMs: maxOpen 100 / all open`, median(ratios), '≥', 0.5));
  } finally {
    await churn?.stop();
    await open.stop();
    await sim2.stop();
  }
  return { title: `Scale: ${vms.length} VMs, ${opts.channels} open channels, churn (simulator)`, markdown: lines.join('\n'), checks };
}
