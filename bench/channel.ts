/**
 * One Channel, one agent, one guest-ping at a time: round trips per second and latency through
 * src/qga/channel.ts against a minimal raw socket loop (bench/lib/raw-agent.ts) on the SAME agent
 * in the same run, rounds alternating so machine noise hits both alike. Done for the simulator
 * (in a child process) and for the real /usr/sbin/qemu-ga. Each agent serves one client at a
 * time, so every round opens its own connection and closes it before the next.
 *
 * Env: BENCH_CHANNEL_ROUNDS (default 3), BENCH_CHANNEL_MS (default 1500) per round.
 */
import { Channel } from '../src/qga/channel.js';
import { AgentConnection, type AgentReply, type WireListener } from '../src/qga/connection.js';
import type { Endpoint } from '../src/qga/types.js';
import { startQemuGa } from '../test/helpers/qemu-ga.js';
import { channelOptions } from './lib/channels.js';
import { RawAgent } from './lib/raw-agent.js';
import { startSimChild } from './lib/sim-child.js';
import { Latencies, fmtMs, fmtRate, fmtRatio, median, table } from './lib/stats.js';
import { check, type BenchSection, type Check } from './section.js';

const MAX_PINGS_PER_ROUND = 200_000;
const WARMUP = 500;

interface Round {
  perSec: number;
  lat: Latencies;
  /** CPU time (user + system) of THIS process per ping, µs: what the client costs, noise aside */
  cpuUs: number;
}

/** a sequential loop: the next ping leaves when the previous reply arrived */
async function loop(ping: () => Promise<unknown>, ms: number): Promise<Round> {
  for (let i = 0; i < WARMUP; i++) await ping();
  const lat = new Latencies(MAX_PINGS_PER_ROUND);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + ms;
  let now = t0;
  while (now < end && lat.count < MAX_PINGS_PER_ROUND) {
    await ping();
    const t = performance.now();
    lat.add(t - now);
    now = t;
  }
  const cpu = process.cpuUsage(cpu0);
  return { perSec: (lat.count / (now - t0)) * 1000, lat, cpuUs: (cpu.user + cpu.system) / lat.count };
}

async function rawRound(ep: Endpoint, ms: number): Promise<Round> {
  const a = await RawAgent.connect(ep);
  try {
    return await loop(() => a.ping(), ms);
  } finally {
    await a.close();
  }
}

/** AgentConnection driven one exchange at a time, with a promise per exchange (no queue, no timers). */
class WireClient implements WireListener {
  readonly conn: AgentConnection;
  private waiter: { resolve: (reply: AgentReply | undefined) => void; reject: (err: Error) => void } | undefined;

  constructor(ep: Endpoint) {
    this.conn = new AgentConnection(ep, 32 * 1024 * 1024, this);
  }

