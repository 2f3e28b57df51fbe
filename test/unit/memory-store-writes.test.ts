/**
 * The embedded store's state file (src/store/memory.ts, memory-file.ts StateFile): the changes of one event-loop turn go
 * out in ONE write, and each call settles only once the file holds its change; calls awaited one
 * after another are written one by one; a failed write rejects every call it carried with
 * STORE_UNAVAILABLE; close() writes what is pending at once and nothing is written after it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

// a write of the state file (memory-file.ts writeSnapshot) starts by making sure its directory
// exists: one mkdirSync of a directory under this test's temp dirs per write attempted
const writes = vi.hoisted(() => ({ count: 0 }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const mkdirSync = ((dirPath: string, opts?: unknown) => {
    if (String(dirPath).includes('mem-writes-')) writes.count++;
    return fs.mkdirSync(dirPath, opts as never);
  }) as typeof fs.mkdirSync;
  return { ...fs, default: { ...fs, mkdirSync }, mkdirSync };
});

const { MemoryStore } = await import('../../src/store/memory.js');

const acquireOf = (vm: string) => ({ session: `vm:${vm}`, keys: [`vm:${vm}`], owner: 'backup', ttlMs: 60_000, hardCapMs: 600_000 });

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'mem-writes-'));
  writes.count = 0;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function leaseIdsInFile(file: string): string[] {
  return (JSON.parse(readFileSync(file, 'utf8')) as { sessions: Array<{ leaseId: string }> }).sessions.map((s) => s.leaseId);
}

describe('MemoryStore state file writes', () => {
  it('64 acquires started in one turn: one write, and each answer comes with its lease in the file', async () => {
    const file = path.join(dir, 'leases.json');
    const store = new MemoryStore({ persistPath: file });
    const inFileWhenAnswered: boolean[] = [];
    const all = Array.from({ length: 64 }, (_, i) =>
      store.acquire(acquireOf(`v${i}`)).then((r) => {
        if (!r.ok) throw new Error('refused');
        inFileWhenAnswered.push(leaseIdsInFile(file).includes(r.lease.leaseId));
        return r.lease.leaseId;
      }),
    );
    const ids = await Promise.all(all);
    expect(writes.count).toBe(1);
    expect(inFileWhenAnswered).toEqual(Array.from({ length: 64 }, () => true));
    expect(new Set(leaseIdsInFile(file))).toEqual(new Set(ids));
    // the releases of one turn: one more write
    const leases = await store.listSessions();
    await Promise.all(leases.map((l) => store.release(l.session, l.leaseId)));
    expect(writes.count).toBe(2);
    expect(leaseIdsInFile(file)).toEqual([]);
  });

  it('calls awaited one after another are written one by one', async () => {
    const store = new MemoryStore({ persistPath: path.join(dir, 'leases.json') });
    for (let i = 0; i < 3; i++) {
      const r = await store.acquire(acquireOf(`s${i}`));
      expect(r.ok).toBe(true);
      expect(writes.count).toBe(i + 1);
    }
  });

  it('a failed write rejects every call of its turn with STORE_UNAVAILABLE', async () => {
    // the state file's directory is a regular file: mkdir and the write fail
    const blocker = path.join(dir, 'not-a-dir');
    writeFileSync(blocker, 'x');
    const store = new MemoryStore({ persistPath: path.join(blocker, 'leases.json') });
    const results = await Promise.allSettled([store.acquire(acquireOf('a')), store.putVm({ name: 'b', endpoint: { type: 'unix', path: '/x' } } as never)]);
    expect(writes.count).toBe(1);
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'fulfilled'))).toEqual(['STORE_UNAVAILABLE', 'STORE_UNAVAILABLE']);
  });

  it('an acquire whose write failed leaves no lease behind: once the file can be written, the same VM is granted at once', async () => {
    const stateDir = path.join(dir, 'state');
    const store = new MemoryStore({ persistPath: path.join(stateDir, 'leases.json') });
    // the state directory turns into a regular file (a disk problem, an operator's mistake)
    writeFileSync(stateDir, 'x');
    await expect(store.acquire({ ...acquireOf('d'), idempotencyKey: 'k1' })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(await store.getByKey('vm:d')).toBeUndefined();
    expect(await store.listSessions()).toEqual([]);
    rmSync(stateDir);
    const again = await store.acquire({ ...acquireOf('d'), idempotencyKey: 'k1' });
    expect(again).toMatchObject({ ok: true, reused: false });
    expect(again.ok && leaseIdsInFile(path.join(stateDir, 'leases.json'))).toEqual(again.ok ? [again.lease.leaseId] : false);
    await store.close();
  });

  it('close() writes the pending changes at once; nothing is written after it', async () => {
    const file = path.join(dir, 'leases.json');
    const store = new MemoryStore({ persistPath: file });
    const pending = store.acquire(acquireOf('c'));
    await store.close();
    expect(writes.count).toBe(1);
    const r = await pending;
    expect(r.ok && leaseIdsInFile(file)).toEqual(r.ok ? [r.lease.leaseId] : false);
    await new Promise((res) => setImmediate(res));
    expect(writes.count).toBe(1);
  });
});

describe('idempotency records', () => {
  it('are kept for at most MAX_IDEMPOTENCY_RECORDS leases (the oldest go first), whatever their age', async () => {
    const { MAX_IDEMPOTENCY_RECORDS } = await import('../../src/store/memory.js');
    const store = new MemoryStore();
    const n = MAX_IDEMPOTENCY_RECORDS + 5;
    for (let i = 0; i < n; i++) {
      const r = await store.acquire({ ...acquireOf(`v${i}`), idempotencyKey: `k${i}` });
      if (!r.ok) throw new Error('acquire failed');
      await store.release(`vm:v${i}`, r.lease.leaseId);
    }
    const idem = (store as unknown as { idem: Map<string, unknown> }).idem;
    expect(idem.size).toBe(MAX_IDEMPOTENCY_RECORDS);
    // the newest are there, the oldest went
    expect(idem.has(`backup\nk${n - 1}`)).toBe(true);
    expect(idem.has('backup\nk0')).toBe(false);
    expect(idem.has('backup\nk5')).toBe(true);
  });
});
