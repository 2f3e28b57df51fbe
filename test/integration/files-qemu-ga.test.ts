/**
 * Whole-file transfers and the raw handle API against the real qemu-ga, on temp files of this
 * machine (the agent runs here): exact bytes at the chunk boundaries, one 200 MB round trip with
 * SHA-256 on both sides, Range and resume, and no file descriptor left open in the agent.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, readlink, readdir, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { startQemuGa, type QemuGa } from '../helpers/qemu-ga.js';
import { listen } from '../helpers/app.js';
import { makeExecFilesApp, pseudoRandom, sha256, tempDir, until } from './files-support.js';

const CHUNK = 1024 * 1024; // files.readChunkBytes and writeChunkBytes (the defaults)
let ga: QemuGa;
let app: FastifyInstance;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('files-ga-'));
  ga = await startQemuGa();
  app = await makeExecFilesApp({
    vms: [{ name: 'ga', endpoint: { type: 'unix', path: ga.socketPath } }],
    config: { files: { readChunkBytes: CHUNK, writeChunkBytes: CHUNK, maxRawWriteBytes: 64 * 1024, maxRawReadBytes: 64 * 1024 } },
  });
});

/** Files in our temp dir that an agent process still holds open. */
async function agentFdsInto(d: string, pid = ga.pid): Promise<string[]> {
  const fdDir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const fd of await readdir(fdDir)) {
    const target = await readlink(path.join(fdDir, fd)).catch(() => '');
    if (target.startsWith(d)) out.push(target);
  }
  return out;
}

afterEach(async () => {
  // Every test must leave no handle open, in the agent and in the gateway's books.
  await until(async () => (await agentFdsInto(dir)).length === 0, 5000, 'the agent to have no file of the test open');
  expect(app.services.files.guest.registry.list('ga').filter((t) => t.owner === 'transfer')).toEqual([]);
});

afterAll(async () => {
  await app?.close();
  await ga?.stop();
  await cleanup?.();
});

const url = (p: string, extra = '') => `/v1/vms/ga/files/content?path=${encodeURIComponent(p)}${extra}`;