  /** the next report: the socket open (undefined) or the pending exchange's answer */
  next(): Promise<AgentReply | undefined> {
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  sync(): Promise<AgentReply | undefined> {
    const answered = this.next();
    this.conn.sync();
    return answered;
  }

  ping(): Promise<AgentReply | undefined> {
    const answered = this.next();
    this.conn.request('guest-ping', undefined, false);
    return answered;
  }

  onWireOpen(): void {
    this.waiter?.resolve(undefined);
  }

  onWireAnswer(_conn: AgentConnection, reply: AgentReply): void {
    this.waiter?.resolve(reply);
  }

  onWireViolation(_conn: AgentConnection, err: Error): void {
    this.waiter?.reject(err);
  }

  onWireClose(_conn: AgentConnection, err: Error): void {
    this.waiter?.reject(err);
  }

  onWireStale(): void {}

  onWireStray(): void {}
}

/** the Channel's wire layer alone: line decoder, lossless JSON parse, reply pairing; no queue */
async function connectionRound(ep: Endpoint, ms: number): Promise<Round> {
  const wire = new WireClient(ep);
  try {
    await wire.next();
    await wire.sync();
    return await loop(() => wire.ping(), ms);
  } finally {
    wire.conn.destroy();
  }
}

async function channelRound(ep: Endpoint, ms: number): Promise<Round> {
  const ch = new Channel({ ...channelOptions(), vm: 'bench', endpoint: ep });
  try {
    return await loop(() => ch.execute('guest-ping'), ms);
  } finally {
    await ch.close();
  }
}

interface Result {
  target: string;
  raw: Round[];
  connection: Round[];
  channel: Round[];
}

async function measure(target: string, ep: Endpoint, rounds: number, ms: number): Promise<Result> {
  const res: Result = { target, raw: [], connection: [], channel: [] };
  const clients = [
    () => rawRound(ep, ms).then((x) => res.raw.push(x)),
    // the wire layer alone is a diagnostic: BENCH_CHANNEL_WIRE=0 (npm run bench) leaves it out
    ...(process.env.BENCH_CHANNEL_WIRE === '0' ? [] : [() => connectionRound(ep, ms).then((x) => res.connection.push(x))]),
    () => channelRound(ep, ms).then((x) => res.channel.push(x)),
  ];
  for (let r = 0; r < rounds; r++) {
    // rotate which goes first, so a drift in machine load does not favour one client
    for (let k = 0; k < clients.length; k++) await clients[(r + k) % clients.length]();
  }
  return res;
}

function pooled(rs: Round[]): Latencies {
  const all = new Latencies(MAX_PINGS_PER_ROUND * rs.length);
  for (const r of rs) all.addAll(r.lat);
  return all;
}

export default async function channelBench(): Promise<BenchSection> {
  const rounds = Number(process.env.BENCH_CHANNEL_ROUNDS ?? 3);
  const ms = Number(process.env.BENCH_CHANNEL_MS ?? 1500);
  const results: Result[] = [];
  const sim = await startSimChild(1);
  try {
    results.push(await measure('simulator (child process)', sim.vms[0].endpoint, rounds, ms));
  } finally {
    await sim.stop();
  }
  const ga = await startQemuGa();
  try {
    results.push(await measure('real qemu-ga', { type: 'unix', path: ga.socketPath }, rounds, ms));
  } finally {
    await ga.stop();
  }

  const rows: Array<Array<string | number>> = [];
  const summary: string[] = [];
  const checks: Check[] = [];
  for (const r of results) {
    const clients = [['raw socket loop', r.raw], ['AgentConnection (wire layer only)', r.connection], ['Channel', r.channel]] as const;
    for (const [client, rs] of clients) {
      if (rs.length === 0) continue;
      const lat = pooled(rs);
      rows.push([
        r.target,
        client,
        rs.map((x) => fmtRate(x.perSec)).join(' / '),
        `**${fmtRate(median(rs.map((x) => x.perSec)))}**`,
        fmtMs(lat.quantile(0.5)),
        fmtMs(lat.quantile(0.99)),
        median(rs.map((x) => x.cpuUs)).toFixed(1),
      ]);
    }
    // per-round ratios pair each Channel round with the raw round next to it in time
    const ratios = r.channel.map((c, i) => c.perSec / r.raw[i].perSec);
    const rawMed = median(r.raw.map((x) => x.perSec));
    const chMed = median(r.channel.map((x) => x.perSec));
    const extraUs = (1 / chMed - 1 / rawMed) * 1e6;
    const cpu = (rs: Round[]) => median(rs.map((x) => x.cpuUs));
    const cpuRatio = cpu(r.channel) / cpu(r.raw);
    checks.push(check('1', `${r.target}: Channel client CPU per ping / raw socket loop's`, cpuRatio, '≤', 1.5));
    summary.push(
      `- **${r.target}**: Channel / raw = **${fmtRatio(median(ratios))}** (rounds: ${ratios.map(fmtRatio).join(', ')}); ` +
        `the Channel adds ≈ ${extraUs.toFixed(0)} µs per round trip (p50 ${fmtMs(pooled(r.channel).quantile(0.5))} vs ${fmtMs(pooled(r.raw).quantile(0.5))}); ` +
        `client CPU per ping Channel / raw = ${fmtRatio(cpuRatio)} (raw ${cpu(r.raw).toFixed(1)} µs, Channel ${cpu(r.channel).toFixed(1)} µs` +
        (r.connection.length
          ? `; + wire layer ${(cpu(r.connection) - cpu(r.raw)).toFixed(0)} µs, + queue/state machine/events ${(cpu(r.channel) - cpu(r.connection)).toFixed(0)} µs).`
          : ').'),
    );
  }
  const markdown = [
    `guest-ping, one at a time on one connection, ${rounds} rounds of ${ms} ms per client and agent (the clients ` +
      `take turns, ${WARMUP} warm-up pings each, connect + sync not timed). The raw loop writes \`{"execute":"guest-ping"}\\n\` ` +
      `and waits for one reply line. AgentConnection (src/qga/connection.ts) is the Channel's wire layer on its own: line ` +
      `decoder, lossless JSON parse, reply pairing. The Channel adds its queue, deadline bookkeeping, abort signal, request id, ` +
      `event emission and state machine. Latency percentiles pool all rounds. "Client CPU" is this process's ` +
      `user + system time divided by pings: the least noise-sensitive figure on a shared machine.`,
    '',
    table(['agent', 'client', 'pings/s per round', 'median pings/s', 'p50', 'p99', 'client CPU µs/ping'], rows),
    '',
    ...summary,
    '',
    'A ratio near 1 means the agent (and the socket round trip) dominates; below 1, the Channel\'s own CPU time shows. ' +
      'The simulator answers from another process; qemu-ga from its glib main loop.',
  ].join('\n');
  return { title: 'Channel: guest-ping round trips, Channel vs raw socket loop', markdown, checks };
}
