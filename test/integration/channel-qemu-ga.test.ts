/**
 * The channel against the real qemu-ga on this machine (unix socket, commands that could change
 * the host blocked with -b). These pin the protocol facts the simulator imitates.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { Channel, type ChannelOptions } from '../../src/qga/channel.js';
import { AgentConnection } from '../../src/qga/connection.js';
import type { CommandSpec, JsonObject, TimeoutClass } from '../../src/qga/types.js';
import { startQemuGa, type QemuGa } from '../helpers/qemu-ga.js';

const TIMEOUTS: Record<TimeoutClass, number> = { fast: 5000, normal: 10_000, slow: 20_000, freeze: 20_000, long: 20_000 };
const IDEMPOTENT = new Set(['guest-ping', 'guest-info', 'guest-get-time', 'guest-get-osinfo', 'guest-network-get-interfaces', 'guest-exec-status']);
const catalog = (name: string): CommandSpec | undefined =>
  IDEMPOTENT.has(name)
    ? { name, timeout: 'fast', idempotent: true, successResponse: true, frozenSafe: false, scope: 'read', since: '0.15' }
    : undefined;

let agent: QemuGa;
const channels: Channel[] = [];

function open(extra: Partial<ChannelOptions> = {}): Channel {
  const ch = new Channel({
    vm: 'local',
    endpoint: { type: 'unix', path: agent.socketPath },
    catalog,
    timeouts: TIMEOUTS,
    ...extra,
  });
  channels.push(ch);
  return ch;
}

async function gatewayError(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return err as GatewayError;
}

beforeAll(async () => {
  agent = await startQemuGa();
});

afterEach(() => {
  for (const ch of channels.splice(0)) ch.destroy();
});

afterAll(async () => {
  await agent?.stop();
});

describe('Channel against the real qemu-ga', () => {
  it('connects lazily, syncs, and caches guest-info', async () => {
    const ch = open();
    const states: string[] = [];
    ch.events.on('state', (e) => states.push(e.state));
    expect(ch.state).toBe('idle');
    expect(ch.agentInfo).toBeUndefined();
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(states).toEqual(['connecting', 'syncing', 'ready']);
    const info = ch.agentInfo;
    expect(info?.version).toMatch(/^\d+\.\d+/);
    expect(info?.versionTuple[0]).toBeGreaterThanOrEqual(4);
    expect(info?.echoesId).toBe(true);
    expect(info?.commands.get('guest-shutdown')).toEqual({ enabled: false, successResponse: false });
    expect(info?.commands.get('guest-ping')).toEqual({ enabled: true, successResponse: true });
    expect(await ch.info()).toBe(info);
    const { rttMs } = await ch.sync();
    expect(rttMs).toBeGreaterThanOrEqual(0);
    expect(ch.stats()).toMatchObject({ vm: 'local', state: 'ready', queued: 0, inFlight: 0, agentVersion: info?.version });
  });

  it('returns guest-get-osinfo and guest-network-get-interfaces', async () => {
    const ch = open();
    const os = (await ch.execute('guest-get-osinfo')) as JsonObject;
    expect(typeof os['kernel-release']).toBe('string');
    const ifaces = (await ch.execute('guest-network-get-interfaces')) as JsonObject[];
    expect(ifaces.some((i) => i.name === 'lo')).toBe(true);
  });

  it('returns guest-get-time exactly, as a bigint', async () => {
    const ch = open();
    const t = await ch.execute('guest-get-time');
    expect(typeof t).toBe('bigint');
    const host = BigInt(Date.now()) * 1_000_000n;
    const diff = (t as bigint) - host;
    expect(diff < 0n ? -diff : diff).toBeLessThan(5_000_000_000n);
    // nanoseconds: JSON.parse would have rounded the low digits away
    expect(Number.isSafeInteger(Number(t))).toBe(false);
  });

  it('keeps every digit of guest-get-time as the agent wrote it', async () => {
    // Read the raw reply text alongside, over our own socket, to compare digits.
    const ch = open();
    await ch.execute('guest-ping');
    ch.release();
    const raw = await rawExchange(agent.socketPath, '{"execute":"guest-get-time"}\n');
    const m = /\{"return": (\d+)\}/.exec(raw);
    expect(m).not.toBeNull();
    const { parseJson } = await import('../../src/util/json.js');
    const parsed = parseJson(m![0]) as { return: bigint };
    expect(parsed.return.toString()).toBe(m![1]);
  });

  it('runs guest-exec and polls guest-exec-status until exited', async () => {
    const ch = open();
    const { pid } = (await ch.execute('guest-exec', {
      path: '/bin/echo',
      arg: ['hello', 'from', 'qga'],
      'capture-output': true,
    })) as { pid: number };
    expect(typeof pid).toBe('number');
    let status: JsonObject = {};
    for (let i = 0; i < 100; i++) {
      status = (await ch.execute('guest-exec-status', { pid })) as JsonObject;
      if (status.exited === true) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(status.exited).toBe(true);
    expect(status.exitcode).toBe(0);
    expect(Buffer.from(status['out-data'] as string, 'base64').toString()).toBe('hello from qga\n');
  });

  it('round-trips a file through open/write/seek/read/close', async () => {
    const ch = open();
    const path = `${agent.stateDir}/roundtrip.txt`;
    const handle = (await ch.execute('guest-file-open', { path, mode: 'w+' })) as number;
    expect(typeof handle).toBe('number');
    try {
      const content = Buffer.from('line one\nzwei \u00e9\n');
      const w = (await ch.execute('guest-file-write', { handle, 'buf-b64': content.toString('base64') })) as JsonObject;
      expect(w.count).toBe(content.length);
      const s = (await ch.execute('guest-file-seek', { handle, offset: 0, whence: 'set' })) as JsonObject;
      expect(s.position).toBe(0);
      const r = (await ch.execute('guest-file-read', { handle, count: 4096 })) as JsonObject;
      expect(Buffer.from(r['buf-b64'] as string, 'base64').equals(content)).toBe(true);
      expect(r.eof).toBe(true);
    } finally {
      await ch.execute('guest-file-close', { handle });
    }
  });

  it('maps a blocked command to COMMAND_DISABLED and an unknown one to COMMAND_NOT_SUPPORTED', async () => {
    const ch = open();
    const disabled = await gatewayError(ch.execute('guest-fstrim'));
    expect(disabled.code).toBe('COMMAND_DISABLED');
    expect(disabled.vm).toBe('local');
    expect(disabled.command).toBe('guest-fstrim');
    const unknown = await gatewayError(ch.execute('guest-no-such-thing'));
    expect(unknown.code).toBe('COMMAND_NOT_SUPPORTED');
    const bad = await gatewayError(ch.execute('guest-exec-status', { pid: 999_999_999 }));
    expect(bad.code).toBe('AGENT_ERROR');
    // the channel is still in step afterwards
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('completes a no-reply command through the sync fence: an error before the fence rejects', async () => {
    const ch = open();
    // guest-shutdown is blocked: the agent answers with an error line before the fence's reply.
    const err = await gatewayError(ch.execute('guest-shutdown', { mode: 'powerdown' }));
    expect(err.code).toBe('COMMAND_DISABLED');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('recovers after the agent is SIGKILLed and restarted', async () => {
    const ch = open();
    await ch.execute('guest-ping');
    const before = ch.agentInfo;
    agent.kill('SIGKILL');
    await agent.restart();
    const sent = vi.spyOn(AgentConnection.prototype, 'request');
    const syncs = vi.spyOn(AgentConnection.prototype, 'sync');
    try {
      // The first call after the drop may be resent once (idempotent) or reconnect lazily.
      await expect(ch.execute('guest-ping')).resolves.toEqual({});
      // a ping needs no guest-info: on the new socket it is written behind the sync, in the same
      // write (the copy read before the kill is younger than infoMaxAgeMs), without an id (the
      // agent may be another build now)
      expect(sent.mock.calls.filter(([command]) => command === 'guest-info')).toHaveLength(0);
      expect(syncs.mock.calls.at(-1)).toEqual(['guest-ping']);
      expect(ch.currentInfo()).toBeUndefined();
      // guest-info re-read before the first command that needs it (the same answer: the same interned AgentInfo)
      await expect(ch.execute('guest-get-osinfo')).resolves.toHaveProperty('kernel-release');
      expect(sent.mock.calls.slice(-2).map(([command, , withId]) => [command, withId])).toEqual([
        ['guest-info', false],
        ['guest-get-osinfo', true],
      ]);
      expect(ch.agentInfo).toEqual(before);
    } finally {
      sent.mockRestore();
      syncs.mockRestore();
    }
    expect(ch.state).toBe('ready');
  });

  it('survives a half-written request left in the agent by an earlier client', async () => {
    await rawWriteAndClose(agent.socketPath, '{"execute": "guest-pi');
    const ch = open();
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    await expect(ch.execute('guest-get-osinfo')).resolves.toHaveProperty('kernel-release');
  });

  it('works after an earlier client asked for a big reply and left', async () => {
    // An earlier client asks for a 64 KiB read (an 87 KiB reply) and leaves without answering or
    // syncing. (qemu-ga's own unix-listen socket drops what that client left; a virtio-serial
    // chardev hands it to the next client, which channel-sim.test.ts and the VM tests cover.) It
    // leaves only once the whole reply has come: qemu-ga (7.2 here) in unix-listen mode exits
    // (status 0, "error reading channel") when a reply's write fails with EPIPE, so a client that
    // left before or while the agent wrote would make this test depend on how the agent was
    // scheduled, not on the gateway (it failed that way in full suites).
    const setup = open();
    const handle = (await setup.execute('guest-file-open', { path: `${agent.stateDir}/big.bin`, mode: 'w+' })) as number;
    await setup.execute('guest-file-write', { handle, 'buf-b64': Buffer.alloc(64 * 1024, 0x41).toString('base64') });
    await setup.execute('guest-file-seek', { handle, offset: 0, whence: 'set' });
    setup.release();
    const got = await rawAskAndLeave(agent.socketPath, `{"execute":"guest-file-read","arguments":{"handle":${handle},"count":65536}}\n`);
    expect(got).toBeGreaterThan(87_000);
    const ch = open();
    let stale = 0;
    ch.events.on('stale', (e: { bytes: number }) => (stale += e.bytes));
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    await ch.execute('guest-file-close', { handle });
    // at least the agent's parse-error line for our lone 0xFF was discarded
    expect(stale).toBeGreaterThan(0);
  });

  it('releases the socket when idle so another client can use the agent', async () => {
    const ch = open({ idleReleaseMs: 50 });
    await ch.execute('guest-ping');
    await waitFor(() => ch.state === 'idle');
    // The agent serves one client at a time: this answers only if we let go.
    const raw = await rawExchange(agent.socketPath, '{"execute":"guest-ping"}\n');
    expect(raw).toContain('{"return": {}}');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('fails with AGENT_UNAVAILABLE within the deadline when the agent is gone', async () => {
    const ch = open({ backoff: { initialMs: 10, maxMs: 50 } });
    await ch.execute('guest-ping');
    agent.kill('SIGKILL');
    const err = await gatewayError(ch.execute('guest-ping', undefined, { timeoutMs: 500 }));
    expect(err.code).toBe('AGENT_UNAVAILABLE');
    await agent.restart();
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });
});

function rawWriteAndClose(socketPath: string, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => {
      s.end(text, () => {
        s.destroy();
        resolve();
      });
    });
    s.on('error', reject);
  });
}

/** Writes `text`, waits for one whole reply line (counting its bytes, not parsing it) and closes the socket; resolves with the byte count. */
function rawAskAndLeave(socketPath: string, text: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    const s = net.connect(socketPath, () => s.write(text));
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no whole reply within 5 s (${bytes} bytes)`));
    }, 5_000);
    s.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (chunk[chunk.length - 1] !== 0x0a) return;
      clearTimeout(timer);
      s.destroy();
      resolve(bytes);
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Our own minimal client: 0xFF + sync-delimited, then `text`; returns what came back. */
function rawExchange(socketPath: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer; got ${JSON.stringify(out.slice(0, 200))}`));
    }, 5000);
    s.on('connect', () => s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n${text}`)])));
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      const after = out.split('\xff{"return": 4242}\n')[1];
      if (after?.endsWith('\n')) {
        clearTimeout(timer);
        s.destroy();
        resolve(after);
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}