describe('whole files through the real qemu-ga', () => {
  test.each([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3])('%i bytes: download and upload are byte-exact', async (size) => {
    const data = pseudoRandom(size, size + 7);
    const src = path.join(dir, `src-${size}`);
    await writeFile(src, data);
    const get = await app.inject({ method: 'GET', url: url(src) });
    expect(get.statusCode).toBe(200);
    expect(get.headers['content-length']).toBe(String(size));
    expect(get.headers['accept-ranges']).toBe('bytes');
    expect(sha256(get.rawPayload)).toBe(sha256(data));

    const dst = path.join(dir, `dst-${size}`);
    const put = await app.inject({ method: 'PUT', url: url(dst), payload: data, headers: { 'content-type': 'application/octet-stream' } });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toEqual({ path: dst, bytesWritten: size, position: size });
    expect(sha256(await readFile(dst))).toBe(sha256(data));
  });

  test('a transfer that lets the socket go every idleReleaseMs (reconnecting between chunks) is byte-exact both ways', async () => {
    // a gateway of its own whose VM releases its socket every 100 ms; the suite's gateway lets it go first
    expect(app.services.pool.peek('ga')?.release() ?? true).toBe(true);
    const sharing = await makeExecFilesApp({
      vms: [{ name: 'ga', endpoint: { type: 'unix', path: ga.socketPath } }],
      config: { agent: { idleReleaseMs: 100 }, files: { readChunkBytes: 65_536, writeChunkBytes: 65_536 } },
    });
    try {
      const data = pseudoRandom(16 * CHUNK + 5, 77);
      const src = path.join(dir, 'shared-src');
      await writeFile(src, data);
      const get = await sharing.inject({ method: 'GET', url: url(src) });
      expect(get.statusCode).toBe(200);
      expect(sha256(get.rawPayload)).toBe(sha256(data));
      const dst = path.join(dir, 'shared-dst');
      const put = await sharing.inject({ method: 'PUT', url: url(dst), payload: data, headers: { 'content-type': 'application/octet-stream' } });
      expect(put.json()).toEqual({ path: dst, bytesWritten: data.length, position: data.length });
      expect(sha256(await readFile(dst))).toBe(sha256(data));
      // it did reconnect mid-transfer (each connect is a resync): more than the two transfers' own
      const metrics = (await sharing.inject({ method: 'GET', url: '/metrics' })).body;
      const connects = Number(/^qga_channel_resyncs_total\{reason="connect"\} (\d+)$/m.exec(metrics)?.[1] ?? 0);
      expect(connects).toBeGreaterThanOrEqual(4);
    } finally {
      await sharing.close();
    }
  });

  test('/proc and /sys files, whose size the kernel misstates (0, a page), come whole with their real length and no Range; HEAD gives no length for them', async () => {
    // procfs answers SEEK_END with 0 whatever the file holds: it was a 200 with an empty body
    const proc = '/proc/sys/kernel/ostype';
    const get = await app.inject({ method: 'GET', url: url(proc) });
    expect(get.statusCode).toBe(200);
    expect(get.rawPayload.toString()).toBe(await readFile(proc, 'utf8'));
    expect(get.headers['content-length']).toBe(String(get.rawPayload.length));
    expect(get.headers['accept-ranges']).toBe('none');
    const head = await app.inject({ method: 'HEAD', url: url(proc) });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBeUndefined();
    expect(head.headers['accept-ranges']).toBe('none');
    // a directory: HEAD fails as GET does (its end was a Content-Length of 9223372036854776000)
    const sub = path.join(dir, 'head-directory');
    await mkdir(sub, { recursive: true });
    const [dirHead, dirGet] = await Promise.all([app.inject({ method: 'HEAD', url: url(sub) }), app.inject({ method: 'GET', url: url(sub) })]);
    expect([dirHead.statusCode, dirGet.statusCode]).toEqual([422, 422]);
    expect(dirHead.headers['content-length']).not.toBe('9223372036854776000');
    // an empty regular file is still 0 bytes with Range
    const empty = path.join(dir, 'empty');
    await writeFile(empty, '');
    const e = await app.inject({ method: 'HEAD', url: url(empty) });
    expect([e.headers['content-length'], e.headers['accept-ranges']]).toEqual(['0', 'bytes']);
    // sysfs says a page (4096): it was a 422 "it shrank"
    const sys = '/sys/kernel/mm/transparent_hugepage/enabled';
    const local = await readFile(sys, 'utf8').catch(() => undefined);
    if (local === undefined) {
      process.stdout.write(`[files-qemu-ga] ${sys} does not exist on this machine: the sysfs part is skipped\n`);
      return;
    }
    const s = await app.inject({ method: 'GET', url: url(sys) });
    expect(s.statusCode).toBe(200);
    expect(s.rawPayload.toString()).toBe(local);
    expect(s.headers['accept-ranges']).toBe('none');
  });

  test('200 MB up and down over a real socket, SHA-256 compared on both sides', { timeout: 300_000 }, async () => {
    const SIZE = 200 * 1024 * 1024;
    const src = path.join(dir, 'big-src');
    const srcHash = createHash('sha256');
    const w = createWriteStream(src);
    for (let off = 0, i = 0; off < SIZE; off += 8 * 1024 * 1024, i++) {
      const piece = pseudoRandom(Math.min(8 * 1024 * 1024, SIZE - off), 1000 + i);
      srcHash.update(piece);
      if (!w.write(piece)) await once(w, 'drain');
    }
    w.end();
    await once(w, 'close');
    const expected = srcHash.digest('hex');
    const base = await listen(app);
    const dst = path.join(dir, 'big-dst');

    // upload: the request body streams from disk
    const put = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${base}${url(dst)}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': SIZE } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      createReadStream(src).pipe(req);
    });
    expect(put.status).toBe(200);
    expect(JSON.parse(put.body)).toMatchObject({ bytesWritten: SIZE, position: SIZE });
    expect((await stat(dst)).size).toBe(SIZE);
    const dstHash = createHash('sha256');
    for await (const piece of createReadStream(dst)) dstHash.update(piece as Buffer);
    expect(dstHash.digest('hex')).toBe(expected);

    // download: hashed as it arrives
    const got = await new Promise<{ status: number; length: string | undefined; hash: string; bytes: number }>((resolve, reject) => {
      http
        .get(`${base}${url(dst)}`, (res) => {
          const h = createHash('sha256');
          let bytes = 0;
          res.on('data', (d: Buffer) => {
            h.update(d);
            bytes += d.length;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], hash: h.digest('hex'), bytes }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    expect(got).toEqual({ status: 200, length: String(SIZE), hash: expected, bytes: SIZE });
  });

  test('Range: 206 with Content-Range, suffix and open ranges, 416 outside, ignored when multiple', async () => {
    const data = pseudoRandom(1000, 3);
    const f = path.join(dir, 'ranged');
    await writeFile(f, data);
    const get = (range: string) => app.inject({ method: 'GET', url: url(f), headers: { range } });

    let r = await get('bytes=10-19');
    expect(r.statusCode).toBe(206);
    expect(r.headers['content-range']).toBe('bytes 10-19/1000');
    expect(r.headers['content-length']).toBe('10');
    expect(r.rawPayload).toEqual(data.subarray(10, 20));

    r = await get('bytes=990-');
    expect(r.headers['content-range']).toBe('bytes 990-999/1000');
    expect(r.rawPayload).toEqual(data.subarray(990));

    r = await get('bytes=-5');
    expect(r.statusCode).toBe(206);
    expect(r.rawPayload).toEqual(data.subarray(995));

    r = await get('bytes=995-5000');
    expect(r.headers['content-range']).toBe('bytes 995-999/1000');

    r = await get('bytes=1000-');
    expect(r.statusCode).toBe(416);
    expect(r.headers['content-range']).toBe('bytes */1000');
    expect(r.json()).toMatchObject({ code: 'RANGE_NOT_SATISFIABLE', size: 1000 });

    r = await get('bytes=0-1,5-6');
    expect(r.statusCode).toBe(200);
    expect(r.rawPayload).toEqual(data);
  });

  test('a name with % in it, percent-encoded (%25), is that file; written raw, it is 400, not another file', async () => {
    const f = path.join(dir, '100%C3%28');
    await writeFile(f, 'literal');
    const r = await app.inject({ method: 'GET', url: url(f) });
    expect([r.statusCode, r.body]).toEqual([200, 'literal']);
    const raw = await app.inject({ method: 'GET', url: `/v1/vms/ga/files/content?path=${f}` });
    expect([raw.statusCode, raw.json().code]).toEqual([400, 'VALIDATION_FAILED']);
  });

  test('conditional requests: If-Range never matches (the whole file), If-Match and If-None-Match are refused (nothing written), If-Modified-Since ignored', async () => {
    const data = pseudoRandom(100, 5);
    const f = path.join(dir, 'conditional');
    await writeFile(f, data);
    // no validator is given out, so none can match: 200 with the whole file, not a part of it
    for (const ifRange of ['"abc"', 'Wed, 21 Oct 2015 07:28:00 GMT']) {
      const r = await app.inject({ method: 'GET', url: url(f), headers: { range: 'bytes=0-9', 'if-range': ifRange } });
      expect([r.statusCode, r.headers['content-range']]).toEqual([200, undefined]);
      expect(r.rawPayload).toEqual(data);
    }
    // a create-only upload must not overwrite the file: refused, the file untouched
    for (const [name, value] of [['if-none-match', '*'], ['if-match', '*'], ['if-match', '"x"']]) {
      const put = await app.inject({ method: 'PUT', url: url(f), headers: { 'content-type': 'application/octet-stream', [name]: value }, payload: Buffer.from('x') });
      expect(put.statusCode).toBe(400);
      expect(put.json()).toMatchObject({ code: 'VALIDATION_FAILED' });
      expect(put.json().detail).toMatch(/is not supported on guest file content/);
      const get = await app.inject({ method: 'GET', url: url(f), headers: { [name]: value } });
      expect(get.statusCode).toBe(400);
    }
    expect(await readFile(f)).toEqual(data);
    const ims = await app.inject({ method: 'GET', url: url(f), headers: { 'if-modified-since': 'Wed, 21 Oct 2015 07:28:00 GMT' } });
    expect(ims.statusCode).toBe(200);
    expect(ims.rawPayload).toEqual(data);
  });

  test('resume: a download continued with Range, an upload continued with offset', async () => {
    const data = pseudoRandom(3 * CHUNK + 17, 9);
    const f = path.join(dir, 'resume-src');
    await writeFile(f, data);
    const cut = CHUNK + 5;
    const head = await app.inject({ method: 'GET', url: url(f), headers: { range: `bytes=0-${cut - 1}` } });
    const tail = await app.inject({ method: 'GET', url: url(f), headers: { range: `bytes=${cut}-` } });
    // (sha256, not toEqual: a deep compare of MBs of bytes takes vitest a minute)
    expect(sha256(Buffer.concat([head.rawPayload, tail.rawPayload]))).toBe(sha256(data));

    const dst = path.join(dir, 'resume-dst');
    const put1 = await app.inject({ method: 'PUT', url: url(dst), payload: data.subarray(0, cut) });
    expect(put1.json().position).toBe(cut);
    const size = await app.inject({ method: 'HEAD', url: url(dst) });
    expect(size.statusCode).toBe(200);
    expect(size.headers['content-length']).toBe(String(cut));
    const put2 = await app.inject({ method: 'PUT', url: url(dst, `&offset=${cut}`), payload: data.subarray(cut) });
    expect(put2.statusCode).toBe(200);
    expect(put2.json()).toMatchObject({ bytesWritten: data.length - cut, position: data.length });
    expect(sha256(await readFile(dst))).toBe(sha256(data));

    const beyond = await app.inject({ method: 'PUT', url: url(dst, `&offset=${data.length + 1}`), payload: Buffer.from('x') });
    expect(beyond.statusCode).toBe(416);
    const both = await app.inject({ method: 'PUT', url: url(dst, '&offset=0&mode=append'), payload: Buffer.from('x') });
    expect(both.statusCode).toBe(400);
    // an explicit truncate with a resume would be ignored (nothing is truncated): refused, the file untouched
    const truncating = await app.inject({ method: 'PUT', url: url(dst, '&offset=3&mode=truncate'), payload: Buffer.from('x') });
    expect([truncating.statusCode, truncating.json().code]).toEqual([400, 'VALIDATION_FAILED']);
    expect(truncating.json().detail).toMatch(/offset cannot be combined with mode=truncate/);
    expect(sha256(await readFile(dst))).toBe(sha256(data));
  });

  test('append mode adds to the end; truncate (default) replaces', async () => {
    const f = path.join(dir, 'appended');
    await app.inject({ method: 'PUT', url: url(f), payload: Buffer.from('one\n') });
    const r = await app.inject({ method: 'PUT', url: url(f, '&mode=append'), payload: Buffer.from('two\n') });
    expect(r.json()).toMatchObject({ bytesWritten: 4, position: 8 });
    expect(await readFile(f, 'utf8')).toBe('one\ntwo\n');
    await app.inject({ method: 'PUT', url: url(f), payload: Buffer.from('3\n') });
    expect(await readFile(f, 'utf8')).toBe('3\n');
  });

  test('errors: missing file 404, missing directory 404, a directory 422; no content type needed', async () => {
    const missing = await app.inject({ method: 'GET', url: url(path.join(dir, 'nope')) });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ code: 'NOT_FOUND', qga: { class: 'GenericError' } });
    expect(missing.json().qga.desc).toMatch(/No such file/);
    expect((await app.inject({ method: 'HEAD', url: url(path.join(dir, 'nope')) })).statusCode).toBe(404);

    const noDir = await app.inject({ method: 'PUT', url: url(path.join(dir, 'no-dir', 'f')), payload: Buffer.from('x') });
    expect(noDir.statusCode).toBe(404);

    const sub = path.join(dir, 'a-directory');
    await mkdir(sub);
    const putDir = await app.inject({ method: 'PUT', url: url(sub), payload: Buffer.from('x') });
    expect(putDir.statusCode).toBe(422);
    expect(putDir.json().qga.desc).toMatch(/Is a directory/);
    const getDir = await app.inject({ method: 'GET', url: url(sub) });
    expect(getDir.statusCode).toBe(422);

    const plain = await app.inject({ method: 'PUT', url: url(path.join(dir, 'no-type')), payload: 'text body', headers: { 'content-type': 'text/plain' } });
    expect(plain.statusCode).toBe(200);
    expect(await readFile(path.join(dir, 'no-type'), 'utf8')).toBe('text body');
  });
});

