import { describe, expect, test, vi } from 'vitest';
import { ResultCache } from '../../src/exec/results.js';
import { PidTracker } from '../../src/exec/tracker.js';
import { decodeStdin } from '../../src/exec/input.js';
import { base64DecodedLength, utf8TextOf } from '../../src/exec/output.js';
import type { ExecStatusRecord } from '../../src/exec/types.js';

const rec = (pid: number, outBytes = 0): ExecStatusRecord => ({
  pid,
  status: { exited: true, exitcode: 0, 'out-data': Buffer.alloc(outBytes, 1).toString('base64') },
  collectedAt: 0,
});

describe('ResultCache: kept final statuses, bounded', () => {
  test('expires after the TTL', () => {
    let now = 1000;
    const c = new ResultCache({ ttlMs: 100, maxEntries: 10, maxBytes: 1e6 }, () => now);
    c.set('vm', rec(1));
    expect(c.get('vm', 1)?.pid).toBe(1);
    expect(c.get('other', 1)).toBeUndefined();
    now += 101;
    expect(c.get('vm', 1)).toBeUndefined();
    expect(c.size).toBe(0);
  });

  test('evicts the least recently used past maxEntries', () => {
    const c = new ResultCache({ ttlMs: 1e6, maxEntries: 2, maxBytes: 1e6 });
    c.set('vm', rec(1));
    c.set('vm', rec(2));
    c.get('vm', 1); // 1 is now the most recent
    c.set('vm', rec(3));
    expect(c.get('vm', 2)).toBeUndefined();
    expect(c.get('vm', 1)).toBeDefined();
    expect(c.get('vm', 3)).toBeDefined();
  });

  test('bounds the total output bytes, and does not keep one output larger than the budget', () => {
    const c = new ResultCache({ ttlMs: 1e6, maxEntries: 100, maxBytes: 10_000 });
    for (let pid = 1; pid <= 10; pid++) c.set('vm', rec(pid, 3000));
    expect(c.totalBytes).toBeLessThanOrEqual(10_000);
    expect(c.size).toBeLessThan(10);
    expect(c.get('vm', 10)).toBeDefined();
    c.set('vm', rec(99, 20_000));
    expect(c.get('vm', 99)).toBeUndefined();
  });

  test('delete forgets a pid (a reused pid must not answer with the old result)', () => {
    const c = new ResultCache({ ttlMs: 1e6, maxEntries: 10, maxBytes: 1e6 });
    c.set('vm', rec(5));
    c.delete('vm', 5);
    expect(c.get('vm', 5)).toBeUndefined();
    expect(c.totalBytes).toBe(0);
  });
});

describe('PidTracker: processes to reap', () => {
  test('due after the interval, not while waited on, backing off to the max', () => {
    let now = 0;
    const t = new PidTracker({ intervalMs: 100, maxIntervalMs: 250, maxTracked: 10 }, () => now);
    t.track('vm', 7);
    expect(t.due(10)).toEqual([]);
    now = 100;
    expect(t.due(10).map((x) => x.pid)).toEqual([7]);
    t.beginWait('vm', 7);
    expect(t.due(10)).toEqual([]);
    t.endWait('vm', 7);
    const e = t.due(10)[0];
    t.backOff(e);
    expect(e.intervalMs).toBe(200);
    t.backOff(e);
    expect(e.intervalMs).toBe(250);
    now += 249;
    expect(t.due(10)).toEqual([]);
    now += 1;
    expect(t.due(10)).toHaveLength(1);
  });

  test('bounded: the oldest are given up (and reported)', () => {
    const dropped: number[] = [];
    const t = new PidTracker({ intervalMs: 1, maxIntervalMs: 1, maxTracked: 2 }, () => 0, (x) => dropped.push(x.pid));
    t.track('vm', 1);
    t.track('vm', 2);
    t.track('vm', 3);
    expect(t.size).toBe(2);
    expect(dropped).toEqual([1]);
  });
});

