/**
 * freeze/local-timers.ts: the retry of a failed thaw backs off (0.5, 1, 2 … 30 s); retryNow sends
 * the waiting retries of the leases it picks at once (a cluster node they waited for is back),
 * and leaves the others and the timers not yet due alone.
 */
import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { LocalTimers } from '../../src/freeze/local-timers.js';
import type { Lease, LeaseStore } from '../../src/store/types.js';

const lease = (vm: string, node: string, expiresIn: number): Lease => ({
  session: `vm:${vm}`, keys: [`vm:${vm}`], leaseId: `lease-${vm}`, owner: 'backup', fence: 1,
  createdAt: Date.now(), expiresAt: Date.now() + expiresIn, hardDeadline: Date.now() + 3_600_000, epoch: 'e',
  data: { kind: 'vm', vms: [vm], state: 'frozen', nodes: { [vm]: node } },
});

let timers: LocalTimers | undefined;
afterEach(() => timers?.stop());

describe('LocalTimers.retryNow', () => {
  it("sends the waiting retries of the leases it picks now, not the others' nor a timer not yet due", async () => {
    const calls: Array<{ vm: string; at: number }> = [];
    let failing = true;
    const store = { claim: async () => true, getSession: async () => undefined } as unknown as LeaseStore;
    timers = new LocalTimers(store, pino({ level: 'silent' }), 5_000, async (l) => {
      calls.push({ vm: l.session, at: Date.now() });
      if (failing) throw new Error('node away');
    });
    timers.arm(lease('b1', 'B', 0));
    timers.arm(lease('c1', 'C', 0));
    timers.arm(lease('later', 'B', 60_000));
    // the first tries fail, and the second ones (after 0.5 s): the next are 1 s away
    const until = async (n: number) => {
      for (let i = 0; i < 200 && calls.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(4);
    expect(calls.map((c) => c.vm).sort()).toEqual(['vm:b1', 'vm:b1', 'vm:c1', 'vm:c1']);
    failing = false;
    const t0 = Date.now();
    expect(timers.retryNow((l) => Object.values((l.data as { nodes: Record<string, string> }).nodes).includes('B'))).toBe(1);
    await until(5);
    const sent = calls.slice(4);
    expect(sent.map((c) => c.vm)).toEqual(['vm:b1']);
    expect(sent[0].at - t0).toBeLessThan(200);
    // c1's retry comes at its own time (1 s after its second try), `later` at its expiry
    await new Promise((r) => setTimeout(r, 300));
    expect(calls.slice(4).map((c) => c.vm)).toEqual(['vm:b1']);
  });
});
