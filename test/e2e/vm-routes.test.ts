/**
 * Every read-only QGA route against a REAL VM (../shared/vm: QEMU + virtio-serial + qemu-ga 7.2
 * in a Debian guest), through the gateway over HTTP inject. The guest is disposable, so the
 * changes that are safe there run too: the clock set from the host, SSH keys for root (on the
 * guest's tmpfs), fstrim of /data, and finally a shutdown, answered 202 while the VM powers off.
 * Skipped, saying why, when the rig is absent.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { announceVmSkip, startVm, vmAvailable, type RunningVm } from '../helpers/vm.js';
import { body, expectProblem, list, makeRoutesApp } from '../integration/routes-support.js';

announceVmSkip('vm-routes');

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGatewayRouteTestKey0000000000000000000000 gw-test';

let vm: RunningVm;
let app: FastifyInstance;

async function get(path: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/vms/guest${path}` });
  expect(res.statusCode, `${path}: ${res.body.slice(0, 300)}`).toBe(200);
  return body(res);
}

describe.skipIf(!vmAvailable())('QGA routes against a real VM', () => {
  beforeAll(async () => {
    vm = await startVm('routes');
    app = await makeRoutesApp({ vms: [{ name: 'guest', endpoint: { type: 'unix', path: vm.socketPath } }] });
  }, 300_000);

  afterAll(async () => {
    await app?.close();
    await vm?.stop();
  });

  it('identity: host name is the VM name, OS from the rig, UTC', async () => {
    expect((await get('/hostname'))['host-name']).toBe(vm.name);
    const os = await get('/os');
    expect(os).toMatchObject({ id: 'debian', 'version-id': '12', machine: 'x86_64' });
    expect(await get('/timezone')).toEqual({ zone: 'UTC', offset: 0 });
    expect(list((await get('/users')).users)).toEqual([]);
  });

  it('time: 19 exact digits', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/vms/guest/time' });
    expect(res.body).toMatch(/^\{"time":\d{19}\}$/);
  });

  it('hardware: one vCPU, memory blocks, the data disk with its serial, statistics', async () => {
    const vcpus = list((await get('/vcpus')).vcpus);
    expect(vcpus).toEqual([{ 'logical-id': 0, online: true, 'can-offline': false }]);
    expect(list((await get('/memory/blocks')).blocks).length).toBeGreaterThan(0);
    expect((await get('/memory/block-info')).size).toBe(134217728);
    const disks = list((await get('/disks')).disks);
    const vda = disks.find((d) => d.name === '/dev/vda');
    expect(vda?.address).toMatchObject({ 'bus-type': 'virtio', serial: `qgadata-${vm.name}` });
    expect(list((await get('/disks/stats')).disks).map((d) => d.name)).toContain('vda');
    expect(list((await get('/cpus/stats')).cpus)[0]).toMatchObject({ type: 'linux', cpu: 0 });
  });

  it('network and filesystems', async () => {
    const ifs = list((await get('/network/interfaces')).interfaces);
    expect(ifs.map((i) => i.name)).toEqual(['lo']);
    const fss = list((await get('/filesystems')).filesystems);
    expect(fss).toHaveLength(1);
    expect(fss[0]).toMatchObject({ mountpoint: '/data', type: 'ext4' });
  });

  it('what a 7.2 Linux agent lacks: 501 for newer commands, 403 for the Windows-only one', async () => {
    await expectProblem(app, { method: 'GET', url: '/v1/vms/guest/load' }, 501, 'COMMAND_NOT_SUPPORTED');
    await expectProblem(app, { method: 'GET', url: '/v1/vms/guest/network/routes' }, 501, 'COMMAND_NOT_SUPPORTED');
    await expectProblem(app, { method: 'GET', url: '/v1/vms/guest/devices' }, 403, 'COMMAND_DISABLED');
  });

  it('sets the guest clock to the host clock (it boots about a second behind)', async () => {
    const res = await app.inject({ method: 'PUT', url: '/v1/vms/guest/time', payload: { useHostClock: true } });
    expect(res.statusCode, res.body).toBe(200);
    const guestNs = body(await app.inject({ method: 'GET', url: '/v1/vms/guest/time' })).time as bigint;
    const hostNs = BigInt(Date.now()) * 1_000_000n;
    const skew = guestNs - hostNs;
    // generous: TCG and a shared machine; it was ~1 s off before and must now be close
    expect(skew < 0n ? -skew : skew).toBeLessThan(2_000_000_000n);
  });

  it('adds, lists and removes an SSH key for root', async () => {
    expect((await app.inject({ method: 'POST', url: '/v1/vms/guest/users/root/ssh-keys', payload: { keys: [KEY] } })).statusCode).toBe(204);
    expect((await get('/users/root/ssh-keys')).keys).toContain(KEY);
    const del = await app.inject({ method: 'DELETE', url: `/v1/vms/guest/users/root/ssh-keys?key=${encodeURIComponent(KEY)}` });
    expect(del.statusCode).toBe(204);
    expect((await get('/users/root/ssh-keys')).keys).not.toContain(KEY);
  });

  it('trims /data; a password change fails in this guest (no passwd) as 422 with the agent text', async () => {
    const trim = await app.inject({ method: 'POST', url: '/v1/vms/guest/fstrim', payload: {} });
    expect(trim.statusCode, trim.body).toBe(200);
    expect(list(body(trim).paths).map((p) => p.path)).toEqual(['/data']);
    const p = await expectProblem(app, { method: 'PUT', url: '/v1/vms/guest/users/root/password', payload: { password: 'x' } }, 422, 'AGENT_ERROR');
    expect(String((p.qga as { desc: string }).desc)).toMatch(/passwd/);
  });

  it('shuts the guest down: 202 after the fence, and the agent is gone afterwards', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/vms/guest/shutdown', payload: { mode: 'powerdown' } });
    expect(res.statusCode, res.body).toBe(202);
    expect(body(res)).toMatchObject({ accepted: true, command: 'guest-shutdown' });
    // the VM powers off within a few seconds: the agent stops answering
    const deadline = Date.now() + 60_000;
    let status = 200;
    while (Date.now() < deadline) {
      status = (await app.inject({ method: 'GET', url: '/v1/vms/guest/ping' })).statusCode;
      if (status === 503) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(status).toBe(503);
  }, 90_000);
});
