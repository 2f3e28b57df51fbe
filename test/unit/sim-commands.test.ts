/**
 * The simulator's command handlers and wire pieces without sockets: a Dispatcher over a runtime
 * with a hand-driven clock, fed through the real streamer and serialized by the QEMU writer.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { JsonObject, JsonValue } from '../../src/qga/types.js';
import { COMMANDS, FROZEN_ALLOWED, newProcessState, type AgentRuntime } from '../../sim/commands/index.js';
import { Dispatcher } from '../../sim/dispatch.js';
import { FaultSet } from '../../sim/faults.js';
import { formatG17, qdictOrder, toQemuJson } from '../../sim/qjson.js';
import { defaultGuestState } from '../../sim/state.js';
import { JsonStreamer, type StreamEvent } from '../../sim/streamer.js';
import { traitsFor } from '../../sim/version.js';
import { virtualFileBytes } from '../../sim/vfs.js';
import { parseJson } from '../../src/util/json.js';

interface Harness {
  rt: AgentRuntime;
  clock: { now: number };
  /** run one request text; the reply line (no newline), or undefined when none is sent */
  call(text: string): Promise<string | undefined>;
  /** the same, parsed losslessly */
  json(execute: string, args?: JsonObject): Promise<JsonObject>;
}

function harness(opts: { version?: string; disabled?: string[]; timeScale?: number; truncFixed?: boolean } = {}): Harness {
  const version = opts.version ?? '10.0.0';
  const traits = traitsFor(version);
  if (opts.truncFixed !== undefined) traits.execTruncatedFixed = opts.truncFixed;
  const state = defaultGuestState('unit');
  const proc = newProcessState();
  const d = new Dispatcher(version, traits, new Set(opts.disabled ?? []), new Set());
  const clock = { now: 1_000_000 };
  let delimited = false;
  const rt: AgentRuntime = {
    state,
    proc,
    version,
    traits,
    timeScale: opts.timeScale ?? 1,
    now: () => clock.now,
    sleep: async () => undefined,
    setDelimited: () => {
      delimited = true;
    },
    commandTable: () => d.commandTable(state.frozen),
    setFrozen: (f) => {
      state.frozen = f;
    },
    shutdown: () => undefined,
  };
  const call = async (text: string): Promise<string | undefined> => {
    const events: StreamEvent[] = [];
    new JsonStreamer((e) => events.push(e)).feed(Buffer.from(text));
    expect(events).toHaveLength(1);
    const ev = events[0];
    if (!ev.ok) return toQemuJson({ error: { class: 'GenericError', desc: ev.desc } });
    const { rsp } = await d.dispatch(ev.value, rt);
    const prefix = delimited ? '\xff' : '';
    delimited = false;
    return rsp === undefined ? undefined : prefix + toQemuJson(rsp);
  };
  const json = async (execute: string, args?: JsonObject): Promise<JsonObject> => {
    const line = await call(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }));
    return parseJson(line as string) as JsonObject;
  };
  return { rt, clock, call, json };
}

const ret = (o: JsonObject): JsonValue => {
  if ('error' in o) throw new Error(`unexpected error reply: ${JSON.stringify(o.error)}`);
  return o.return;
};

