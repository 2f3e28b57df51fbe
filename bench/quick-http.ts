/**
 * A quick look at the HTTP path's CPU per request, for working on it (not part of `npm run bench`):
 * in ONE run, hello-world c=64, the gateway c=64 over the simulator's VMs and c=64 on an unknown
 * VM (404s), each for BENCH_MS (default 3000) over BENCH_ROUNDS (default 2) rounds; prints the
 * server CPU µs per response and the ratios. With --prof, the gateway runs under --cpu-prof and
 * the served-ping window's self time is printed by function and by package.
 *
 *   npx tsx bench/quick-http.ts [--prof]
 *   BENCH_C=1 npx tsx bench/quick-http.ts      the served pings at 1 connection on one VM instead of 64 over all
 *   npx tsx bench/quick-http.ts --perf     perf record of the gateway (round 1); PERF_G=1: with call graphs, inclusive (children) figures
 *   npx tsx bench/quick-http.ts --strace   system calls per served ping (strace -c -f on the gateway, round 1; slows it)
 *   npx tsx bench/quick-http.ts --vs-config 'log: { level: warn }'   the working tree with and without these config sections
 *   npx tsx bench/quick-http.ts --ab REV   each round also runs the gateway built from git
 *                                          revision REV's src/ (A) beside the working tree's (B);
 *                                          with --vs-config YAML as well, both run with YAML
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { auth, cannon, startGateway, startHello, TOKENS, type CannonResult, type Measured } from './lib/procs.js';
import { REPO, startSimChild } from './lib/sim-child.js';
import { gatewayEntry } from './lib/build.js';
import { buildRevision } from './lib/revision.js';
import { median } from './lib/stats.js';

const ms = Number(process.env.BENCH_MS ?? 3000);
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
/** untimed load on each fresh gateway before its measurements (BENCH_WARM_MS, default 1000) */
const warmMs = Number(process.env.BENCH_WARM_MS ?? 1000);
const prof = process.argv.includes('--prof');
const straceOn = process.argv.includes('--strace');
/** connections of the served-ping run (BENCH_C, default 64; 1 = one VM, one at a time) */
const servedConnections = Number(process.env.BENCH_C ?? 64);
const perfOn = process.argv.includes('--perf');
const abAt = process.argv.indexOf('--ab');
const abRev = abAt > 0 ? process.argv[abAt + 1] : undefined;
/** --vs-config YAML: each round also runs the working tree with these top-level config sections appended (e.g. 'log: { level: warn }') */
const vsAt = process.argv.indexOf('--vs-config');
const vsYaml = vsAt > 0 ? process.argv[vsAt + 1] : undefined;

const responses = (m: Measured<CannonResult>): number => Object.values(m.result.status).reduce((a, b) => a + b, 0);
const cpuPer = (m: Measured<CannonResult>): number => (m.cpu[0] * 1e6) / Math.max(1, responses(m));

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

