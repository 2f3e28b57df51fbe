// The floor of `npm run bench`: a raw-socket client of the guest agents in ITS OWN process (not
// the gateway's pool): per socket, 0xFF + guest-sync-delimited once, then `{"execute":"guest-ping"}\n`
// and wait for one reply line, again and again. An agent serves one command at a time per socket,
// so `connections` workers (at most one per endpoint) each own the endpoints w, w+W, … and ping
// them in turn, one ping in flight per worker.
//
//   node bench/lib/raw-load.mjs '{"endpoints":[{"type":"unix","path":"…"}],"connections":64,"durationMs":5000}'
//
// Prints `go`, `done`, then one JSON line: pings, elapsedMs, p50Ms, p99Ms, cpuS (this process).
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);

function connect(ep) {
  return new Promise((resolve, reject) => {
    const sock = ep.type === 'unix' ? net.connect(ep.path) : net.connect(ep.port, ep.host);
    sock.setNoDelay(true);
    let waiter;
    let parts = [];
    let synced = false;
    sock.on('data', (d) => {
      let start = 0;
      if (!synced) {
        const s = d.indexOf(0xff);
        if (s < 0) return;
        synced = true;
        start = s + 1;
      }
      let nl;
      while ((nl = d.indexOf(0x0a, start)) >= 0) {
        parts.push(d.subarray(start, nl));
        const line = parts.length === 1 ? parts[0].toString('latin1') : Buffer.concat(parts).toString('latin1');
        parts = [];
        start = nl + 1;
        const w = waiter;
        waiter = undefined;
        w?.(line);
      }
      if (start < d.length) parts.push(d.subarray(start));
    });
    sock.once('error', reject);
    const line = () => new Promise((r) => (waiter = r));
    sock.once('connect', async () => {
      const id = 1 + Math.floor(Math.random() * 1e9);
      const l = line();
      sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}\n`)]));
      if (!(await l).includes(String(id))) return reject(new Error('raw sync failed'));
      resolve({
        async ping() {
          const l = line();
          sock.write('{"execute":"guest-ping"}\n');
          const reply = await l;
          if (!reply.startsWith('{"return"')) throw new Error(`raw ping: ${reply}`);
        },
        close: () => sock.destroy(),
      });
    });
  });
}

const eps = spec.endpoints;
const W = Math.min(spec.connections, eps.length);
const socks = await Promise.all(eps.map(connect));
// warm-up: every socket once
for (const s of socks) await s.ping();
const lat = new Float64Array(4_000_000);
let n = 0;
process.stdout.write('go\n');
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const end = t0 + spec.durationMs;
await Promise.all(
  Array.from({ length: W }, async (_, w) => {
    const mine = socks.filter((_, i) => i % W === w);
    for (let k = 0; ; k++) {
      const s = performance.now();
      if (s >= end) return;
      await mine[k % mine.length].ping();
      if (n < lat.length) lat[n++] = performance.now() - s;
    }
  }),
);
const elapsedMs = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
process.stdout.write('done\n');
for (const s of socks) s.close();
const xs = Float64Array.from(lat.subarray(0, n)).sort();
const q = (p) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] : NaN);
process.stdout.write(`${JSON.stringify({ pings: n, elapsedMs, perSec: (n / elapsedMs) * 1000, workers: W, sockets: eps.length, p50Ms: q(0.5), p99Ms: q(0.99), cpuS: (cpu.user + cpu.system) / 1e6 })}\n`);
process.exit(0);