describe('guest-exec', () => {
  it('reports running, then the result once, then forgets the pid', async () => {
    const h = harness();
    const { pid } = ret(await h.json('guest-exec', { path: '/bin/echo', arg: ['hello'], 'capture-output': true })) as { pid: number };
    expect(await h.json('guest-exec-status', { pid })).toEqual({ return: { exited: false } });
    expect(h.rt.proc.execs.size).toBe(1);
    h.clock.now += 1000;
    expect(await h.call(`{"execute":"guest-exec-status","arguments":{"pid":${pid}}}`)).toBe(
      '{"return": {"exitcode": 0, "out-data": "aGVsbG8K", "exited": true}}',
    );
    expect(h.rt.proc.execs.size).toBe(0);
    expect(await h.json('guest-exec-status', { pid })).toEqual({ error: { class: 'GenericError', desc: "Invalid parameter 'pid'" } });
  });

  it('simulates cat, sh exit codes, signals, false, env and binary output without a host process', async () => {
    const h = harness();
    const run = async (args: JsonObject): Promise<JsonObject> => {
      const { pid } = ret(await h.json('guest-exec', args)) as { pid: number };
      h.clock.now += 10_000;
      return ret(await h.json('guest-exec-status', { pid })) as JsonObject;
    };
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    expect(await run({ path: '/bin/cat', 'input-data': b64('stdin\n'), 'capture-output': true })).toMatchObject({ exitcode: 0, 'out-data': b64('stdin\n') });
    expect(await run({ path: '/bin/sh', arg: ['-c', 'exit 42'] })).toEqual({ exited: true, exitcode: 42 });
    expect(await run({ path: '/bin/false' })).toEqual({ exited: true, exitcode: 1 });
    expect(await run({ path: '/bin/sh', arg: ['-c', 'kill -9 $$'] })).toEqual({ exited: true, signal: 9 });
    expect(await run({ path: '/usr/bin/env', env: ['A=1', 'B=two'], 'capture-output': true })).toMatchObject({ 'out-data': b64('A=1\nB=two\n') });
    const bin = await run({ path: '/bin/binary', 'capture-output': true });
    expect([...Buffer.from(bin['out-data'] as string, 'base64')]).toEqual(Array.from({ length: 256 }, (_, i) => i));
    expect(await h.json('guest-exec', { path: '/usr/bin/nope' })).toEqual({
      error: {
        class: 'GenericError',
        desc: "Guest agent command failed, error was 'Failed to execute child process \u201c/usr/bin/nope\u201d (No such file or directory)'",
      },
    });
  });

  it('captures per mode: none, stdout, stderr, separated, merged', async () => {
    const h = harness();
    const script = { path: '/bin/sh', arg: ['-c', 'echo out; echo err >&2'] };
    const status = async (capture: JsonValue | undefined): Promise<JsonObject> => {
      const args: JsonObject = capture === undefined ? script : { ...script, 'capture-output': capture };
      const { pid } = ret(await h.json('guest-exec', args)) as { pid: number };
      h.clock.now += 1000;
      return ret(await h.json('guest-exec-status', { pid })) as JsonObject;
    };
    const dec = (s: JsonValue | undefined): string | undefined => (typeof s === 'string' ? Buffer.from(s, 'base64').toString() : undefined);
    const pick = (o: JsonObject): [string | undefined, string | undefined] => [dec(o['out-data']), dec(o['err-data'])];
    expect(pick(await status(undefined))).toEqual([undefined, undefined]);
    expect(pick(await status('none'))).toEqual([undefined, undefined]);
    expect(pick(await status('stdout'))).toEqual(['out\n', undefined]);
    expect(pick(await status('stderr'))).toEqual([undefined, 'err\n']);
    expect(pick(await status(true))).toEqual(['out\n', 'err\n']);
    expect(pick(await status('separated'))).toEqual(['out\n', 'err\n']);
    expect(pick(await status('merged'))).toEqual(['out\nerr\n', undefined]);
  });

  it('caps each stream at 16 MiB and flags it as the version does', async () => {
    for (const fixed of [true, false]) {
      const h = harness({ truncFixed: fixed });
      const { pid } = ret(await h.json('guest-exec', { path: '/usr/bin/head', arg: ['-c', String(20 * 1024 * 1024), '/dev/zero'], 'capture-output': true })) as { pid: number };
      h.clock.now += 1000;
      const st = ret(await h.json('guest-exec-status', { pid })) as JsonObject;
      expect(Buffer.from(st['out-data'] as string, 'base64').length).toBe(16 * 1024 * 1024);
      // before the fix the flag is present only when truncated, with the value left false
      expect(st['out-truncated']).toBe(fixed);
    }
  });

  it('lets /bin/sleep run for N seconds of wall time, scaled by timeScale', async () => {
    const h = harness({ timeScale: 0.5 });
    const { pid } = ret(await h.json('guest-exec', { path: '/bin/sleep', arg: ['4'] })) as { pid: number };
    h.clock.now += 1900;
    expect(ret(await h.json('guest-exec-status', { pid }))).toEqual({ exited: false });
    h.clock.now += 200;
    expect(ret(await h.json('guest-exec-status', { pid }))).toEqual({ exited: true, exitcode: 0 });
  });
});

