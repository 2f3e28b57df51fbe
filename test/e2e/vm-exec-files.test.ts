/**
 * End to end on the real VM (../shared/vm: QEMU + virtio-serial + qemu-ga 7.2 in the guest):
 * run commands and move a large file through HTTP, with the guest itself checking the file's
 * SHA-256 and the agent's open file descriptors. Skipped, with the reason printed, when the rig
 * is not available.
 */
import http from 'node:http';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { announceVmSkip, startVm, vmAvailable, type RunningVm } from '../helpers/vm.js';
import { listen } from '../helpers/app.js';
import { makeExecFilesApp, pseudoRandom, sha256 } from '../integration/files-support.js';

announceVmSkip('vm-exec-files');

describe.skipIf(!vmAvailable())('exec and files on the real VM', () => {
  let vm: RunningVm;
  let app: FastifyInstance;
  let base: string;

  beforeAll(async () => {
    vm = await startVm('execfiles');
    // the socket let go when idle, every 500 ms of a transfer and between an exec wait's polls: the
    // transfers below reconnect to the virtio-serial channel mid-way, as on a host shared with qm/vzdump
    app = await makeExecFilesApp({ vms: [{ name: 'vm1', endpoint: { type: 'unix', path: vm.socketPath } }], config: { agent: { idleReleaseMs: 500 } } });
    base = await listen(app);
  }, 300_000);

  afterAll(async () => {
    await app?.close();
    await vm?.stop();
  });

  const run = async (payload: Record<string, unknown>) => {
    const r = await app.inject({ method: 'POST', url: '/v1/vms/vm1/exec', payload: { wait: 30, ...payload } });
    expect(r.statusCode).toBe(200);
    return r.json();
  };

  test('commands: output, exit codes, stdin, env, binary output, kept result', async () => {
    expect(await run({ path: '/bin/echo', arg: ['hello from the guest'] })).toMatchObject({ exitcode: 0, outText: 'hello from the guest\n' });
    expect((await run({ path: '/bin/sh', arg: ['-c', 'echo e >&2; exit 7'] })).exitcode).toBe(7);
    expect((await run({ path: '/bin/cat', inputText: 'piped in\n' })).outText).toBe('piped in\n');
    expect((await run({ path: '/usr/bin/env', env: ['ONLY=this'] })).outText).toContain('ONLY=this');
    const bin = await run({ path: '/bin/sh', arg: ['-c', "printf '\\377\\000\\001'"] });
    expect(bin.outText).toBeUndefined();
    expect(Buffer.from(bin['out-data'], 'base64')).toEqual(Buffer.from([0xff, 0, 1]));
    expect((await run({ path: '/bin/hostname' })).outText.trim()).toBe(vm.name);

    const started = await app.inject({ method: 'POST', url: '/v1/vms/vm1/exec', payload: { path: '/bin/echo', arg: ['twice'] } });
    expect(started.statusCode).toBe(202);
    const { pid } = started.json();
    const first = await app.inject({ method: 'GET', url: `/v1/vms/vm1/exec/${pid}?wait=30` });
    const second = await app.inject({ method: 'GET', url: `/v1/vms/vm1/exec/${pid}` });
    expect(first.json()).toMatchObject({ exited: true, outText: 'twice\n' });
    expect(second.json()).toEqual(first.json());
    const missing = await app.inject({ method: 'POST', url: '/v1/vms/vm1/exec', payload: { path: '/no/such/binary' } });
    expect(missing.statusCode).toBe(422);
  }, 120_000);

  test('a 16 MiB file moved in and out over HTTP: SHA-256 equal here, in the guest, and back; no fd left open', async () => {
    const SIZE = 16 * 1024 * 1024;
    const data = pseudoRandom(SIZE, 2024);
    const url = `${base}/v1/vms/vm1/files/content?path=${encodeURIComponent('/data/moved.bin')}`;
    const t0 = performance.now();
    const put = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': SIZE } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end(data);
    });
    expect(put.status).toBe(200);
    expect(JSON.parse(put.body)).toMatchObject({ bytesWritten: SIZE, position: SIZE });
    const upMBs = SIZE / 1e6 / ((performance.now() - t0) / 1000);

    const guestSum = await run({ path: '/usr/bin/sha256sum', arg: ['/data/moved.bin'] });
    expect(guestSum.outText.split(/\s+/)[0]).toBe(sha256(data));

    const t1 = performance.now();
    const got = await new Promise<{ status: number; hash: string; bytes: number }>((resolve, reject) => {
      http
        .get(url, (res) => {
          const h = createHash('sha256');
          let bytes = 0;
          res.on('data', (d: Buffer) => {
            h.update(d);
            bytes += d.length;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, hash: h.digest('hex'), bytes }));
        })
        .on('error', reject);
    });
    expect(got).toEqual({ status: 200, hash: sha256(data), bytes: SIZE });
    const downMBs = SIZE / 1e6 / ((performance.now() - t1) / 1000);
    // For information only (TCG guest, shared machine): no assertion on speed.
    const connects = Number(/^qga_channel_resyncs_total\{reason="connect"\} (\d+)$/m.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)?.[1] ?? 0);
    process.stdout.write(`[vm-exec-files] 16 MiB through the VM: upload ${upMBs.toFixed(1)} MB/s, download ${downMBs.toFixed(1)} MB/s; ${connects} connects so far\n`);

    const tail = await app.inject({ method: 'GET', url: '/v1/vms/vm1/files/content?path=/data/moved.bin', headers: { range: 'bytes=-4096' } });
    expect(tail.statusCode).toBe(206);
    expect(sha256(tail.rawPayload)).toBe(sha256(data.subarray(SIZE - 4096)));

    // The guest's own view of the agent's descriptors: nothing under /data is left open.
    const fds = await run({ path: '/bin/sh', arg: ['-c', 'for f in /proc/$(pidof qemu-ga)/fd/*; do readlink "$f"; done; true'] });
    expect(fds.outText).toContain('/dev/vport'); // the listing works: it shows the agent's own channel
    expect(fds.outText).not.toContain('/data/');
    await run({ path: '/bin/rm', arg: ['/data/moved.bin'] });
  }, 240_000);
});
