/**
 * Every read-only QGA route against the real qemu-ga (7.2, on this machine, with every command
 * that could change the host blocked). What the real agent cannot do here is checked too: the
 * commands newer than 7.2 answer 501, the Windows-only one 403, a disabled setter 403 — each
 * without a round trip for the command itself.
 */
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startQemuGa, type QemuGa } from '../helpers/qemu-ga.js';
import { body, expectProblem, list, makeRoutesApp } from './routes-support.js';

let ga: QemuGa;
let app: FastifyInstance;

beforeAll(async () => {
  ga = await startQemuGa();
  app = await makeRoutesApp({ vms: [{ name: 'real', endpoint: { type: 'unix', path: ga.socketPath } }] });
});

afterAll(async () => {
  await app?.close();
  await ga?.stop();
});

async function get(url: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/vms/real${url}` });
  expect(res.statusCode, `${url}: ${res.body.slice(0, 300)}`).toBe(200);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  return body(res);
}

describe('read-only routes against the real qemu-ga', () => {
  it('GET /time: nanoseconds, exact above 2^53, close to this host', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/vms/real/time' });
    expect(res.statusCode).toBe(200);
    // the JSON text carries all 19 digits, not a float rendering
    expect(res.body).toMatch(/^\{"time":\d{19}\}$/);
    const { time } = body(res);
    expect(typeof time).toBe('bigint');
    const hostNs = BigInt(Date.now()) * 1_000_000n;
    const diff = (time as bigint) - hostNs;
    expect(diff < 0n ? -diff : diff).toBeLessThan(60_000_000_000n);
  });

  it('GET /hostname, /timezone, /os describe this machine', async () => {
    expect((await get('/hostname'))['host-name']).toBe(os.hostname());
    const tz = await get('/timezone');
    expect(Number.isInteger(tz.offset)).toBe(true);
    const osinfo = await get('/os');
    expect(osinfo['kernel-release']).toBe(os.release());
    expect(osinfo.machine).toBe(os.machine());
  });

  it('GET /users wraps the list', async () => {
    const b = await get('/users');
    expect(Object.keys(b)).toEqual(['users']);
    for (const u of list(b.users)) expect(typeof u.user).toBe('string');
  });

  it('GET /network/interfaces includes loopback with its addresses and statistics', async () => {
    const ifs = list((await get('/network/interfaces')).interfaces);
    const lo = ifs.find((i) => i.name === 'lo');
    expect(lo).toBeDefined();
    const addrs = list(lo!['ip-addresses']);
    expect(addrs).toContainEqual({ 'ip-address': '127.0.0.1', 'ip-address-type': 'ipv4', prefix: 8 });
    expect(Object.keys(lo!.statistics as object)).toContain('rx-bytes');
  });

  it('GET /vcpus lists every logical processor once', async () => {
    const vcpus = list((await get('/vcpus')).vcpus);
    expect(vcpus.length).toBeGreaterThan(0);
    const ids = vcpus.map((v) => v['logical-id']);
    expect(new Set(ids).size).toBe(ids.length);
    for (const v of vcpus) expect(typeof v.online).toBe('boolean');
  });

  it('GET /memory/blocks and /memory/block-info', async () => {
    const blocks = list((await get('/memory/blocks')).blocks);
    for (const b of blocks) expect(Number.isInteger(b['phys-index'])).toBe(true);
    const info = await get('/memory/block-info');
    expect(info.size).toBeGreaterThan(0);
  });

  it('GET /disks, /disks/stats, /cpus/stats, /filesystems', async () => {
    const disks = list((await get('/disks')).disks);
    for (const d of disks) expect(typeof d.partition).toBe('boolean');
    const stats = list((await get('/disks/stats')).disks);
    expect(stats.length).toBeGreaterThan(0);
    for (const s of stats) expect(typeof s.stats).toBe('object');
    const cpus = list((await get('/cpus/stats')).cpus);
    expect(cpus.length).toBeGreaterThan(0);
    for (const c of cpus) expect(c.type).toBe('linux');
    const fss = list((await get('/filesystems')).filesystems);
    expect(fss.map((f) => f.mountpoint)).toContain('/');
  });

  it('raw passthrough reads like the typed routes', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/real/qga/guest-get-host-name' });
    expect(res.statusCode).toBe(200);
    expect(body(res)).toEqual({ return: { 'host-name': os.hostname() } });
    const t = await app.inject({ method: 'POST', url: '/v1/vms/real/qga/guest-get-time', payload: {} });
    expect(t.body).toMatch(/^\{"return":\d{19}\}$/);
  });
});

describe('what the real 7.2 agent cannot do here', () => {
  it('commands newer than the agent → 501 COMMAND_NOT_SUPPORTED', async () => {
    await expectProblem(app, { method: 'GET', url: '/v1/vms/real/load' }, 501, 'COMMAND_NOT_SUPPORTED');
    await expectProblem(app, { method: 'GET', url: '/v1/vms/real/network/routes' }, 501, 'COMMAND_NOT_SUPPORTED');
  });

  it('a command the agent disables (Windows-only devices; blocked setters) → 403 COMMAND_DISABLED', async () => {
    await expectProblem(app, { method: 'GET', url: '/v1/vms/real/devices' }, 403, 'COMMAND_DISABLED');
    const p = await expectProblem(app, { method: 'PUT', url: '/v1/vms/real/time', payload: { useHostClock: true } }, 403, 'COMMAND_DISABLED');
    expect(p.command).toBe('guest-set-time');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/real/fstrim' }, 403, 'COMMAND_DISABLED');
    await expectProblem(app, { method: 'POST', url: '/v1/vms/real/shutdown', payload: { mode: 'reboot' } }, 403, 'COMMAND_DISABLED');
  });

  it('an agent error is 422 AGENT_ERROR carrying the QGA class and text', async () => {
    // a user that does not exist on this machine: the agent fails to read its authorized_keys
    const p = await expectProblem(app, { method: 'GET', url: '/v1/vms/real/users/nosuchuser-qga-test/ssh-keys' }, 422, 'AGENT_ERROR');
    expect(p.qga).toMatchObject({ class: 'GenericError' });
    expect(String((p.qga as { desc: string }).desc).length).toBeGreaterThan(0);
  });
});