describe('guest-file-*', () => {
  it('numbers handles from 1000 and never reuses one', async () => {
    const h = harness();
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      const handle = ret(await h.json('guest-file-open', { path: `/tmp/f${i % 2}`, mode: 'w' })) as number;
      seen.push(handle);
      if (i % 2 === 0) ret(await h.json('guest-file-close', { handle }));
    }
    expect(seen).toEqual([1000, 1001, 1002, 1003, 1004]);
    expect(h.rt.proc.handles.size).toBe(2);
    expect(await h.json('guest-file-close', { handle: 1000 })).toEqual({ error: { class: 'GenericError', desc: "handle '1000' has not been found" } });
  });

  it('reads with the default count, reports eof, rejects counts above 48 MiB, appends in a mode', async () => {
    const h = harness();
    h.rt.state.files.setRegular('/data/f', Buffer.alloc(5000, 0x61));
    const handle = ret(await h.json('guest-file-open', { path: '/data/f' })) as number;
    expect(ret(await h.json('guest-file-read', { handle }))).toMatchObject({ count: 4096, eof: false });
    expect(ret(await h.json('guest-file-read', { handle }))).toMatchObject({ count: 904, eof: true });
    expect(await h.call(`{"execute":"guest-file-read","arguments":{"handle":${handle}}}`)).toBe('{"return": {"count": 0, "buf-b64": "", "eof": true}}');
    expect(await h.json('guest-file-read', { handle, count: 48 * 1024 * 1024 + 1 })).toEqual({
      error: { class: 'GenericError', desc: "value '50331649' is invalid for argument count" },
    });
    expect(await h.json('guest-file-write', { handle, 'buf-b64': 'YQ==' })).toEqual({ error: { class: 'GenericError', desc: 'failed to write to file: Bad file descriptor' } });
    const a = ret(await h.json('guest-file-open', { path: '/data/f', mode: 'a' })) as number;
    ret(await h.json('guest-file-seek', { handle: a, offset: 0, whence: 0 }));
    ret(await h.json('guest-file-write', { handle: a, 'buf-b64': Buffer.from('END').toString('base64') }));
    expect(h.rt.state.files.read('/data/f')?.subarray(-4).toString()).toBe('aEND');
    expect(await h.json('guest-file-open', { path: '/missing', mode: 'r' })).toEqual({
      error: { class: 'GenericError', desc: "failed to open file '/missing' (mode: 'r'): No such file or directory" },
    });
  });

  it('serves a virtual file whose bytes are virtualFileBytes(seed, offset, length)', async () => {
    const h = harness();
    const size = 3 * 1024 * 1024 + 7;
    h.rt.state.files.setVirtual('/data/huge.bin', size, 42);
    const handle = ret(await h.json('guest-file-open', { path: '/data/huge.bin' })) as number;
    const got = createHash('sha256');
    let total = 0;
    for (;;) {
      const r = ret(await h.json('guest-file-read', { handle, count: 1_000_003 })) as { count: number; 'buf-b64': string; eof: boolean };
      got.update(Buffer.from(r['buf-b64'], 'base64'));
      total += r.count;
      if (r.eof) break;
    }
    expect(total).toBe(size);
    const want = createHash('sha256').update(virtualFileBytes(42, 0, size)).digest('hex');
    expect(got.digest('hex')).toBe(want);
    // any split of the range gives the same bytes
    const whole = virtualFileBytes(9, 1, 99);
    expect(Buffer.concat([virtualFileBytes(9, 1, 6), virtualFileBytes(9, 7, 93)]).equals(whole)).toBe(true);
    expect(virtualFileBytes(9, 1, 99).equals(virtualFileBytes(10, 1, 99))).toBe(false);
  });
});