describe('stdin and output encoding', () => {
  test('text or base64 stdin, never both, capped on decoded bytes', () => {
    expect(decodeStdin({ inputText: 'hé' }, 10)).toEqual(Buffer.from('hé'));
    expect(decodeStdin({ 'input-data': 'AAEC' }, 3)).toEqual(Buffer.from([0, 1, 2]));
    expect(decodeStdin({}, 3)).toBeUndefined();
    expect(() => decodeStdin({ 'input-data': 'AAECAw==' }, 3)).toThrow(expect.objectContaining({ code: 'PAYLOAD_TOO_LARGE' }));
    expect(() => decodeStdin({ inputText: 'héé' }, 4)).toThrow(expect.objectContaining({ code: 'PAYLOAD_TOO_LARGE' }));
    expect(() => decodeStdin({ inputText: 'a', 'input-data': 'YQ==' }, 10)).toThrow(expect.objectContaining({ code: 'VALIDATION_FAILED' }));
    expect(() => decodeStdin({ 'input-data': 'YQ=' }, 10)).toThrow(expect.objectContaining({ code: 'VALIDATION_FAILED' }));
  });

  test('text only for valid UTF-8 without control characters (a cut last character dropped when truncated); decoded length without decoding', () => {
    expect(utf8TextOf(Buffer.from('ok ✓\n').toString('base64'))).toBe('ok ✓\n');
    expect(utf8TextOf(Buffer.from([0xff, 0xfe]).toString('base64'))).toBeUndefined();
    expect(utf8TextOf(Buffer.from([0xe2, 0x9c]).toString('base64'))).toBeUndefined(); // cut mid-character
    // text, not binary: tab, newline, CR and terminal escapes pass; NUL padding and other controls do not
    expect(utf8TextOf(Buffer.from('a\tb\r\n\x1b[31mred\x1b[0m').toString('base64'))).toBe('a\tb\r\n\x1b[31mred\x1b[0m');
    for (const c of [0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1f, 0x7f]) expect(utf8TextOf(Buffer.from([0x61, c, 0x62]).toString('base64')), `byte ${c}`).toBeUndefined();
    expect(utf8TextOf(Buffer.concat([Buffer.from('ustar'), Buffer.alloc(512)]).toString('base64'))).toBeUndefined();
    // output the agent cut at its cap in the middle of a character: the whole characters before it
    const cut = Buffer.from('€€€').subarray(0, 8); // 3 bytes each: the third cut after 2
    expect(utf8TextOf(cut.toString('base64'))).toBeUndefined();
    expect(utf8TextOf(cut.toString('base64'), true)).toBe('€€');
    expect(utf8TextOf(Buffer.from('€€').toString('base64'), true)).toBe('€€');
    expect(utf8TextOf(Buffer.from('𝄞').subarray(0, 3).toString('base64'), true)).toBe('');
    expect(utf8TextOf(Buffer.from([0x61, 0xff]).toString('base64'), true)).toBeUndefined();
    for (const n of [0, 1, 2, 3, 4, 5, 1000]) expect(base64DecodedLength(Buffer.alloc(n).toString('base64'))).toBe(n);
  });
});

describe('ExecService: processes given up past exec.maxTrackedPids', () => {
  test('a burst is logged once, then counted in at most one line per 10 s (not a line per pid)', async () => {
    const { ExecService } = await import('../../src/exec/service.js');
    const { loadConfig } = await import('../../src/config/load.js');
    const lines: Array<{ msg: string; notLoggedSince?: number }> = [];
    let next = 1000;
    const agent = { call: async () => ({ pid: next++ }) };
    const log = { warn: (o: object, msg: string) => void lines.push({ ...(o as object), msg }), info: () => undefined, error: () => undefined, debug: () => undefined };
    const settings = { ...loadConfig(undefined, {}).exec, maxTrackedPids: 2 };
    const exec = new ExecService(agent as never, async () => [10, 0, 0], settings, log as never);
    for (let i = 0; i < 500; i++) await exec.start('vm1', { path: '/bin/true', capture: false });
    expect(exec.tracker.size).toBeLessThanOrEqual(2);
    // 498 given up: the first said at once, the others held for the next line (h11 F5: 498 lines)
    const given = lines.filter((l) => l.msg.startsWith('exec: too many unreaped processes'));
    expect(given).toHaveLength(1);
    exec.stop();
  });
});

describe('a VM out of the registry for a while (h11 F2)', () => {
  test('its exec pids stay tracked for VM_GONE_GRACE_MS, then are given up; its file handles too', async () => {
    const { ExecService } = await import('../../src/exec/service.js');
    const { GuestFiles } = await import('../../src/files/guest.js');
    const { loadConfig } = await import('../../src/config/load.js');
    const { errors } = await import('../../src/errors.js');
    const { VM_GONE_GRACE_MS } = await import('../../src/registry/types.js');
    let registered = true;
    const agent = {
      call: async (vm: string, command: string) => {
        if (!registered) throw errors.vmNotFound(vm);
        if (command === 'guest-exec') return { pid: 4242 };
        if (command === 'guest-file-open') return 1000;
        return {};
      },
    };
    let now = 1_000_000;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const exec = new ExecService(agent as never, async () => [10, 0, 0], { ...loadConfig(undefined, {}).exec, reaperIntervalMs: 1, reaperMaxIntervalMs: 1 }, undefined);
      await exec.start('vm1', { path: '/bin/sleep', arg: ['5'], capture: false });
      const files = new GuestFiles(agent as never, { closeTimeoutMs: 1_000, handleIdleMs: 0, reaperIntervalMs: 1 });
      await files.open('vm1', '/tmp/x', 'w', 'api');
      registered = false;
      // a reload dropped the VM: the reaper's polls and closes find it unregistered, and keep both
      now += 10;
      await exec.reapOnce();
      await files.reapOnce();
      expect(exec.tracker.size).toBe(1);
      expect(files.registry.total).toBe(1);
      // past the grace the VM is taken as gone for good
      now += VM_GONE_GRACE_MS + 10;
      await exec.reapOnce();
      await files.reapOnce();
      expect(exec.tracker.size).toBe(0);
      expect(files.registry.total).toBe(0);
      exec.stop();
    } finally {
      clock.mockRestore();
    }
  });
});
