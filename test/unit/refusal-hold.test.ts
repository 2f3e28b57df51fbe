/**
 * RefusalHold (src/http/refusal-hold.ts) on stand-in replies: held refusals are sent after the
 * hold on a shared timer, in arrival order; at most one per connection and `max` in all; a reply
 * whose client went away is dropped unsent; release() sends every held one at once with
 * Connection: close and holds no more; holdMs 0 holds nothing.
 */
import type { FastifyReply } from 'fastify';
import { describe, expect, it } from 'vitest';
import { errors, type GatewayError } from '../../src/errors.js';
import { RefusalHold, TICK_MS } from '../../src/http/refusal-hold.js';

interface Sent {
  id: number;
  at: number;
  closing: boolean;
  /** a relayed refusal's body (holdRelayed); a refusal of this node's own goes through `send` */
  body?: string;
}

function rig(holdMs: number, max?: number) {
  const sent: Sent[] = [];
  let next = 0;
  const reply = (socket: object = {}) => {
    const id = next++;
    const headers: Record<string, string> = {};
    const r = {
      id,
      headers,
      raw: { destroyed: false },
      request: { raw: { socket } },
      header(k: string, v: string) {
        headers[k] = v;
        return r;
      },
      /** what a relayed refusal (holdRelayed) is sent with */
      send(body: Buffer) {
        sent.push({ id, at: performance.now(), closing: headers.connection === 'close', body: body.toString() });
        return r;
      },
    };
    return r;
  };
  const hold = new RefusalHold(
    holdMs,
    (r) => {
      const x = r as unknown as ReturnType<typeof reply>;
      sent.push({ id: x.id, at: performance.now(), closing: x.headers.connection === 'close' });
    },
    max,
  );
  const take = (r: ReturnType<typeof reply>, err: GatewayError = errors.queueFull('vm1', 'full')) => hold.hold(r as unknown as FastifyReply, err);
  return { hold, sent, reply, take };
}

const until = async (cond: () => boolean, ms = 2_000): Promise<void> => {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
};

describe('RefusalHold', () => {
  it('sends a held refusal holdMs later (within one tick), in arrival order, on one timer', async () => {
    const { hold, sent, reply, take } = rig(60);
    const t0 = performance.now();
    expect(take(reply())).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    expect(take(reply())).toBe(true);
    expect(hold.size).toBe(2);
    await until(() => sent.length === 2);
    expect(sent.map((s) => s.id)).toEqual([0, 1]);
    expect(sent[0].at - t0).toBeGreaterThanOrEqual(60 - TICK_MS);
    expect(sent[0].at - t0).toBeLessThan(60 + 100);
    expect(sent[1].at - t0).toBeGreaterThanOrEqual(80 - TICK_MS);
    expect(sent[1].at - t0).toBeLessThan(80 + 100);
    expect(sent.every((s) => !s.closing)).toBe(true);
    expect(hold.size).toBe(0);
    expect(hold.heldTotal).toBe(2);
  });

  it('holds at most one answer per connection: a second one on it is answered at once (false), a third after the first went out is held', async () => {
    const { hold, sent, reply, take } = rig(30);
    const socket = {};
    expect(take(reply(socket))).toBe(true);
    expect(take(reply(socket))).toBe(false);
    expect(take(reply({}))).toBe(true);
    expect(hold.size).toBe(2);
    await until(() => sent.length === 2);
    expect(sent.map((s) => s.id)).toEqual([0, 2]);
    expect(take(reply(socket))).toBe(true);
    await until(() => sent.length === 3);
    expect(hold.heldTotal).toBe(3);
  });

  it('holds at most `max` answers in all; beyond, false (answered at once)', () => {
    const { hold, reply, take } = rig(10_000, 2);
    expect(take(reply())).toBe(true);
    expect(take(reply())).toBe(true);
    expect(take(reply())).toBe(false);
    expect(hold.size).toBe(2);
    hold.release();
  });

  it('drops the answer of a client that went away while held (nothing sent), and frees its connection', async () => {
    const { hold, sent, reply, take } = rig(30);
    const socket = {};
    const gone = reply(socket);
    const stays = reply();
    expect(take(gone)).toBe(true);
    expect(take(stays)).toBe(true);
    gone.raw.destroyed = true;
    await until(() => hold.size === 0);
    expect(sent.map((s) => s.id)).toEqual([stays.id]);
    expect(take(reply(socket))).toBe(true);
    hold.release();
  });

  it('release() (shutdown) sends every held answer at once with Connection: close, and holds no more', () => {
    const { hold, sent, reply, take } = rig(10_000);
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) expect(take(reply())).toBe(true);
    hold.release();
    expect(sent).toHaveLength(5);
    expect(sent.every((s) => s.closing && s.at - t0 < 100)).toBe(true);
    expect(hold.size).toBe(0);
    expect(take(reply())).toBe(false);
  });

  it('holdRelayed: a refusal another node answered is held like one of this node (same FIFO, one per connection, release) and sent with its own body', async () => {
    const { hold, sent, reply, take } = rig(40);
    const socket = {};
    const t0 = performance.now();
    const relayed = reply(socket);
    expect(hold.holdRelayed(relayed as unknown as FastifyReply, Buffer.from('{"code":"QUEUE_FULL"}'))).toBe(true);
    // the same connection: its second refusal is answered at once, relayed or not
    expect(take(reply(socket))).toBe(false);
    expect(hold.holdRelayed(reply(socket) as unknown as FastifyReply, Buffer.from('x'))).toBe(false);
    expect(take(reply())).toBe(true);
    await until(() => sent.length === 2);
    expect(sent[0]).toMatchObject({ id: relayed.id, body: '{"code":"QUEUE_FULL"}', closing: false });
    expect(sent[0].at - t0).toBeGreaterThanOrEqual(40 - 1);
    expect(sent[0].at - t0).toBeLessThan(40 + TICK_MS + 500);
    expect(sent[1].body).toBeUndefined();
    expect(hold.heldTotal).toBe(2);
    // shutdown: a held relayed one goes out at once with Connection: close
    expect(hold.holdRelayed(reply() as unknown as FastifyReply, Buffer.from('y'))).toBe(true);
    hold.release();
    expect(sent[2]).toMatchObject({ body: 'y', closing: true });
    expect(hold.holdRelayed(reply() as unknown as FastifyReply, Buffer.from('z'))).toBe(false);
  });

  it('holdMs 0 holds nothing', () => {
    const { hold, reply, take } = rig(0);
    expect(take(reply())).toBe(false);
    expect(hold.size).toBe(0);
    expect(hold.heldTotal).toBe(0);
  });

  it('a long storm: the FIFO keeps only what is held (sent entries are dropped), every answer goes out once', async () => {
    const { hold, sent, reply, take } = rig(5);
    const n = 3_000;
    for (let i = 0; i < n; i++) {
      expect(take(reply())).toBe(true);
      if (i % 500 === 499) await new Promise((r) => setTimeout(r, 3));
    }
    await until(() => sent.length === n);
    expect(new Set(sent.map((s) => s.id)).size).toBe(n);
    expect(hold.size).toBe(0);
  });
});