async function breakdown(file: string, fromUs: number, toUs: number): Promise<void> {
  const p = JSON.parse(await readFile(file, 'utf8')) as { nodes: Node[]; startTime: number; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const pkg = new Map<string, number>();
  const incl = new Map<string, number>();
  let t = p.startTime;
  let busy = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const n = byId.get(p.samples[i]);
    if (!n || n.callFrame.functionName === '(idle)') continue;
    busy += dt;
    const u = n.callFrame.url.replace(/^file:\/\/.*?\/(node_modules|src)\//, '$1/');
    const key = `${n.callFrame.functionName || '(anon)'} ${u}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    const m = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u) ?? /^(src\/[^/]+(?:\/[^/]+)?)/.exec(u);
    const pk = m ? m[1] : u.startsWith('node:') ? 'node:' + u.slice(5).split('/')[0] : u || '(native)';
    pkg.set(pk, (pkg.get(pk) ?? 0) + dt);
    // inclusive time of our functions (each counted once per sample)
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id);
      if (!f || !f.callFrame.url.includes('/src/')) continue;
      const k = `${f.callFrame.functionName || '(anon)'} ${f.callFrame.url.replace(/^.*\/src\//, 'src/')}:${f.callFrame.lineNumber + 1}`;
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + dt);
    }
  }
  const show = (title: string, m: Map<string, number>, n: number): void => {
    console.log(`\n${title}`);
    for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${((v / busy) * 100).toFixed(1).padStart(5)} %  ${k}`);
  };
  console.log(`busy ${(busy / 1000).toFixed(0)} ms`);
  show('self time', self, 40);
  show('by package / file', pkg, 30);
  show('inclusive, our code', incl, 40);
}

async function measureGateway(vms: Array<{ name: string; endpoint: import('../src/qga/types.js').Endpoint }>, entry: string[] | undefined, withProf: boolean, withStrace = false, extraYaml?: string): Promise<{ g: Measured<CannonResult>; x: Measured<CannonResult>; file?: string }> {
  const paths = vms.map((v) => `/v1/vms/${v.name}/ping`);
  const headers = auth(TOKENS.load);
  const gw = await startGateway({ vms, cpuProf: withProf, ...(entry ? { entry } : {}), ...(extraYaml ? { extraYaml } : {}) });
  try {
    await cannon({ base: gw.base, paths, connections: 64, durationMs: warmMs, headers }, []);
    const perfRec = withStrace && perfOn ? spawn('perf', ['record', '-F', '1999', ...(process.env.PERF_G ? ['-g'] : []), '-p', String(gw.pid), '-o', '/tmp/qga-gw.perf'], { stdio: 'ignore' }) : undefined;
    const tracer = withStrace && !perfOn ? spawn('strace', ['-c', '-f', '-p', String(gw.pid), '-o', '/tmp/qga-gw.strace'], { stdio: 'ignore' }) : undefined;
    if (tracer || perfRec) await new Promise((r) => setTimeout(r, 500));
    const g = await cannon({ base: gw.base, paths: servedConnections === 1 ? [paths[0]] : paths, connections: servedConnections, durationMs: ms, headers }, [gw.pid]);
    if (perfRec) {
      perfRec.kill('SIGINT');
      await new Promise((r) => perfRec.once('exit', r));
      const report = process.env.PERF_G
        ? 'perf report -i /tmp/qga-gw.perf --stdio --children --sort sym -g none --percent-limit 0.8 2>/dev/null | grep -v "^#" | grep -v "^$" | head -150'
        : 'perf report -i /tmp/qga-gw.perf --stdio --no-children --sort dso,sym 2>/dev/null | grep -v "^#" | grep -v "^$" | head -70';
      console.log(execFileSync('sh', ['-c', report], { encoding: 'utf8', maxBuffer: 1 << 26 }));
      console.log(execFileSync('sh', ['-c', 'perf report -i /tmp/qga-gw.perf --stdio --no-children --sort dso 2>/dev/null | grep -v "^#" | grep -v "^$" | head -15'], { encoding: 'utf8' }));
    }
    if (tracer) {
      tracer.kill('SIGINT');
      await new Promise((r) => tracer.once('exit', r));
      const lines = (await readFile('/tmp/qga-gw.strace', 'utf8')).split('\n');
      const total = lines.find((l) => l.trim().endsWith('total'));
      const calls = total ? Number(total.trim().split(/\s+/)[3]) : NaN;
      console.log(lines.slice(0, 14).join('\n'));
      console.log(`strace: ${(calls / Math.max(1, g.result.ok)).toFixed(1)} system calls per served ping (${g.result.ok} pings)`);
    }
    const x = await cannon({ base: gw.base, paths: ['/v1/vms/no-such-vm/ping'], connections: 64, durationMs: ms, headers }, [gw.pid]);
    const file = await gw.stop();
    return { g, x, ...(file ? { file } : {}) };
  } catch (e) {
    await gw.stop();
    throw e;
  }
}

async function main(): Promise<void> {
  const baseEntry = abRev ? await buildRevision(abRev) : undefined;
  const sim = await startSimChild(100);
  const hello = await startHello();
  const rows = new Map<string, number[][]>();
  try {
    for (let r = 0; r < rounds; r++) {
      const h = await cannon({ base: hello.base, paths: ['/ping'], connections: 64, durationMs: ms }, [hello.pid]);
      const variants: Array<[string, string[] | undefined, string?]> = baseEntry
        ? [[`A ${abRev}`, baseEntry, vsYaml], ['B working tree', undefined, vsYaml]]
        : vsYaml
          ? [['A shipped config', undefined], [`B with ${vsYaml}`, undefined, vsYaml]]
          : [['gateway', undefined]];
      // alternate the order between rounds (ABBA)
      if (r % 2 === 1) variants.reverse();
      for (const [name, entry, extraYaml] of variants) {
        const { g, x, file } = await measureGateway(sim.vms, perfOn ? ['--perf-basic-prof', ...(entry ?? (await gatewayEntry()).entry)] : entry, prof && r === 0, (straceOn || perfOn) && r === 0, extraYaml);
        const row = [cpuPer(h), cpuPer(g), cpuPer(x), cpuPer(g) / cpuPer(h), cpuPer(x) / cpuPer(g)];
        rows.set(name, [...(rows.get(name) ?? []), row]);
        console.log(
          `round ${r + 1} ${name}: hello ${responses(h)} (${row[0].toFixed(1)} µs) gw ${g.result.ok}/${responses(g)} (${row[1].toFixed(1)} µs) 404 ${responses(x)} (${row[2].toFixed(1)} µs)` +
            `  gw/hello CPU ${row[3].toFixed(2)}  404/served ${row[4].toFixed(2)}`,
        );
        if (file) {
          await copyFile(file, `/tmp/qga-gw-${name.split(' ')[0]}.cpuprofile`);
          await breakdown(file, g.goUs, g.doneUs);
          console.log('\n--- 404 window ---');
          await breakdown(file, x.goUs, x.doneUs);
          await rm(path.dirname(file), { recursive: true, force: true });
        }
      }
    }
    for (const [name, rs] of rows) {
      console.log(
        `median ${name}: gw/hello CPU ${median(rs.map((r) => r[3])).toFixed(2)}, 404/served ${median(rs.map((r) => r[4])).toFixed(2)}, gw µs ${median(rs.map((r) => r[1])).toFixed(1)}, hello µs ${median(rs.map((r) => r[0])).toFixed(1)}, 404 µs ${median(rs.map((r) => r[2])).toFixed(1)}`,
      );
    }
  } finally {
    await hello.stop();
    await sim.stop();
  }
  process.exit(0);
}

void main();
