/**
 * The simulator's scripted faults, seen from a raw socket: what bytes arrive (or do not) for
 * each kind, how `times` limits them, and how a hang holds the single-threaded agent until it is
 * cleared or the client leaves.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/qga/types.js';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { parseJson } from '../../src/util/json.js';

class Client {
  buf = Buffer.alloc(0);
  ended = false;
  private wake: (() => void) | undefined;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    sock.on('close', () => {
      this.ended = true;
      this.wake?.();
    });
    sock.on('error', () => undefined);
  }

  static open(vm: SimAgent): Promise<Client> {
    const ep = vm.endpoint as { path: string };
    return new Promise((resolve, reject) => {
      const s = net.connect(ep.path);
      s.once('connect', () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }

  send(o: JsonObject): void {
    this.sock.write(`${JSON.stringify(o)}\n`);
  }

  async until(pred: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out; have ${JSON.stringify(this.buf.toString('latin1').slice(0, 200))}`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  async line(): Promise<string> {
    await this.until(() => this.buf.includes(0x0a));
    const i = this.buf.indexOf(0x0a);
    const l = this.buf.subarray(0, i).toString('latin1');
    this.buf = this.buf.subarray(i + 1);
    return l;
  }
}

let dir: string;
let sim: Simulator;
let vm: SimAgent;
let clients: Client[];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'sim-faults-'));
  sim = new Simulator({ dir });
  vm = await sim.addVm({ name: 'vm1' });
  clients = [];
});

afterEach(async () => {
  for (const c of clients) c.sock.destroy();
  await sim.close();
  await rm(dir, { recursive: true, force: true });
});

async function client(): Promise<Client> {
  const c = await Client.open(vm);
  clients.push(c);
  return c;
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('faults', () => {
  it('garbage: a non-JSON line replaces the reply, and only `times` replies are hit', async () => {
    vm.setFault({ command: 'guest-ping', kind: 'garbage', times: 1 });
    const c = await client();
    c.send({ execute: 'guest-ping' });
    expect(await c.line()).toBe('#<garbage from the simulator: not JSON>#');
    c.send({ execute: 'guest-ping' });
    expect(await c.line()).toBe('{"return": {}}');
    vm.setFault({ command: '*', kind: 'garbage', bytes: 'x\u0001y', times: 1 });
    c.send({ execute: 'guest-info' });
    expect(await c.line()).toBe('x\u0001y');
  });

  it('partial-line: half a reply with no newline, and the next reply is glued to it', async () => {
    vm.setFault({ command: 'guest-get-host-name', kind: 'partial-line', times: 1 });
    const c = await client();
    c.send({ execute: 'guest-get-host-name' });
    c.send({ execute: 'guest-ping' });
    const full = '{"return": {"host-name": "vm1"}}\n';
    expect(await c.line()).toBe(`${full.slice(0, Math.floor(full.length / 2))}{"return": {}}`);
  });

  it('oversize: a valid reply line of about the requested size, with the id echoed', async () => {
    vm.setFault({ command: 'guest-get-osinfo', kind: 'oversize', bytes: 3 * 1024 * 1024, times: 1 });
    const c = await client();
    c.send({ execute: 'guest-get-osinfo', id: 'big' });
    const line = await c.line();
    expect(line.length).toBeGreaterThanOrEqual(3 * 1024 * 1024 - 1);
    expect(line.length).toBeLessThanOrEqual(3 * 1024 * 1024);
    const parsed = parseJson(line) as { return: { padding: string }; id: string };
    expect(parsed.id).toBe('big');
    expect(parsed.return.padding).toMatch(/^x+$/);
  });

  it('error: the given error object instead of running the command', async () => {
    vm.setFault({ command: 'guest-file-open', kind: 'error', class: 'GenericError', desc: 'disk on fire' });
    const c = await client();
    c.send({ execute: 'guest-file-open', arguments: { path: '/tmp/never', mode: 'w' }, id: 1 });
    expect(await c.line()).toBe('{"id": 1, "error": {"class": "GenericError", "desc": "disk on fire"}}');
    expect(vm.readFile('/tmp/never')).toBeUndefined();
    expect(vm.stats.openHandles).toBe(0);
  });

  it('no-reply: the command runs but nothing is sent', async () => {
    vm.setFault({ command: 'guest-file-open', kind: 'no-reply', times: 1 });
    const c = await client();
    c.send({ execute: 'guest-file-open', arguments: { path: '/tmp/made', mode: 'w' } });
    c.send({ execute: 'guest-sync', arguments: { id: 3 } });
    expect(await c.line()).toBe('{"return": 3}');
    expect(vm.readFile('/tmp/made')?.length).toBe(0);
    expect(vm.stats.openHandles).toBe(1);
  });

  it('hang: nothing behind it is answered until clearFaults(); the hung command never runs', async () => {
    vm.setFault({ command: 'guest-file-open', kind: 'hang' });
    const c = await client();
    c.send({ execute: 'guest-file-open', arguments: { path: '/tmp/hung', mode: 'w' } });
    c.send({ execute: 'guest-sync', arguments: { id: 8 } });
    await pause(300);
    expect(c.buf.length).toBe(0);
    expect(vm.stats.queuedRequests).toBe(1);
    vm.clearFaults();
    expect(await c.line()).toBe('{"return": 8}');
    expect(vm.readFile('/tmp/hung')).toBeUndefined();
  });

  it('hang: released when the client leaves; the next client is served', async () => {
    vm.setFault({ command: 'guest-get-users', kind: 'hang', times: 1 });
    const a = await client();
    a.send({ execute: 'guest-get-users' });
    await pause(100);
    a.sock.destroy();
    const b = await client();
    b.send({ execute: 'guest-ping' });
    expect(await b.line()).toBe('{"return": {}}');
  });

  it('delay and late: the reply comes, later, and the command log records every request', async () => {
    vm.setFault({ command: 'guest-ping', kind: 'late', ms: 150, times: 1 });
    const c = await client();
    const t0 = Date.now();
    c.send({ execute: 'guest-ping' });
    expect(await c.line()).toBe('{"return": {}}');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140); // a lower bound only: the delay was applied
    c.send({ execute: 'guest-file-write', arguments: { handle: 1, 'buf-b64': 'A'.repeat(4000) } });
    await c.line();
    const log = vm.stats.commandLog;
    expect(log.map((e) => e.command)).toEqual(['guest-ping', 'guest-file-write']);
    expect(log[1].args).toEqual({ handle: 1, 'buf-b64': '<4000 chars>' });
  });
});
