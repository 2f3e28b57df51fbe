/**
 * A quick look at churn (not part of `npm run bench`): random pings over BENCH_VMS (default 2000)
 * simulated VMs at 64 connections through a gateway with agent.maxOpen 100, BENCH_MS (default 3000)
 * per round, BENCH_ROUNDS (default 2); prints ok/s and the gateway's CPU µs per ok answer.
 * --perf: perf record -g of the gateway in round 1, inclusive (children) figures by symbol.
 * --ab REV: each round also runs the gateway built from git revision REV's src/ (as quick-http.ts).
 * --prof: the gateway runs under --cpu-prof in round 1; its profile (warm-up included) is copied to
 *   /tmp/qga-churn-<variant>.cpuprofile and its top self-time functions printed.
 *
 *   npx tsx bench/quick-churn.ts [--perf] [--ab REV]
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { auth, cannon, startGateway, TOKENS } from './lib/procs.js';
import { startSimChild } from './lib/sim-child.js';
import { gatewayEntry } from './lib/build.js';
import { buildRevision } from './lib/revision.js';
import { topSelfTime } from './lib/cpuprofile.js';

const ms = Number(process.env.BENCH_MS ?? 3000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const count = Number(process.env.BENCH_VMS ?? 2000);
const perfOn = process.argv.includes('--perf');
/** --deopt: the gateway runs with --trace-deopt; the deoptimizations of the measured round 1 are counted by function and reason */
const deoptOn = process.argv.includes('--deopt');
/** --opt: the gateway runs with --trace-opt; TurboFan compilations after the warm-up are counted by function (with the sfi: one line per function) */
const optOn = process.argv.includes('--opt');
const profOn = process.argv.includes('--prof');
const abAt = process.argv.indexOf('--ab');
const abRev = abAt > 0 ? process.argv[abAt + 1] : undefined;

async function main(): Promise<void> {
  const baseEntry = abRev ? await buildRevision(abRev) : undefined;
  const sim = await startSimChild(count);
  const pathsFile = path.join(os.tmpdir(), `quick-churn-${process.pid}.txt`);
  await writeFile(pathsFile, sim.vms.map((v) => `/v1/vms/${v.name}/ping`).join('\n'));
  const H = auth(TOKENS.load);
  const res = new Map<string, number[]>();
  try {
    for (let r = 0; r < rounds; r++) {
      const variants: Array<[string, string[] | undefined]> = baseEntry ? [[`A ${abRev}`, baseEntry], ['B working tree', undefined]] : [['gateway', undefined]];
      if (r % 2 === 1) variants.reverse();
      for (const [name, entry] of variants) {
        const e = entry ?? (await gatewayEntry()).entry;
        const gw = await startGateway({ vms: sim.vms, agent: { maxOpen: 100 }, cpuProf: profOn && r === 0, entry: perfOn ? ['--perf-basic-prof', ...e] : deoptOn ? ['--trace-deopt', ...e] : optOn ? ['--trace-opt', ...e] : e });
        try {
          const spec = { pathsFile, order: 'random' as const, connections: 64, headers: H, base: gw.base };
          await cannon({ ...spec, durationMs: Number(process.env.BENCH_WARM_MS ?? 1000) }, []);
          const logAt = optOn ? (await readFile(gw.logFile, 'utf8')).length : 0;
          const rec = perfOn && r === 0 ? spawn('perf', ['record', '-F', '1999', '-g', '-p', String(gw.pid), '-o', '/tmp/qga-churn.perf'], { stdio: 'ignore' }) : undefined;
          if (rec) await new Promise((res) => setTimeout(res, 300));
          const m = await cannon({ ...spec, durationMs: ms }, [gw.pid, sim.pid]);
          if (rec) {
            rec.kill('SIGINT');
            await new Promise((res) => rec.once('exit', res));
            console.log(execFileSync('sh', ['-c', 'perf report -i /tmp/qga-churn.perf --stdio --children --sort sym -g none --percent-limit 0.7 2>/dev/null | grep -v "^#" | grep -v "^$" | head -170'], { encoding: 'utf8', maxBuffer: 1 << 26 }));
          }
          if (deoptOn && r === 0) {
            const text = await readFile(gw.logFile, 'utf8');
            const counts = new Map<string, number>();
            for (const m of text.matchAll(/bailout \(kind: ([^,]+), reason: ([^)]+)\): begin\. deoptimizing[^<]*<JSFunction ?([^ >(]*)/g)) {
              const k = `${m[3] || '(anonymous)'} ${m[1]}: ${m[2]}`;
              counts.set(k, (counts.get(k) ?? 0) + 1);
            }
            for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log(String(n).padStart(6), k);
          }
          if (optOn && r === 0) {
            const text = (await readFile(gw.logFile, 'utf8')).slice(logAt);
            const counts = new Map<string, number>();
            for (const m of text.matchAll(/completed compiling 0x[0-9a-f]+ <JSFunction ?([^ >(]*) \(sfi = (0x[0-9a-f]+)\)> \(target ([A-Z]+)\)/g)) {
              const k = `${m[1] || '(anonymous)'} ${m[2]} ${m[3]}`;
              counts.set(k, (counts.get(k) ?? 0) + 1);
            }
            let total = 0;
            for (const n of counts.values()) total += n;
            console.log(`${total} compilations in the measured window, ${counts.size} distinct functions`);
            for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log(String(n).padStart(6), k);
          }
          const okps = (m.result.ok / m.wallMs) * 1000;
          const cpu = (m.cpu[0] * 1e6) / Math.max(1, m.result.ok);
          const simCpu = (m.cpu[1] * 1e6) / Math.max(1, m.result.ok);
          res.set(name, [...(res.get(name) ?? []), cpu]);
          console.log(`round ${r + 1} ${name}: ${okps.toFixed(0)} ok/s, ${cpu.toFixed(0)} µs CPU per ok (simulator ${simCpu.toFixed(0)} µs), statuses ${JSON.stringify(m.result.status)}`);
        } finally {
          const prof = await gw.stop();
          if (prof) {
            const to = `/tmp/qga-churn-${name.split(' ')[0]}.cpuprofile`;
            await copyFile(prof, to);
            const top = await topSelfTime(prof, undefined, 25);
            console.log(`${to}: busy ${top.busyMs.toFixed(0)} ms`);
            for (const row of top.rows) console.log(`${(row.share * 100).toFixed(1).padStart(5)}% ${row.fn} ${row.where}`);
          }
        }
      }
    }
    for (const [name, v] of res) console.log(`${name}: CPU µs per ok ${v.map((x) => x.toFixed(0)).join(', ')}`);
  } finally {
    await sim.stop();
  }
  process.exit(0);
}

void main();