describe('freeze', () => {
  it('refuses every command outside the six-command allow-list while frozen', async () => {
    const h = harness({ version: '8.2.0' });
    ret(await h.json('guest-fsfreeze-freeze'));
    for (const c of COMMANDS) {
      // thaw would end the test; the last two came after 8.2 and are simply unknown there
      if (['guest-fsfreeze-thaw', 'guest-get-load', 'guest-network-get-route'].includes(c.name)) continue;
      const reply = await h.json(c.name);
      if (FROZEN_ALLOWED.has(c.name)) {
        expect((reply.error as JsonObject | undefined)?.class, c.name).not.toBe('CommandNotFound');
      } else {
        expect(reply, c.name).toEqual({
          error: { class: 'CommandNotFound', desc: `Command ${c.name} has been disabled: the agent is in frozen state` },
        });
      }
    }
    expect(ret(await h.json('guest-fsfreeze-thaw'))).toBe(2);
    expect(ret(await h.json('guest-fsfreeze-status'))).toBe('thawed');
    expect(ret(await h.json('guest-fsfreeze-freeze-list', { mountpoints: ['/data', '/nowhere'] }))).toBe(1);
    expect(ret(await h.json('guest-fsfreeze-thaw'))).toBe(1);
    expect(ret(await h.json('guest-fsfreeze-freeze-list', { mountpoints: ['/nowhere'] }))).toBe(0);
    expect(h.rt.state.frozen).toBe(false);
  });
});

describe('numbers on the wire', () => {
  it('sends guest-get-time as a bare integer above 2^53, exact to the digit', async () => {
    const h = harness();
    h.rt.state.timeOffsetNs = 123n;
    const line = (await h.call('{"execute":"guest-get-time"}')) as string;
    const m = /^\{"return": (\d{19})\}$/.exec(line);
    expect(m).not.toBeNull();
    const ns = BigInt((m as RegExpExecArray)[1]);
    expect(ns).toBeGreaterThan(2n ** 53n);
    expect(ns % 1000n).toBe(123n); // microsecond clock + the offset, nothing rounded
    expect(parseJson(line)).toEqual({ return: ns });
    expect(BigInt(Date.now()) * 1_000_000n - ns < 5_000_000_000n).toBe(true);
  });

  it('guest-set-time moves the guest clock; a time outside 1970..2069 is refused', async () => {
    const h = harness();
    const target = 4_000_000_000_000_000_000n; // 2096
    expect(await h.call(`{"execute":"guest-set-time","arguments":{"time":${target}}}`)).toBe('{"error": {"class": "GenericError", "desc": "Invalid time"}}');
    const soon = BigInt(Date.now() + 86_400_000) * 1_000_000n;
    expect(await h.call(`{"execute":"guest-set-time","arguments":{"time":${soon}}}`)).toBe('{"return": {}}');
    const now = (parseJson((await h.call('{"execute":"guest-get-time"}')) as string) as { return: bigint }).return;
    expect(now - soon < 1_000_000_000n && now - soon > -1_000_000_000n).toBe(true);
  });

  it('carries uint64 interface counters and NVMe SMART values above 2^53 as exact integers', async () => {
    const h = harness();
    const ifaces = ret(await h.json('guest-network-get-interfaces')) as { name: string; statistics: JsonObject }[];
    const eth0 = ifaces.find((i) => i.name === 'eth0') as { statistics: JsonObject };
    expect(typeof eth0.statistics['rx-bytes']).toBe('bigint');
    expect(eth0.statistics['rx-bytes'] as bigint).toBeGreaterThan(2n ** 53n);
    const disks = ret(await h.json('guest-get-disks')) as JsonObject[];
    const smart = disks.find((d) => d.smart)?.smart as JsonObject;
    expect(smart.type).toBe('nvme');
    expect(smart['power-on-hours-lo']).toBe(9_007_199_254_740_993n);
    const devices = ret(await h.json('guest-get-devices')) as JsonObject[];
    expect(devices[0]).toMatchObject({ id: { type: 'pci', 'vendor-id': 0x1af4 } });
    expect(typeof devices[0]['driver-date']).toBe('bigint');
    const cpus = ret(await h.json('guest-get-cpustats')) as JsonObject[];
    expect(cpus[0]).toMatchObject({ type: 'linux', cpu: 0 });
  });

  it('writes doubles like printf %.17g and orders members like a QDict', () => {
    expect(formatG17(0.1)).toBe('0.10000000000000001');
    expect(formatG17(0.25)).toBe('0.25');
    expect(formatG17(1e300)).toBe('1.0000000000000001e+300');
    expect(formatG17(1.8446744073709552e19)).toBe('1.8446744073709552e+19');
    expect(formatG17(0.00001)).toBe('1.0000000000000001e-05');
    // orders seen on the real agent (vm/survey-transcript.txt)
    expect(qdictOrder(['return', 'id'])).toEqual(['return', 'id']);
    expect(qdictOrder(['error', 'id'])).toEqual(['id', 'error']);
    expect(qdictOrder(['logical-id', 'online', 'can-offline'])).toEqual(['online', 'can-offline', 'logical-id']);
    expect(qdictOrder(['exited', 'exitcode', 'out-data', 'out-truncated'])).toEqual(['exitcode', 'out-data', 'out-truncated', 'exited']);
  });
});