describe('raw handle routes through the real qemu-ga', () => {
  test('open → write → seek → read → flush → close, verbatim QGA results', async () => {
    const f = path.join(dir, 'raw');
    const base = '/v1/vms/ga/files/handles';
    const open = await app.inject({ method: 'POST', url: base, payload: { path: f, mode: 'w+' } });
    expect(open.statusCode).toBe(201);
    const { handle } = open.json();
    expect(typeof handle).toBe('number');
    const listed = await app.inject({ method: 'GET', url: base });
    expect(listed.json().handles).toEqual([expect.objectContaining({ handle, path: f, mode: 'w+' })]);

    const w = await app.inject({ method: 'POST', url: `${base}/${handle}/write`, payload: { 'buf-b64': Buffer.from('hello raw').toString('base64') } });
    expect(w.json()).toEqual({ count: 9, eof: false });
    const s = await app.inject({ method: 'POST', url: `${base}/${handle}/seek`, payload: { offset: 6, whence: 'set' } });
    expect(s.json()).toEqual({ position: 6, eof: false });
    const r = await app.inject({ method: 'POST', url: `${base}/${handle}/read`, payload: { count: 100 } });
    expect(r.json()).toEqual({ count: 3, 'buf-b64': Buffer.from('raw').toString('base64'), eof: true });
    expect((await app.inject({ method: 'POST', url: `${base}/${handle}/seek`, payload: { offset: 0, whence: 0 } })).json().position).toBe(0);
    expect((await app.inject({ method: 'POST', url: `${base}/${handle}/flush` })).statusCode).toBe(204);

    const big = await app.inject({ method: 'POST', url: `${base}/${handle}/read`, payload: { count: 64 * 1024 + 1 } });
    expect(big.statusCode).toBe(400);
    const bigW = await app.inject({ method: 'POST', url: `${base}/${handle}/write`, payload: { 'buf-b64': Buffer.alloc(64 * 1024 + 1).toString('base64') } });
    expect(bigW.statusCode).toBe(413);

    expect((await app.inject({ method: 'DELETE', url: `${base}/${handle}` })).statusCode).toBe(204);
    expect((await app.inject({ method: 'GET', url: base })).json().handles).toEqual([]);
    const after = await app.inject({ method: 'POST', url: `${base}/${handle}/read`, payload: {} });
    expect(after.statusCode).toBe(404);
    expect(after.json().qga.desc).toMatch(/has not been found/);
    expect((await app.inject({ method: 'DELETE', url: `${base}/${handle}` })).statusCode).toBe(404);
  });

  test('an idle handle is closed by the reaper (in the agent, not just in the gateway)', async () => {
    // A second agent: the main app's channel keeps the first one's only client slot.
    const ga2 = await startQemuGa();
    const reaping = await makeExecFilesApp({
      vms: [{ name: 'ga', endpoint: { type: 'unix', path: ga2.socketPath } }],
      config: { files: { handleIdleSeconds: 1, handleReaperIntervalMs: 100 } },
    });
    const fdsOfGa2 = () => agentFdsInto(dir, ga2.pid);
    try {
      const f = path.join(dir, 'idle');
      await writeFile(f, 'x');
      const open = await reaping.inject({ method: 'POST', url: '/v1/vms/ga/files/handles', payload: { path: f } });
      const { handle } = open.json();
      expect(open.statusCode).toBe(201);
      expect(await fdsOfGa2()).toEqual([f]);
      await until(async () => (await fdsOfGa2()).length === 0, 5000, 'the reaper to close the idle handle');
      expect((await reaping.inject({ method: 'GET', url: '/v1/vms/ga/files/handles' })).json().handles).toEqual([]);
      await expect(reaping.services.agent.call('ga', 'guest-file-read', { handle })).rejects.toMatchObject({ code: 'AGENT_ERROR' });
    } finally {
      await reaping.close();
      await ga2.stop();
    }
  });
});
