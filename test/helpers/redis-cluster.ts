/**
 * A real 3-master Redis Cluster for tests, on free loopback ports in a temp dir: cluster-enabled
 * servers (each with its own cluster bus port, `cluster-port`), the 16384 slots split in three with
 * CLUSTER ADDSLOTSRANGE, joined with CLUSTER MEET. start returns once every node reports
 * cluster_state:ok and knows the 3 nodes (about a second). No replicas: a node killed is its
 * slots lost (CLUSTERDOWN), which is what a test of that wants.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, rawCommand, spawnRedisServer, type RedisProcess } from './redis.js';

export interface TestRedisCluster {
  /** seed nodes as store.clusterNodes wants them: 127.0.0.1:port */
  nodes: string[];
  ports: number[];
  /** one raw command to one node */
  command(port: number, ...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

const SLOTS: Array<[number, number]> = [
  [0, 5460],
  [5461, 10922],
  [10923, 16383],
];

export async function startRedisCluster(): Promise<TestRedisCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-rcluster-'));
  const procs: RedisProcess[] = [];
  try {
    const ports: number[] = [];
    const buses: number[] = [];
    for (let i = 0; i < 3; i++) {
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
            '--cluster-node-timeout', '2000',
            '--save', '',
            '--appendonly', 'no',
            '--protected-mode', 'no',
            '--loglevel', 'warning',
          ],
          port,
        ),
      ),
    );
    procs.push(...started);
    for (let i = 0; i < 3; i++) {
      const r = await rawCommand(ports[i], ['CLUSTER', 'ADDSLOTSRANGE', String(SLOTS[i][0]), String(SLOTS[i][1])]);
      if (!r.startsWith('+OK')) throw new Error(`CLUSTER ADDSLOTSRANGE on ${ports[i]}: ${r}`);
    }
    for (let i = 1; i < 3; i++) {
      const r = await rawCommand(ports[0], ['CLUSTER', 'MEET', '127.0.0.1', String(ports[i]), String(buses[i])]);
      if (!r.startsWith('+OK')) throw new Error(`CLUSTER MEET ${ports[i]}: ${r}`);
    }
    const end = Date.now() + 15_000;
    for (const port of ports) {
      for (;;) {
        const info = await rawCommand(port, ['CLUSTER', 'INFO']).catch(() => '');
        if (info.includes('cluster_state:ok') && info.includes('cluster_known_nodes:3')) break;
        if (Date.now() > end) throw new Error(`redis-cluster: node ${port} not ok within 15 s: ${info}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return {
      nodes: ports.map((p) => `127.0.0.1:${p}`),
      ports,
      command: (port, ...args) => rawCommand(port, args),
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