describe('accounts and hardware', () => {
  it('keeps ssh keys in the virtual ~/.ssh/authorized_keys and logs password changes without the password', async () => {
    const h = harness();
    expect(await h.json('guest-ssh-get-authorized-keys', { username: 'root' })).toEqual({
      error: {
        class: 'GenericError',
        desc: "failed to read '/root/.ssh/authorized_keys': Failed to open file \u201c/root/.ssh/authorized_keys\u201d: No such file or directory",
      },
    });
    ret(await h.json('guest-ssh-add-authorized-keys', { username: 'root', keys: ['ssh-ed25519 AAA one', 'ssh-ed25519 BBB two'] }));
    ret(await h.json('guest-ssh-add-authorized-keys', { username: 'root', keys: ['ssh-ed25519 AAA one', 'ssh-rsa CCC three'] }));
    expect(h.rt.state.files.read('/root/.ssh/authorized_keys')?.toString()).toBe('ssh-ed25519 AAA one\nssh-ed25519 BBB two\nssh-rsa CCC three');
    ret(await h.json('guest-ssh-remove-authorized-keys', { username: 'root', keys: ['ssh-ed25519 BBB two'] }));
    expect(ret(await h.json('guest-ssh-get-authorized-keys', { username: 'root' }))).toEqual({ keys: ['ssh-rsa CCC three', 'ssh-ed25519 AAA one'] });
    expect((await h.json('guest-ssh-add-authorized-keys', { username: 'root', keys: ['# comment'] })).error).toEqual({
      class: 'GenericError',
      desc: "invalid OpenSSH public key: '# comment'",
    });

    ret(await h.json('guest-set-user-password', { username: 'admin', password: Buffer.from('s3cret').toString('base64'), crypted: false }));
    expect(h.rt.state.passwordChanges).toEqual([{ username: 'admin', crypted: false, at: h.clock.now }]);
    const files = h.rt.state.files.paths().map((p) => h.rt.state.files.read(p)?.toString() ?? '');
    expect([...files, JSON.stringify(h.rt.state.passwordChanges)].join('\n')).not.toContain('s3cret');
    expect((await h.json('guest-set-user-password', { username: 'nobody', password: 'eA==', crypted: false })).error).toBeDefined();
  });

  it('applies set-vcpus node by node and set-memory-blocks per block', async () => {
    const h = harness();
    expect(ret(await h.json('guest-set-vcpus', { vcpus: [{ 'logical-id': 1, online: false }, { 'logical-id': 7, online: true }] }))).toBe(1);
    expect(h.rt.state.vcpus[1].online).toBe(false);
    expect(await h.json('guest-set-vcpus', { vcpus: [{ 'logical-id': 0, online: false }] })).toEqual({
      error: { class: 'GenericError', desc: "logical processor #0 can't be offlined" },
    });
    expect(ret(await h.json('guest-set-memory-blocks', { 'mem-blks': [{ 'phys-index': 2, online: false }, { 'phys-index': 0, online: false }, { 'phys-index': 99, online: true }] }))).toEqual([
      { 'phys-index': 2, response: 'success' },
      { 'phys-index': 0, response: 'operation-failed', 'error-code': 16 },
      { 'phys-index': 99, response: 'not-found' },
    ]);
  });

  it("takes phys-index as QEMU's uint64: exact to 2^64-1, a negative int64 wrapped, beyond refused naming uint64", async () => {
    const h = harness();
    const blocks = async (text: string) => parseJson((await h.call(`{"execute": "guest-set-memory-blocks", "arguments": {"mem-blks": [${text}]}}`)) as string) as JsonObject;
    // the largest valid index, and its neighbour: each echoed digit for digit (never rounded to 2^64)
    expect(ret(await blocks('{"phys-index": 18446744073709551615, "online": true}, {"phys-index": 18446744073709551614, "online": true}'))).toEqual([
      { 'phys-index': 18446744073709551615n, response: 'not-found' },
      { 'phys-index': 18446744073709551614n, response: 'not-found' },
    ]);
    // 2^53 + 1 is not block 2^53 (a rounding lookup would confuse them)
    h.rt.state.memoryBlocks.push({ physIndex: 2 ** 53, online: true, canOffline: true });
    expect(ret(await blocks('{"phys-index": 9007199254740993, "online": false}'))).toEqual([{ 'phys-index': 9007199254740993n, response: 'not-found' }]);
    expect(h.rt.state.memoryBlocks.at(-1)?.online).toBe(true);
    // qobject_input_type_uint64 accepts an int64 "for backward compatibility": -1 is 2^64-1
    expect(ret(await blocks('{"phys-index": -1, "online": true}'))).toEqual([{ 'phys-index': 18446744073709551615n, response: 'not-found' }]);
    expect(await blocks('{"phys-index": 18446744073709551616, "online": true}')).toEqual({
      error: { class: 'GenericError', desc: "Invalid parameter type for 'mem-blks[0].phys-index', expected: uint64" },
    });
    expect(await blocks('{"phys-index": 1.0, "online": true}')).toEqual({
      error: { class: 'GenericError', desc: "Invalid parameter type for 'mem-blks[0].phys-index', expected: uint64" },
    });
  });

  it('sends nothing for guest-shutdown and guest-suspend-* but records them', async () => {
    const h = harness();
    expect(await h.call('{"execute":"guest-suspend-ram"}')).toBeUndefined();
    expect(await h.call('{"execute":"guest-shutdown","arguments":{"mode":"halt"}}')).toBeUndefined();
    expect(await h.call('{"execute":"guest-shutdown","arguments":{"mode":"nap"}}')).toBe(
      '{"error": {"class": "GenericError", "desc": "Parameter \'mode\' expects halt|powerdown|reboot"}}',
    );
    expect(h.rt.state.powerRequests.map((p) => p.command)).toEqual(['guest-suspend-ram', 'guest-shutdown']);
  });

  it('prefixes the guest-sync-delimited reply with 0xFF and answers sim-echo', async () => {
    const h = harness();
    expect(await h.call('{"execute":"guest-sync-delimited","arguments":{"id":5}}')).toBe('\xff{"return": 5}');
    expect(await h.call('{"execute":"guest-sync","arguments":{"id":5}}')).toBe('{"return": 5}');
    expect(await h.call('{"execute":"sim-echo","arguments":{"marker":"m1","delayMs":1}}')).toBe('{"return": {"marker": "m1"}}');
  });
});

