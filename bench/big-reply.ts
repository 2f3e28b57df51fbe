/**
 * Issue 12 item 6: what one VM's 60 MiB reply costs the others. Two Channels (as the gateway
 * builds them, with the 64 MiB reply cap and the 256 MiB budget) to two agents served by a CHILD
 * process (so its memory is not ours): VM "big" answers guest-file-read with one ≈60 MiB line of
 * base64 as qemu-ga writes it ('/' escaped as '\/'); VM "small" answers guest-ping. While the big
 * reply streams in and is parsed, a loop pings "small" back to back: the slowest ping is the
 * head-of-line delay. This process's RSS is sampled every 5 ms: the peak above the settled
 * baseline is what the reply cost. Run with --expose-gc for a steadier baseline (optional).
 *
 * Env: BENCH_BIG_MIB (default 60) reply size; BENCH_BIG_ROUNDS (default 3).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Channel } from '../src/qga/channel.js';
import { ReplyBudget } from '../src/qga/reply-budget.js';
import { channelOptions } from './lib/channels.js';
import { fmtMs, quantile, table } from './lib/stats.js';
import { check, type BenchSection } from './section.js';

const MiB = 1024 * 1024;

/** the child: two unix-socket agents speaking enough QGA (0xFF, sync-delimited, info, ping, file-read) */
const AGENT_SRC = `
const net = require('node:net'); const crypto = require('node:crypto');
const [dir, mib] = process.argv.slice(1);
const raw = crypto.randomBytes(Math.floor(Number(mib) * 1024 * 1024 * 3 / 4 / 1.016));
const b64 = Buffer.from(raw.toString('base64').replace(/\\//g, '\\\\/'), 'latin1');
const cmds = ['guest-ping', 'guest-file-read'].map((n) => ({ name: n, enabled: true, 'success-response': true }));
for (const name of ['big', 'small']) {
  net.createServer((sock) => {
    sock.on('error', () => {});
    let buf = ''; let chain = Promise.resolve();
    const write = (d) => new Promise((r) => (sock.write(d) ? r() : sock.once('drain', r)));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const ff = buf.indexOf('\\xff'); const nl = buf.indexOf('\\n');
        if (ff >= 0 && (nl < 0 || ff < nl)) { buf = buf.slice(ff + 1); chain = chain.then(() => write('{"error": {"class": "GenericError", "desc": "JSON parse error"}}\\n')); continue; }
        if (nl < 0) break;
        const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
        if (line.trim()) chain = chain.then(() => handle(JSON.parse(line)));
      }
    });
    const handle = async (req) => {
      const id = req.id === undefined ? '' : ', "id": ' + req.id;
      if (req.execute === 'guest-sync-delimited') return write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": ' + req.arguments.id + '}\\n')]));
      if (req.execute === 'guest-info') return write('{"return": {"version": "10.0.0", "supported_commands": ' + JSON.stringify(cmds) + '}' + id + '}\\n');
      if (req.execute === 'guest-file-read') {
        await write('{"return": {"count": ' + raw.length + ', "buf-b64": "');
        for (let i = 0; i < b64.length; i += 65536) await write(b64.subarray(i, i + 65536));
        return write('", "eof": false}' + id + '}\\n');
      }
      return write('{"return": {}' + id + '}\\n');
    };
  }).listen(dir + '/' + name + '.sock');
}
process.stdout.write('ready ' + b64.length + '\\n');
`;

const gc = (globalThis as { gc?: () => void }).gc;

async function settledRss(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 50));
  }
  return process.memoryUsage().rss;
}

interface Round {
  replyBytes: number;
  replyMs: number;
  pings: number;
  maxPingMs: number;
  p99PingMs: number;
  baselineMaxPingMs: number;
  rssBefore: number;
  rssPeak: number;
}

