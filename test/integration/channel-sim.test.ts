/**
 * The channel against the simulator, for what the real agent cannot be made to do on demand:
 * hangs, drops mid-reply, garbage, oversize replies, replies left for the next client.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import type { Channel } from '../../src/qga/channel.js';
import type { CommandSpec, JsonObject } from '../../src/qga/types.js';
import type { SimAgent } from '../../sim/index.js';
import { useSimChannels } from '../helpers/sim-channels.js';

const READS = new Set(['guest-ping', 'guest-get-osinfo', 'guest-get-host-name', 'guest-info', 'guest-get-time']);
const NO_REPLY = new Set(['guest-shutdown', 'guest-suspend-disk', 'guest-suspend-ram', 'guest-suspend-hybrid']);
const catalog = (name: string): CommandSpec | undefined => ({
  name,
  timeout: 'fast',
  idempotent: READS.has(name),
  successResponse: !NO_REPLY.has(name),
  frozenSafe: false,
  scope: READS.has(name) ? 'read' : 'write',
  since: '0.15',
});

const chans = useSimChannels('vm');

/** a VM and a Channel to it with this file's catalog (test/helpers/sim-channels.ts: set-up and clean-up per test) */
function setup(opts: Parameters<typeof chans.channel>[0] = {}): Promise<{ vm: SimAgent; ch: Channel }> {
  return chans.channel({ catalog, ...opts });
}