describe('streamer and faults', () => {
  it('gives the same messages whether the input comes whole or byte by byte', () => {
    const input = Buffer.from('{"execute":"a","arguments":{"s":"}{\\"\\\\"}}\xff[1,\n2]"x"{"b":-1.5e3}{"c" 1}', 'latin1');
    const run = (chunks: Buffer[]): StreamEvent[] => {
      const out: StreamEvent[] = [];
      const s = new JsonStreamer((e) => out.push(e));
      for (const c of chunks) s.feed(c);
      return out;
    };
    const whole = run([input]);
    const bytewise = run([...input].map((b) => Buffer.from([b])));
    expect(bytewise).toEqual(whole);
    expect(whole.map((e) => (e.ok ? e.value.t : e.desc))).toEqual([
      'dict',
      "JSON parse error, stray '\ufffd'",
      'list',
      'str',
      'dict',
      'JSON parse error, missing : in object pair',
    ]);
  });

  it('limits a fault to `times` matching requests and matches "*" to every command', () => {
    const f = new FaultSet();
    f.add({ command: 'guest-ping', kind: 'delay', ms: 5, times: 2 });
    f.add({ command: '*', kind: 'garbage', times: 1 });
    expect(f.take('guest-info')).toMatchObject({ delayMs: 0, reply: { kind: 'garbage' } });
    expect(f.take('guest-ping')).toEqual({ delayMs: 5, hang: false });
    expect(f.take('guest-ping').delayMs).toBe(5);
    expect(f.take('guest-ping').delayMs).toBe(0);
    expect(f.size).toBe(0);
  });
});
