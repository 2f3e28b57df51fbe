/**
 * A real Redis Sentinel set-up for tests, on free loopback ports in a temp dir: a master, one
 * replica and 3 sentinels (`redis-server <conf> --sentinel`; Debian ships no redis-sentinel binary)
 * with quorum 2, down-after-milliseconds 1000 and failover-timeout 5000, so that a killed master is
 * replaced by the replica within a few seconds. start returns once every sentinel knows the
 * replica and the two other sentinels (a failover needs them), and the replica is in sync.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { rawAuthCommand, rawCommand, spawnOnFreePort, type RedisProcess } from './redis.js';

export const SENTINEL_MASTER_NAME = 'qga-test';
const DOWN_AFTER_MS = 1_000;
const FAILOVER_TIMEOUT_MS = 5_000;

export interface TestSentinel {
  /** the sentinels as store.sentinels wants them: 127.0.0.1:port */
  sentinels: string[];
  name: string;
  /** the data nodes' ports as started: the master, then its replica */
  dataPorts: [number, number];
  /** the port the sentinels name as master now */
  masterPort(): Promise<number>;
  /**
   * A real failover: SIGKILL the current master, then wait until every sentinel names the replica
   * and it answers as a master. Resolves with the old and new master ports and how long it took.
   */
  killMaster(): Promise<{ from: number; to: number; ms: number }>;
  /** one raw command to a data node */
  command(port: number, ...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** The bulk strings of a RESP reply, in order (enough for flat arrays of strings and numbers). */
export function respStrings(reply: string): string[] {
  const out: string[] = [];
  const lines = reply.split('\r\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith('$') && l !== '$-1') out.push(lines[++i] ?? '');
    else if (l.startsWith(':') || l.startsWith('+')) out.push(l.slice(1));
  }
  return out;
}

/** a flat RESP map (SENTINEL MASTER): field → value */
function respMap(reply: string): Record<string, string> {
  const s = respStrings(reply);
  const m: Record<string, string> = {};
  for (let i = 0; i + 1 < s.length; i += 2) m[s[i]] = s[i + 1];
  return m;
}

async function until(what: string, boundMs: number, cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + boundMs;
  for (;;) {
    if (await cond().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`redis-sentinel: ${what} not within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `password`: every data node and sentinel wants it (requirepass for the default user; the replica
 * and the sentinels are configured with it: masterauth, sentinel auth-pass / sentinel-pass).
 */
export async function startRedisSentinel(opts: { password?: string } = {}): Promise<TestSentinel> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-sentinel-'));
  const procs: RedisProcess[] = [];
  const pw = opts.password;
  // one raw command, authenticated when the set-up has a password
  const raw = (port: number, args: string[]): Promise<string> => (pw ? rawAuthCommand(port, [pw], args) : rawCommand(port, args));
  try {
    const auth = pw ? ['--requirepass', pw, '--masterauth', pw] : [];
    const dataArgs = (port: number, sub: string) => ['--port', String(port), '--bind', '127.0.0.1', '--dir', sub, '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--loglevel', 'warning', ...auth];
    for (const sub of ['m', 'r', 's0', 's1', 's2']) await mkdir(path.join(dir, sub));
    // no 5 s wait before a diskless full sync (7.0's default): the replica is in sync at once
    const master = await spawnOnFreePort((port) => [...dataArgs(port, path.join(dir, 'm')), '--repl-diskless-sync-delay', '0']);
    procs.push(master);
    const mPort = master.port;
    const replica = await spawnOnFreePort((port) => [...dataArgs(port, path.join(dir, 'r')), '--replicaof', '127.0.0.1', String(mPort), '--repl-diskless-sync-delay', '0']);
    procs.push(replica);
    const rPort = replica.port;
    await until('replica in sync', 10_000, async () => /master_link_status:up/.test(await raw(rPort, ['INFO', 'replication'])));

    const started = await Promise.all(
      [0, 1, 2].map((i) => spawnOnFreePort(async (port) => {
        const conf = path.join(dir, `s${i}`, 'sentinel.conf');
        await writeFile(
          conf,
          [
            `port ${port}`,
            'bind 127.0.0.1',
            'protected-mode no',
            `dir ${path.join(dir, `s${i}`)}`,
            'loglevel warning',
            `sentinel monitor ${SENTINEL_MASTER_NAME} 127.0.0.1 ${mPort} 2`,
            `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} ${DOWN_AFTER_MS}`,
            `sentinel failover-timeout ${SENTINEL_MASTER_NAME} ${FAILOVER_TIMEOUT_MS}`,
            `sentinel parallel-syncs ${SENTINEL_MASTER_NAME} 1`,
            ...(pw ? [`requirepass ${pw}`, `sentinel auth-pass ${SENTINEL_MASTER_NAME} ${pw}`, `sentinel sentinel-pass ${pw}`] : []),
            '',
          ].join('\n'),
        );
        return [conf, '--sentinel'];
      })),
    );
    procs.push(...started);
    const sentinelPorts = started.map((p) => p.port);
    // hello messages go every 2 s on the master: each sentinel must know the others and the replica
    for (const p of sentinelPorts) {
      await until(`sentinel ${p} discovering its peers and the replica`, 15_000, async () => {
        const m = respMap(await raw(p, ['SENTINEL', 'MASTER', SENTINEL_MASTER_NAME]));
        return m['num-other-sentinels'] === '2' && m['num-slaves'] === '1';
      });
    }

    const byPort = new Map<number, RedisProcess>(procs.map((p) => [p.port, p]));
    const masterPort = async (): Promise<number> => {
      const [, port] = respStrings(await raw(sentinelPorts[0], ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_MASTER_NAME]));
      return Number(port);
    };
    return {
      sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`),
      name: SENTINEL_MASTER_NAME,
      dataPorts: [mPort, rPort],
      masterPort,
      async killMaster() {
        const from = await masterPort();
        const t0 = Date.now();
        await byPort.get(from)?.stop('SIGKILL');
        let to = 0;
        await until('a failover to the replica', 20_000, async () => {
          const named = await Promise.all(sentinelPorts.map(async (p) => Number(respStrings(await raw(p, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_MASTER_NAME]))[1])));
          to = named[0];
          if (to === from || named.some((n) => n !== to)) return false;
          return respStrings(await raw(to, ['ROLE']))[0] === 'master';
        });
        return { from, to, ms: Date.now() - t0 };
      },
      command: (port, ...args) => raw(port, args),
      async stop() {
        await Promise.all(procs.map((p) => p.stop('SIGKILL')));
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
