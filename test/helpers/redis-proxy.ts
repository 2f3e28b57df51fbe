/**
 * A TCP proxy in front of a redis-server for store fault tests. `partition()` stops forwarding in
 * both directions (bytes in flight stay unread, as across a partition that heals without RST);
 * `holdReplies()` stops only Redis → gateway, so commands still reach Redis and run but their
 * replies arrive late (a lost reply, from the caller's side); `heal()` forwards everything again.
 */
import net from 'node:net';

export interface RedisProxy {
  url: string;
  partition(): void;
  holdReplies(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startRedisProxy(targetPort: number): Promise<RedisProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let mode: 'open' | 'cut' | 'hold' = 'open';
  const apply = ([client, upstream]: [net.Socket, net.Socket]): void => {
    // pausing the readable side stops that direction
    if (mode === 'cut') client.pause();
    else client.resume();
    if (mode === 'open') upstream.resume();
    else upstream.pause();
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    apply(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const set = (m: typeof mode) => {
    mode = m;
    for (const p of pairs) apply(p);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    partition: () => set('cut'),
    holdReplies: () => set('hold'),
    heal: () => set('open'),
    async close() {
      for (const [c, u] of pairs) (c.destroy(), u.destroy());
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
