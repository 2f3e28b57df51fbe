/**
 * `npm run bench` — issue 14's measurements in one run, written to bench/report.md (or
 * $BENCH_REPORT): a summary of every target with PASS/MISS, then each section with every round,
 * the load generator's raw figures, the machine, and the gateway's top 10 self-time functions.
 *
 *   npm run bench               full run (each measurement 5 s, 3 rounds; ≈ 8–10 min on 2 cores)
 *   npm run bench -- --quick    smoke (each measurement 1 s, 1 round, 1,000 VMs for scale; ≈ 1 min)
 *   npm run bench -- --smoke    what the test suite runs (every section at minimal sizes)
 *   npm run bench -- http-sim storm   only the named sections
 *                               (sections: http-sim, http-qga, profile, storm, scale, groups, channel, files, big-reply)
 *
 * Env: BENCH_MS (per measurement), BENCH_ROUNDS, BENCH_SCALE_VMS (10000), BENCH_QGA_AGENTS (8: real
 * qemu-ga instances, each serving one client), BENCH_GROUP_ROUNDS (the group section's rounds: 7, or
 * BENCH_ROUNDS if more), BENCH_REPORT (output file).
 * Benchmarks are measurements, not tests: nothing here fails on a speed.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startQemuGa, type QemuGa } from '../test/helpers/qemu-ga.js';
import bigReply from './big-reply.js';
import channelBench from './channel.js';
import filesBench from './files.js';
import { groupsSection } from './groups.js';
import { httpSection, measureHttp } from './http-ping.js';
import { removeBuild } from './lib/build.js';
import { startHello } from './lib/procs.js';
import { startSimChild, type SimChild } from './lib/sim-child.js';
import { table } from './lib/stats.js';
import { profileSection } from './profile.js';
import { scaleSection } from './scale.js';
import type { BenchSection } from './section.js';
import { stormSection } from './storm.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ALL = ['http-sim', 'http-qga', 'profile', 'storm', 'scale', 'groups', 'channel', 'files', 'big-reply'];

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  // --smoke: the test suite's run (test/bench/smoke.test.ts): every section, minimal sizes, ≈ 20–40 s
  const smoke = args.includes('--smoke');
  const quick = smoke || args.includes('--quick') || process.env.BENCH_QUICK === '1';
  const only = args.filter((a) => !a.startsWith('--'));
  const bad = only.filter((s) => !ALL.includes(s));
  if (bad.length) throw new Error(`no such section: ${bad.join(', ')} (have: ${ALL.join(', ')})`);
  // the smoke runs the sections of the gateway-process machinery (autocannon, raw and hello-world
  // children, the gateway process, profile parsing, paging, churn); http-qga, channel, files and
  // big-reply are the same code against other agents or in-process, and cost the suite time
  const SMOKE = ['http-sim', 'profile', 'storm', 'groups', 'scale'];
  const want = (s: string) => (only.length === 0 ? !smoke || SMOKE.includes(s) : only.includes(s));
  const ms = Number(process.env.BENCH_MS ?? (smoke ? 300 : quick ? 1000 : 5000));
  const rounds = Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : 3));
  const scaleVms = Number(process.env.BENCH_SCALE_VMS ?? (smoke ? 200 : quick ? 1000 : 10_000));
  const qgaAgents = Number(process.env.BENCH_QGA_AGENTS ?? (smoke ? 1 : quick ? 2 : 8));
  const groupSize = smoke ? 8 : 64;
  // a group round is short (~0.4 s); the first groups of a process run while V8 optimizes the group
  // path on the same 2 cores (bench/groups.ts), so the median is taken over more rounds
  const groupRounds = Number(process.env.BENCH_GROUP_ROUNDS ?? (smoke ? rounds : Math.max(rounds, 7)));
  // the reused sections read their own env knobs; give them the run's mode unless set
  const setDefault = (k: string, v: string) => (process.env[k] ??= v);
  setDefault('BENCH_CHANNEL_ROUNDS', String(rounds));
  setDefault('BENCH_CHANNEL_MS', String(ms));
  setDefault('BENCH_CHANNEL_WIRE', '0');
  setDefault('BENCH_FILES_ROUNDS', String(rounds));
  setDefault('BENCH_FILES_MB', smoke ? '1' : quick ? '4' : '32');
  setDefault('BENCH_FILES_VM', quick ? '0' : (process.env.BENCH_FILES_VM ?? '1'));
  setDefault('BENCH_BIG_ROUNDS', String(rounds));
  setDefault('BENCH_BIG_MIB', smoke ? '2' : quick ? '8' : '60');
  // the smoke's scale fleet (200 VMs) would wait ~25 s per gateway for the probe's first sweep
  if (smoke) setDefault('BENCH_SETTLE_MAX_VMS', '50');

  const started = performance.now();
  const load0 = os.loadavg()[0];
  const work = await mkdtemp(path.join(os.tmpdir(), 'bench-run-'));
  const sections: BenchSection[] = [];
  const failures: string[] = [];
  const section = async (name: string, f: () => Promise<BenchSection | BenchSection[]>) => {
    if (!want(name)) return;
    process.stderr.write(`bench: ${name} …\n`);
    const t0 = performance.now();
    try {
      const s = await f();
      sections.push(...(Array.isArray(s) ? s : [s]));
    } catch (e) {
      const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
      failures.push(name);
      sections.push({ title: `${name}: FAILED`, markdown: `\`\`\`\n${msg.slice(0, 4000)}\n\`\`\`` });
    }
    process.stderr.write(`bench: ${name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  };

  let sim: SimChild | undefined;
  const hello = await startHello();
  try {
    sim = await startSimChild(smoke ? 20 : 100);
    const simVms = sim.vms;
    await section('http-sim', async () =>
      httpSection({ name: 'simulator', vms: simVms, note: `${simVms.length} simulated VMs (simulator child process, unix sockets).` }, await measureHttp({ name: 'simulator', vms: simVms, note: '' }, rounds, ms, hello), ms),
    );
    await section('http-qga', async () => {
      const agents: QemuGa[] = [];
      try {
        for (let i = 0; i < qgaAgents; i++) agents.push(await startQemuGa());
        const vms = agents.map((a, i) => ({ name: `qga${i + 1}`, endpoint: { type: 'unix' as const, path: a.socketPath } }));
        const note =
          `${qgaAgents} real /usr/sbin/qemu-ga processes on this machine (unix-listen, dangerous commands blocked with -b; only guest-ping is sent). ` +
          'A qemu-ga serves one client at a time, so "c=64 over the VMs" is 64 connections over these agents (each agent answers one command at a time) and the raw client has one socket per agent.';
        return httpSection({ name: 'real qemu-ga', vms, note }, await measureHttp({ name: 'real qemu-ga', vms, note }, rounds, ms, hello), ms);
      } finally {
        for (const a of agents) await a.stop();
      }
    });
    await section('profile', () => profileSection(simVms, ms));
    await section('storm', () => stormSection(simVms, rounds, ms));
    await section('groups', () => groupsSection(simVms, groupSize, groupRounds, { cold: !smoke }));
  } finally {
    await hello.stop();
    await sim?.stop();
  }
  await section('scale', async () => {
    const big = await startSimChild(scaleVms, 300_000);
    try {
      return await scaleSection(big.vms, { channels: Math.min(1000, scaleVms / 2), rounds, ms, dir: work, simPid: big.pid });
    } finally {
      await big.stop();
    }
  });
  await section('channel', () => channelBench());
  await section('files', () => filesBench());
  await section('big-reply', () => bigReply());
  // issue 17 (bench/cluster.ts): in the full and --quick runs; alone: npx tsx bench/cluster.ts [--quick]
  if (only.length === 0) await section('cluster', async () => (await import('./cluster.js')).clusterSectionFor({ smoke, quick, rounds, ms }));
  await rm(work, { recursive: true, force: true });
  await removeBuild();

  const checks = sections.flatMap((s) => s.checks ?? []);
  const cpus = os.cpus();
  const secs = (performance.now() - started) / 1000;
  const verdict = (p: boolean | undefined) => (p === undefined ? '—' : p ? 'PASS' : 'MISS');
  const report = [
    '# qga-gateway benchmark report (issue 14)',
    '',
    `Written ${new Date().toISOString()} by \`npm run bench${smoke ? ' -- --smoke' : quick ? ' -- --quick' : ''}\` in ${secs.toFixed(0)} s. ` +
      `Machine: ${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}, ` +
      `Node ${process.version}; 1-min load average ${load0.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end ` +
      '(every process of the bench and anything else on the machine share these cores).',
    `Mode: ${smoke ? 'SMOKE (figures are not meaningful)' : quick ? 'QUICK (figures are not meaningful)' : 'full'}; ${(ms / 1000).toFixed(1)} s per measurement, ${rounds} round(s); every figure below is the median of the rounds, each round listed in its section.`,
    failures.length ? `\n**Sections that failed: ${failures.join(', ')}** (their error is in their section).` : '',
    '',
    '## Targets',
    '',
    table(['item', 'measure', 'value', 'target', ''], checks.map((c) => [c.item, c.what, c.value, c.target, verdict(c.pass)])),
    '',
    ...sections.map((s) => `## ${s.title}\n\n${s.markdown.trim()}\n`),
  ].join('\n');
  const out = process.env.BENCH_REPORT ?? path.join(here, 'report.md');
  await writeFile(out, `${report}\n`);
  process.stderr.write(`bench: wrote ${out} (${secs.toFixed(0)} s${failures.length ? `; failed: ${failures.join(', ')}` : ''})\n`);
  if (failures.length) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