async function gatewayError(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    (v) => new Error(`expected a rejection, got ${JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x))}`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return err as GatewayError;
}

const countOf = (vm: SimAgent, command: string): number => vm.stats.commandLog.filter((c) => c.command === command).length;

describe('Channel against the simulator', () => {
  it('fails a non-idempotent command whose connection dropped mid-reply, without resending it', async () => {
    const { vm, ch } = await setup();
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-exec', kind: 'drop-mid-reply', times: 1 });
    const err = await gatewayError(ch.execute('guest-exec', { path: '/bin/true' }));
    expect(err.code).toBe('AGENT_UNAVAILABLE');
    expect(err.message).toMatch(/outcome is unknown/);
    expect(countOf(vm, 'guest-exec')).toBe(1);
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('resends an idempotent command once after a drop', async () => {
    const { vm, ch } = await setup();
    vm.setFault({ command: 'guest-get-host-name', kind: 'drop-mid-reply', times: 1 });
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    expect(countOf(vm, 'guest-get-host-name')).toBe(2);
    // ...but only once
    vm.setFault({ command: 'guest-get-host-name', kind: 'drop-mid-reply', times: 2 });
    expect((await gatewayError(ch.execute('guest-get-host-name'))).code).toBe('AGENT_UNAVAILABLE');
    expect(countOf(vm, 'guest-get-host-name')).toBe(4);
  });

  it('recovers when the agent is killed during a request and comes back', async () => {
    const { vm, ch } = await setup();
    vm.setFault({ command: 'guest-exec', kind: 'delay', ms: 300, times: 1 });
    const p = ch.execute('guest-exec', { path: '/bin/true' });
    await waitFor(() => countOf(vm, 'guest-exec') === 1);
    await vm.kill();
    expect((await gatewayError(p)).code).toBe('AGENT_UNAVAILABLE');
    const down = await gatewayError(ch.execute('guest-ping', undefined, { timeoutMs: 300 }));
    expect(down.code).toBe('AGENT_UNAVAILABLE');
    await vm.restart();
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it("a deadline that passes while the channel is still synchronizing says so, not that the agent could not be reached (h10 L3)", async () => {
    const { vm, ch } = await setup();
    vm.setFault({ command: 'guest-sync-delimited', kind: 'hang', times: 1 });
    const err = await gatewayError(ch.execute('guest-ping', undefined, { timeoutMs: 300 }));
    expect(err.code).toBe('AGENT_UNAVAILABLE');
    expect(err.message).toMatch(/^the channel to the agent of vm\S* was still synchronizing with it \(guest-sync-delimited\) when this guest-ping's 300 ms deadline passed; it was never sent$/);
    expect(err.extra?.sent).toBe(false);
    expect(countOf(vm, 'guest-ping')).toBe(0);
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('times out a hung command within its deadline, then resyncs and goes on', async () => {
    const { vm, ch } = await setup();
    const resyncs: string[] = [];
    ch.events.on('resync', (e: { reason: string }) => resyncs.push(e.reason));
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-get-osinfo', kind: 'hang', times: 1 });
    const t0 = performance.now();
    const err = await gatewayError(ch.execute('guest-get-osinfo', undefined, { timeoutMs: 200 }));
    const elapsed = performance.now() - t0;
    expect(err.code).toBe('AGENT_TIMEOUT');
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(200 + 1500);
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    // exactly: the first connect; the resync after the timeout (on the same socket: the simulated
    // agent is still blocked in the hung command, so it gets no answer); the reconnect that succeeds
    expect(resyncs).toEqual(['connect', 'timeout', 'connect']);
  });

  for (const version of ['10.0.0', '2.12.0']) {
    it(`never hands a late reply to the next caller (agent ${version})`, async () => {
      const { vm, ch } = await setup({ version });
      await ch.execute('guest-ping');
      expect(ch.agentInfo?.echoesId).toBe(version === '10.0.0');
      vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 300, times: 1 });
      const late = ch.execute('guest-get-osinfo', undefined, { timeoutMs: 100 });
      const next = ch.execute('guest-get-host-name');
      expect((await gatewayError(late)).code).toBe('AGENT_TIMEOUT');
      const reply = (await next) as JsonObject;
      expect(Object.keys(reply)).toEqual(['host-name']);
      await expect(ch.execute('guest-ping')).resolves.toEqual({});
    });
  }

  it('turns a garbage reply into AGENT_PROTOCOL_ERROR and recovers', async () => {
    const { vm, ch } = await setup();
    const resyncs: string[] = [];
    ch.events.on('resync', (e: { reason: string }) => resyncs.push(e.reason));
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-get-osinfo', kind: 'garbage', times: 1 });
    expect((await gatewayError(ch.execute('guest-get-osinfo'))).code).toBe('AGENT_PROTOCOL_ERROR');
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    expect(resyncs).toEqual(['connect', 'protocol-error']);
  });

  it('drops an oversize reply without buffering it, fails the command, and recovers', async () => {
    const { vm, ch } = await setup({ maxReplyBytes: 64 * 1024 });
    let stale = 0;
    ch.events.on('stale', (e: { bytes: number }) => (stale += e.bytes));
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-get-osinfo', kind: 'oversize', bytes: 8 * 1024 * 1024, times: 1 });
    const err = await gatewayError(ch.execute('guest-get-osinfo'));
    expect(err.code).toBe('REPLY_TOO_LARGE');
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    // the bulk of the 8 MiB line went by as discarded bytes, not into a buffer
    expect(stale).toBeGreaterThan(7 * 1024 * 1024);
  });

  it('discards replies an earlier client left behind', async () => {
    const { vm, ch } = await setup();
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 100, times: 1 });
    await rawRequestThenLeave(vm, '{"execute":"guest-get-osinfo"}\n{"execute":"guest-get-time"}\n');
    let stale = 0;
    ch.events.on('stale', (e: { bytes: number }) => (stale += e.bytes));
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(countOf(vm, 'guest-get-osinfo')).toBe(1);
    expect(stale).toBeGreaterThan(0);
  });

  it('skips a torn partial line left in the stream', async () => {
    const { vm, ch } = await setup();
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-get-osinfo', kind: 'partial-line', times: 1 });
    const err = await gatewayError(ch.execute('guest-get-osinfo', undefined, { timeoutMs: 300 }));
    expect(err.code).toBe('AGENT_TIMEOUT');
    await expect(ch.execute('guest-get-host-name')).resolves.toHaveProperty('host-name');
  });

  it('serializes 100 concurrent callers strictly, in order', async () => {
    const { vm, ch } = await setup({ maxQueue: 128 });
    const markers = Array.from({ length: 100 }, (_, i) => `m-${i}`);
    const replies = await Promise.all(markers.map((marker) => ch.execute('sim-echo', { marker, delayMs: 1 })));
    expect(replies.map((r) => (r as JsonObject).marker)).toEqual(markers);
    expect(vm.stats.maxConcurrentCommands).toBe(1);
    const order = vm.stats.commandLog.filter((c) => c.command === 'sim-echo').map((c) => (c.args as JsonObject).marker);
    expect(order).toEqual(markers);
  });

  it('answers QUEUE_FULL past maxQueue waiting commands', async () => {
    const { vm, ch } = await setup({ maxQueue: 4 });
    vm.setFault({ command: 'guest-ping', kind: 'delay', ms: 200, times: 1 });
    const first = ch.execute('guest-ping');
    await waitFor(() => ch.stats().inFlight === 1);
    const waiting = [1, 2, 3, 4].map(() => ch.execute('guest-get-host-name'));
    const err = await gatewayError(ch.execute('guest-get-host-name'));
    expect(err.code).toBe('QUEUE_FULL');
    expect(err.retryAfter).toBe(1);
    await first;
    await Promise.all(waiting);
  });

  it('completes guest-shutdown through the sync fence', async () => {
    const { vm, ch } = await setup();
    await ch.execute('guest-ping');
    expect(ch.agentInfo?.commands.get('guest-shutdown')?.successResponse).toBe(false);
    await expect(ch.execute('guest-shutdown', { mode: 'powerdown' })).resolves.toEqual({});
    expect(countOf(vm, 'guest-shutdown')).toBe(1);
  });

  it('reports a failed guest-shutdown from the error line before the fence', async () => {
    const { vm, ch } = await setup();
    vm.setFault({ command: 'guest-shutdown', kind: 'error', class: 'GenericError', desc: 'shutdown refused', times: 1 });
    const err = await gatewayError(ch.execute('guest-shutdown'));
    expect(err.code).toBe('AGENT_ERROR');
    expect(err.qga?.desc).toBe('shutdown refused');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('speaks to an agent on a TCP endpoint', async () => {
    const { vm, ch } = await setup({ name: 'tcpvm', tcp: true });
    expect(vm.endpoint.type).toBe('tcp');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    const { rttMs } = await ch.sync();
    expect(rttMs).toBeGreaterThanOrEqual(0);
    await expect(ch.execute('guest-get-host-name')).resolves.toEqual({ 'host-name': 'tcpvm' });
  });

  it('works FIFO with an old agent that neither echoes nor accepts ids', async () => {
    const { ch } = await setup({ version: '2.5.0' });
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect(ch.agentInfo?.echoesId).toBe(false);
    expect(typeof (await ch.execute('guest-get-time'))).toBe('bigint');
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
    expect((await gatewayError(ch.execute('guest-no-such'))).code).toBe('COMMAND_NOT_SUPPORTED');
  });

  it('takes an aborted waiting command out of the queue without sending it', async () => {
    const { vm, ch } = await setup();
    vm.setFault({ command: 'guest-ping', kind: 'delay', ms: 200, times: 1 });
    const first = ch.execute('guest-ping');
    const ac = new AbortController();
    const second = ch.execute('guest-get-osinfo', undefined, { signal: ac.signal });
    await waitFor(() => ch.stats().inFlight === 1);
    ac.abort();
    const err = await second.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).name).toBe('AbortError');
    await first;
    expect(countOf(vm, 'guest-get-osinfo')).toBe(0);
    expect(ch.stats().queued).toBe(0);
  });

  it('abandons an aborted in-flight command and resyncs before the next one', async () => {
    const { vm, ch } = await setup();
    const resyncs: string[] = [];
    ch.events.on('resync', (e: { reason: string }) => resyncs.push(e.reason));
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 200, times: 1 });
    const ac = new AbortController();
    const p = ch.execute('guest-get-osinfo', undefined, { signal: ac.signal });
    await waitFor(() => countOf(vm, 'guest-get-osinfo') === 1);
    ac.abort(new Error('client went away'));
    await expect(p).rejects.toThrow('client went away');
    const reply = (await ch.execute('guest-get-host-name')) as JsonObject;
    expect(Object.keys(reply)).toEqual(['host-name']);
    expect(resyncs).toEqual(['connect', 'aborted']);
  });
});

/** An earlier client: sends requests and leaves before their replies arrive. */
async function rawRequestThenLeave(vm: SimAgent, text: string): Promise<void> {
  if (vm.endpoint.type !== 'unix') throw new Error('unix endpoint expected');
  const socketPath = vm.endpoint.path;
  await new Promise<void>((resolve, reject) => {
    const s = net.connect(socketPath, () => {
      s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(text)]), () => {
        s.destroy();
        resolve();
      });
    });
    s.on('error', reject);
  });
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('a gated command (ExecuteOptions.gate: asked when the command reaches the wire)', () => {
  const refused = () => new GatewayError('LEASE_CONFLICT', 'fenced at the wire', { extra: { reason: 'fenced' } });

  it('asked only once the command ahead of it is answered; a refusal fails it unsent, and the line goes on', async () => {
    const { vm, ch } = await setup();
    await ch.execute('guest-ping');
    vm.setFault({ command: 'guest-get-osinfo', kind: 'delay', ms: 300, times: 1 });
    const ahead = ch.execute('guest-get-osinfo');
    let askedAt = 0;
    const gated = gatewayError(ch.execute('guest-get-host-name', undefined, { gate: async () => ((askedAt = performance.now()), refused()) }));
    const t0 = performance.now();
    await ahead;
    const aheadDone = performance.now();
    const err = await gated;
    expect(err.message).toBe('fenced at the wire');
    expect(askedAt).toBeGreaterThanOrEqual(aheadDone - 5);
    expect(aheadDone - t0).toBeGreaterThan(150);
    expect(countOf(vm, 'guest-get-host-name')).toBe(0);
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });

  it('a gate that says yes sends the command; one that does not answer within syncTimeoutMs (1 s here) lets it go', async () => {
    const { vm, ch } = await setup();
    await expect(ch.execute('guest-get-host-name', undefined, { gate: async () => true })).resolves.toHaveProperty('host-name');
    const t0 = performance.now();
    await expect(ch.execute('guest-get-host-name', undefined, { gate: () => new Promise<true>(() => undefined) })).resolves.toHaveProperty('host-name');
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThan(2_500);
    expect(countOf(vm, 'guest-get-host-name')).toBe(2);
  });

  it("the socket lost while the gate is asked: the command waits for the next socket and is gated again there; the first asking’s late answer is not taken", async () => {
    const { vm, ch } = await setup();
    await ch.execute('guest-ping');
    let asks = 0;
    let release: (v: true) => void = () => undefined;
    const first = new Promise<true>((r) => (release = r));
    // the second asking (on the next socket) refuses, but only after the first's late yes
    let refuse: (e: Error) => void = () => undefined;
    const second = new Promise<Error>((r) => (refuse = r));
    const sent = gatewayError(ch.execute('guest-get-host-name', undefined, { gate: () => (++asks === 1 ? first : second) }));
    await new Promise((r) => setTimeout(r, 50));
    expect(asks).toBe(1);
    await vm.restartProcess();
    await waitFor(() => asks === 2);
    release(true); // the first answer comes after its socket went: not taken
    await new Promise((r) => setTimeout(r, 50));
    refuse(refused());
    expect((await sent).message).toBe('fenced at the wire');
    expect(countOf(vm, 'guest-get-host-name')).toBe(0);
    await expect(ch.execute('guest-ping')).resolves.toEqual({});
  });
});