export default async function bigReply(): Promise<BenchSection> {
  const mib = Number(process.env.BENCH_BIG_MIB ?? 60);
  const rounds = Number(process.env.BENCH_BIG_ROUNDS ?? 3);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-big-'));
  const child = spawn(process.execPath, ['-e', AGENT_SRC, dir, String(mib)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lineBytes = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(String(d).split(' ')[1])));
    child.once('exit', (c) => reject(new Error(`agent child exited ${c}`)));
  });
  const budget = new ReplyBudget(256 * MiB);
  const mk = (vm: string) => new Channel({ ...channelOptions(), vm, endpoint: { type: 'unix', path: path.join(dir, `${vm}.sock`) }, maxReplyBytes: 64 * MiB, replyBudget: budget });
  const big = mk('big');
  const small = mk('small');
  const results: Round[] = [];
  try {
    await big.execute('guest-ping');
    await small.execute('guest-ping');
    for (let r = 0; r < rounds; r++) {
      // baseline: the same ping loop for 500 ms with nothing else going on
      const base: number[] = [];
      for (const end = performance.now() + 500; performance.now() < end; ) {
        const t = performance.now();
        await small.execute('guest-ping');
        base.push(performance.now() - t);
      }
      const rssBefore = await settledRss();
      let rssPeak = rssBefore;
      const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 5);
      const lat: number[] = [];
      let done = false;
      const t0 = performance.now();
      const reply = big.execute('guest-file-read', { handle: 1, count: 48_000_000 }, { timeoutMs: 60_000 }).finally(() => (done = true));
      while (!done) {
        const t = performance.now();
        await small.execute('guest-ping');
        lat.push(performance.now() - t);
      }
      const value = (await reply) as { 'buf-b64': string };
      const replyMs = performance.now() - t0;
      clearInterval(sampler);
      if (value['buf-b64'].length < lineBytes * 0.9) throw new Error('short reply');
      results.push({
        replyBytes: lineBytes,
        replyMs,
        pings: lat.length,
        maxPingMs: Math.max(...lat),
        p99PingMs: quantile(lat, 0.99),
        baselineMaxPingMs: Math.max(...base),
        rssBefore,
        rssPeak,
      });
    }
  } finally {
    big.destroy();
    small.destroy();
    child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
  const rows = results.map((x, i) => [
    i + 1,
    (x.replyBytes / MiB).toFixed(1),
    fmtMs(x.replyMs),
    x.pings,
    fmtMs(x.p99PingMs),
    fmtMs(x.maxPingMs),
    fmtMs(x.baselineMaxPingMs),
    ((x.rssPeak - x.rssBefore) / MiB).toFixed(0),
    ((x.rssPeak - x.rssBefore) / x.replyBytes).toFixed(2),
  ]);
  const worst = Math.max(...results.map((x) => x.maxPingMs));
  const worstRss = Math.max(...results.map((x) => (x.rssPeak - x.rssBefore) / x.replyBytes));
  return {
    title: 'One big reply vs. the other VMs (head-of-line delay, RSS)',
    markdown: [
      `Two channels (reply cap 64 MiB, budget 256 MiB) to two agents in a child process. VM "big" answers guest-file-read with one ${mib} MiB line of base64 ('/' escaped as qemu-ga does), streamed in 64 KiB writes; meanwhile VM "small" is pinged back to back. Lines over 1 MiB are parsed incrementally as their chunks arrive (src/qga/stream-json.ts). RSS of this process sampled every 5 ms${gc ? ' (baseline after gc)' : ''}.`,
      '',
      table(['round', 'reply MiB', 'reply took', 'pings during it', 'ping p99', 'ping max', 'ping max, idle baseline', 'RSS peak − before, MiB', '× reply size'], rows),
      '',
      `- slowest ping of the other VM while the big reply was received and parsed: **${fmtMs(worst)}** (target ≤ 100 ms)`,
      `- RSS cost of the reply: at most **${worstRss.toFixed(2)}×** its size (target ≤ 2×)`,
      '- Not included: serializing such a reply into an HTTP response (the raw passthrough) is done by the route on the main thread afterwards.',
    ].join('\n'),
    checks: [
      check('12', `issue 12: slowest ping of another VM during a ${mib} MiB reply (ms)`, worst, '≤', 100, (x) => x.toFixed(1)),
      check('12', 'issue 12: RSS cost of the big reply / its size', worstRss, '≤', 2),
    ],
  };
}
