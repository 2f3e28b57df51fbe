/**
 * A quick look at the memory of idle open channels (not part of `npm run bench`): a gateway with
 * agent.idleReleaseMs 0 over BENCH_VMS (default 1000) simulated VMs; RSS and the heap used
 * (nodejs_heap_size_used_bytes of /metrics) before and after one ping to each VM (64 at a time),
 * per channel; BENCH_ROUNDS (default 2) rounds. --ab REV: each round also runs REV's src/ (ABBA).
 *
 *   npx tsx bench/quick-rss.ts [--ab REV]
 */
import { auth, fullGc, GC_ON_USR2, startGateway, TOKENS, type GatewayProc } from './lib/procs.js';
import { startSimChild } from './lib/sim-child.js';
import { buildRevision } from './lib/revision.js';
import { gatewayEntry } from './lib/build.js';


const count = Number(process.env.BENCH_VMS ?? 1000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const abAt = process.argv.indexOf('--ab');
const abRev = abAt > 0 ? process.argv[abAt + 1] : undefined;
const H = auth(TOKENS.admin);

async function heapUsed(gw: GatewayProc): Promise<number> {
  const text = await (await fetch(`${gw.base}/metrics`, { headers: H })).text();
  const m = /^nodejs_heap_size_used_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)/m.exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

async function main(): Promise<void> {
  const baseEntry = abRev ? await buildRevision(abRev) : undefined;
  const sim = await startSimChild(count);
  const names = sim.vms.map((v) => v.name);
  try {
    for (let r = 0; r < rounds; r++) {
      const variants: Array<[string, string[] | undefined]> = baseEntry ? [[`A ${abRev}`, baseEntry], ['B working tree', undefined]] : [['gateway', undefined]];
      if (r % 2 === 1) variants.reverse();
      for (const [name, entry] of variants) {
        const gw = await startGateway({ vms: sim.vms, agent: { idleReleaseMs: 0, maxOpen: count }, entry: [...GC_ON_USR2, ...(entry ?? (await gatewayEntry()).entry)] });
        try {
          await new Promise((res) => setTimeout(res, 500));
          await fullGc(gw);
          const rss0 = (await gw.rss()) ?? Number.NaN;
          const heap0 = await heapUsed(gw);
          let next = 0;
          let failed = 0;
          await Promise.all(
            Array.from({ length: 64 }, async () => {
              while (next < names.length) {
                const res = await fetch(`${gw.base}/v1/vms/${names[next++]}/ping`, { headers: H });
                await res.arrayBuffer();
                if (res.status !== 200) failed++;
              }
            }),
          );
          await new Promise((res) => setTimeout(res, 1000));
          await fullGc(gw);
          const rss1 = (await gw.rss()) ?? Number.NaN;
          const heap1 = await heapUsed(gw);
          console.log(
            `round ${r + 1} ${name}: ${count} channels (${failed} failed): RSS ${((rss1 - rss0) / count / 1024).toFixed(1)} KiB per channel, heap used ${((heap1 - heap0) / count / 1024).toFixed(1)} KiB per channel`,
          );
        } finally {
          await gw.stop();
        }
      }
    }
  } finally {
    await sim.stop();
  }
  process.exit(0);
}

void main();
