/**
 * The channel against a REAL QEMU VM (../shared/vm: the real qemu-ga behind virtio-serial). Only a
 * real chardev shows what an earlier client leaves behind: whole stale replies, the TAIL of a
 * partially read 1 MiB reply (starting mid-base64), a half-written request in the agent's parser.
 * When the rig is absent these tests are skipped and say so.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Channel } from '../../src/qga/channel.js';
import { COMMANDS, DEFAULT_TIMEOUTS } from '../../src/qga/commands.js';
import type { JsonObject } from '../../src/qga/types.js';
import { announceVmSkip, startVm, vmAvailable, type RunningVm } from '../helpers/vm.js';
import { makeApp } from '../helpers/app.js';

announceVmSkip('vm-channel');
const ONE_MIB = 1024 * 1024;

let vm: RunningVm;
const channels: Channel[] = [];

function open(): Channel {
  const ch = new Channel({
    vm: 'real',
    endpoint: { type: 'unix', path: vm.socketPath },
    catalog: (n) => COMMANDS[n],
    timeouts: { ...DEFAULT_TIMEOUTS },
    idleReleaseMs: 0,
  });
  channels.push(ch);
  return ch;
}

/** A raw client, as another tool on the host would be: no gateway logic at all. */
function raw(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(vm.socketPath, () => resolve(s));
    s.once('error', reject);
  });
}

/** Read from a raw socket until `pred(buffer)` holds. */
function readUntil(s: net.Socket, pred: (b: Buffer) => boolean, timeoutMs = 20_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => reject(new Error(`raw read timed out with ${buf.length} bytes`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (pred(buf)) {
        clearTimeout(t);
        s.off('data', onData);
        resolve(buf);
      }
    };
    s.on('data', onData);
  });
}

async function rawSync(s: net.Socket): Promise<void> {
  const id = Math.floor(Math.random() * 1e9) + 1;
  s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n')]));
  await readUntil(s, (b) => b.includes(`{"return": ${id}}`));
}

async function closeRaw(s: net.Socket): Promise<void> {
  await new Promise<void>((r) => {
    s.once('close', () => r());
    s.destroy();
  });
}

describe.skipIf(!vmAvailable())('channel against a real VM', () => {
  const stale: number[] = [];
  let bigHandleOk = false;

  beforeAll(async () => {
    vm = await startVm('chan');
    // a 1 MiB file in the guest, written through our own channel
    const ch = open();
    const data = randomBytes(ONE_MIB);
    const handle = (await ch.execute('guest-file-open', { path: '/data/big.bin', mode: 'w' })) as number;
    await ch.execute('guest-file-write', { handle, 'buf-b64': data.toString('base64') });
    await ch.execute('guest-file-close', { handle });
    bigHandleOk = true;
    await ch.close();
  }, 180_000);

  afterAll(async () => {
    for (const ch of channels) ch.destroy();
    await vm?.stop();
  });

  it('handshakes past the TAIL of a 1 MiB reply an earlier client read partly', async () => {
    expect(bigHandleOk).toBe(true);
    const a = await raw();
    await rawSync(a);
    a.write(JSON.stringify({ execute: 'guest-file-open', arguments: { path: '/data/big.bin', mode: 'r' } }) + '\n');
    const opened = await readUntil(a, (b) => b.includes('\n'));
    const handle = Number(/"return": (\d+)/.exec(opened.toString())?.[1]);
    expect(handle).toBeGreaterThan(0);
    a.write(JSON.stringify({ execute: 'guest-file-read', arguments: { handle, count: ONE_MIB } }) + '\n');
    await readUntil(a, (b) => b.length >= 64 * 1024); // read part of the ≈1.4 MB reply, then leave
    await closeRaw(a);

    const ch = open();
    ch.events.on('stale', (ev: { bytes: number }) => stale.push(ev.bytes));
    expect(await ch.execute('guest-ping')).toEqual({});
    const os = (await ch.execute('guest-get-osinfo')) as JsonObject;
    expect(os.id).toBe('debian');
    expect(os['variant-id']).toBe('qga-test-rig');
    // the discarded tail was seen and counted, not parsed as a reply
    expect(stale.reduce((x, y) => x + y, 0)).toBeGreaterThan(1000);
    await ch.execute('guest-file-close', { handle });
    await ch.close();
  }, 60_000);

  it('handshakes past WHOLE stale replies left by a client that sent and left at once', async () => {
    const a = await raw();
    await rawSync(a);
    a.write('{"execute":"guest-ping"}\n{"execute":"guest-get-host-name"}\n');
    await closeRaw(a);
    const ch = open();
    const host = (await ch.execute('guest-get-host-name')) as JsonObject;
    expect(host['host-name']).toBe(vm.name);
    expect(await ch.execute('guest-ping')).toEqual({});
    await ch.close();
  }, 60_000);

  it('is not poisoned by a half-written request left in the agent parser', async () => {
    const a = await raw();
    a.write('{"execute": "guest-pi');
    await new Promise((r) => setTimeout(r, 200));
    await closeRaw(a);
    const ch = open();
    expect(await ch.execute('guest-ping')).toEqual({});
    const info = await ch.info();
    expect(info.version).toMatch(/^7\.2\./);
    expect(info.echoesId).toBe(true);
    await ch.close();
  }, 60_000);

  it('a ping written behind the sync on a new socket (guest-info known) skips whole stale replies and a half-written request', async () => {
    const ch = open();
    await ch.info();
    expect(ch.release()).toBe(true);
    const a = await raw();
    await rawSync(a);
    a.write('{"execute":"guest-get-host-name"}\n{"execute":"guest-get-host-name"}\n{"execute": "guest-get-os');
    await closeRaw(a);
    // no guest-info on this socket: 0xFF + sync + ping in one write; the stale host names are skipped
    expect(await ch.execute('guest-ping')).toEqual({});
    expect(ch.currentInfo()).toBeUndefined();
    const host = (await ch.execute('guest-get-host-name')) as JsonObject;
    expect(host['host-name']).toBe(vm.name);
    await ch.close();
  }, 60_000);

  let app: FastifyInstance | undefined;
  afterAll(async () => app?.close());

  it('answers GET /v1/vms/{vm}/ping through HTTP', async () => {
    app = await makeApp({ vms: [{ name: 'real', endpoint: { type: 'unix', path: vm.socketPath } }] });
    const r = await app.inject({ method: 'GET', url: '/v1/vms/real/ping' });
    expect(r.statusCode).toBe(200);
    expect(r.json().ok).toBe(true);
    await app.close();
    app = undefined;
  }, 60_000);

  // last: the guest powers off
  it('completes guest-shutdown (no reply on success) through the sync fence', async () => {
    const ch = open();
    await ch.execute('guest-ping');
    const t0 = Date.now();
    await expect(ch.execute('guest-shutdown', { mode: 'powerdown' })).resolves.toEqual({});
    // the guest really goes down: qemu exits and removes its socket
    const deadline = Date.now() + 30_000;
    while (existsSync(vm.socketPath) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(existsSync(vm.socketPath)).toBe(false);
    process.stdout.write(`[vm-channel] shutdown fence resolved and qemu exited after ${Date.now() - t0} ms\n`);
  }, 60_000);
});
