/**
 * A real 3-master Redis Cluster for tests, on free loopback ports in a temp dir: cluster-enabled
 * servers (each with its own cluster bus port, `cluster-port`), the 16384 slots split in three with
 * CLUSTER ADDSLOTSRANGE, joined with CLUSTER MEET. start returns once every node reports
 * cluster_state:ok and knows every node (about 2 s). Without replicas (the default) a node killed
 * is its slots lost (CLUSTERDOWN). `replicas: true` adds one replica per master (CLUSTER REPLICATE,
 * in sync before start returns) and a cluster-node-timeout of 1 s, so that killMaster() is a real
 * Cluster failover of a few seconds.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, rawCommand, spawnRedisServer, type RedisProcess } from './redis.js';

export interface TestRedisCluster {
  /** seed nodes (the masters) as store.clusterNodes wants them: 127.0.0.1:port */
  nodes: string[];
  /** the masters' ports as started */
  ports: number[];
  /** with replicas: replicaPorts[i] replicates ports[i] */
  replicaPorts: number[];
  /** one raw command to one node */
  command(port: number, ...args: string[]): Promise<string>;
  /**
   * With replicas: SIGKILL master `i`, then wait until its replica answers as a master and every
   * surviving node reports cluster_state:ok. Resolves with how long that took.
   */
  killMaster(i: number): Promise<{ from: number; to: number; ms: number }>;
  stop(): Promise<void>;
}

const SLOTS: Array<[number, number]> = [
  [0, 5460],
  [5461, 10922],
  [10923, 16383],
];

async function until(what: string, boundMs: number, cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + boundMs;
  for (;;) {
    if (await cond().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`redis-cluster: ${what} not within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** the first bulk string of a reply ($n\r\n<text>\r\n) */
function bulk(reply: string): string {
  const i = reply.indexOf('\r\n');
  return reply.startsWith('$') && i >= 0 ? reply.slice(i + 2, reply.indexOf('\r\n', i + 2)) : reply;
}

export async function startRedisCluster(opts: { replicas?: boolean } = {}): Promise<TestRedisCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-rcluster-'));
  const procs = new Map<number, RedisProcess>();
  const count = opts.replicas ? 6 : 3;
  try {
    const ports: number[] = [];
    const buses: number[] = [];
    for (let i = 0; i < count; i++) {
      ports.push(await freePort());
      buses.push(await freePort());
      await mkdir(path.join(dir, `n${i}`));
    }
    const started = await Promise.all(
      ports.map((port, i) =>
        spawnRedisServer(
          [
            '--port', String(port),
            '--bind', '127.0.0.1',
            '--dir', path.join(dir, `n${i}`),
            '--cluster-enabled', 'yes',
            '--cluster-config-file', 'nodes.conf',
            '--cluster-port', String(buses[i]),
            '--cluster-node-timeout', opts.replicas ? '1000' : '2000',
            '--repl-diskless-sync-delay', '0',
            '--save', '',
            '--appendonly', 'no',
            '--protected-mode', 'no',
            '--loglevel', 'warning',
          ],
          port,
        ),
      ),
    );
    started.forEach((p) => procs.set(p.port, p));
    const masters = ports.slice(0, 3);
    const replicas = ports.slice(3);
    for (let i = 0; i < 3; i++) {
      const r = await rawCommand(masters[i], ['CLUSTER', 'ADDSLOTSRANGE', String(SLOTS[i][0]), String(SLOTS[i][1])]);
      if (!r.startsWith('+OK')) throw new Error(`CLUSTER ADDSLOTSRANGE on ${masters[i]}: ${r}`);
    }
    for (let i = 1; i < count; i++) {
      const r = await rawCommand(ports[0], ['CLUSTER', 'MEET', '127.0.0.1', String(ports[i]), String(buses[i])]);
      if (!r.startsWith('+OK')) throw new Error(`CLUSTER MEET ${ports[i]}: ${r}`);
    }
    if (replicas.length > 0) {
      const ids = await Promise.all(masters.map(async (p) => bulk(await rawCommand(p, ['CLUSTER', 'MYID']))));
      for (let i = 0; i < replicas.length; i++) {
        // the replica must know its master first (gossip after MEET)
        await until(`node ${replicas[i]} learning of ${masters[i]}`, 10_000, async () => (await rawCommand(replicas[i], ['CLUSTER', 'NODES'])).includes(ids[i]));
        const r = await rawCommand(replicas[i], ['CLUSTER', 'REPLICATE', ids[i]]);
        if (!r.startsWith('+OK')) throw new Error(`CLUSTER REPLICATE on ${replicas[i]}: ${r}`);
      }
      for (const p of replicas) await until(`replica ${p} in sync`, 10_000, async () => /master_link_status:up/.test(await rawCommand(p, ['INFO', 'replication'])));
    }
    for (const port of ports) {
      await until(`node ${port} ok`, 15_000, async () => {
        const info = await rawCommand(port, ['CLUSTER', 'INFO']);
        return info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${count}`);
      });
    }
    return {
      nodes: masters.map((p) => `127.0.0.1:${p}`),
      ports: masters,
      replicaPorts: replicas,
      command: (port, ...args) => rawCommand(port, args),
      async killMaster(i) {
        const from = masters[i];
        const to = replicas[i];
        if (to === undefined) throw new Error('redis-cluster: killMaster needs replicas: true');
        const t0 = Date.now();
        await procs.get(from)?.stop('SIGKILL');
        await until(`replica ${to} promoted`, 20_000, async () => (await rawCommand(to, ['ROLE'])).includes('master'));
        for (const p of ports.filter((x) => x !== from)) {
          await until(`node ${p} ok after the failover`, 20_000, async () => (await rawCommand(p, ['CLUSTER', 'INFO'])).includes('cluster_state:ok'));
        }
        return { from, to, ms: Date.now() - t0 };
      },
      async stop() {
        await Promise.all([...procs.values()].map((p) => p.stop('SIGKILL')));
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await Promise.all([...procs.values()].map((p) => p.stop('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
