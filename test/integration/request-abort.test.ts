/**
 * The abort signal of agent calls made through signalOptions (src/http/abort.ts): one per HTTP
 * connection, made at the first call, aborted when the connection closes. A client that goes
 * away takes its queued command out of the VM's queue; a keep-alive connection serves call after
 * call on the same signal; a connection that closes after its answers aborts nobody else's call.
 */
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { listen } from '../helpers/app.js';
import { makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
let a: SimAgent;
let app: FastifyInstance;
let port: number;

beforeAll(async () => {
  fleet = await startSim();
  a = await fleet.add({ name: 'ab1' });
  app = await makeRoutesApp({ vms: [{ name: 'ab1', endpoint: a.endpoint }] });
  port = Number(new URL(await listen(app)).port);
  expect((await app.inject({ method: 'GET', url: '/v1/vms/ab1/ping' })).statusCode).toBe(200);
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

/** A raw keep-alive connection: send requests, read whole responses (Content-Length bodies). */
function connection(): { socket: net.Socket; get(path: string): Promise<string> } {
  const socket = net.connect(port, '127.0.0.1');
  let buf = '';
  let waiting: (() => void) | undefined;
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    buf += d;
    waiting?.();
  });
  return {
    socket,
    get(path) {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      return new Promise((resolve) => {
        const check = (): void => {
          const end = buf.indexOf('\r\n\r\n');
          const m = /content-length: (\d+)/i.exec(buf);
          if (end >= 0 && m && buf.length >= end + 4 + Number(m[1])) {
            const status = buf.split('\r\n')[0] ?? '';
            buf = buf.slice(end + 4 + Number(m[1]));
            waiting = undefined;
            resolve(status);
          }
        };
        waiting = check;
        check();
      });
    },
  };
}

const queued = (): number => app.services.pool.stats().queued;

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('agent calls abort with their HTTP connection', () => {
  it('keep-alive: three pings on one connection are 200; the connection closing afterwards aborts nothing', async () => {
    const c = connection();
    for (let i = 0; i < 3; i++) expect(await c.get('/v1/vms/ab1/ping')).toBe('HTTP/1.1 200 OK');
    c.socket.destroy();
    // another client's call still answers
    expect((await app.inject({ method: 'GET', url: '/v1/vms/ab1/ping' })).statusCode).toBe(200);
  });

  it('a client that disconnects while its ping waits in the queue takes it out within 1 s; the call in flight is untouched', async () => {
    a.setFault({ command: 'guest-get-time', kind: 'delay', ms: 1500, times: 1 });
    try {
      const busy = app.inject({ method: 'GET', url: '/v1/vms/ab1/time' });
      await until(() => a.stats.commandLog.some((e) => e.command === 'guest-get-time'), 5000, 'guest-get-time at the agent');
      const c = connection();
      const answer = c.get('/v1/vms/ab1/ping');
      await until(() => queued() === 1, 5000, 'the ping queued');
      const pingsBefore = a.stats.commandLog.filter((e) => e.command === 'guest-ping').length;
      const t0 = Date.now();
      c.socket.destroy();
      await until(() => queued() === 0, 1000, 'the ping out of the queue');
      const left = Date.now() - t0;
      expect(left).toBeGreaterThanOrEqual(0);
      expect(left).toBeLessThan(1000);
      // the call in flight (delayed 1.5 s at the agent) still answers
      expect((await busy).statusCode).toBe(200);
      // the abandoned ping never reached the agent
      expect(a.stats.commandLog.filter((e) => e.command === 'guest-ping').length).toBe(pingsBefore);
      void answer;
    } finally {
      a.clearFaults();
    }
  });
});
