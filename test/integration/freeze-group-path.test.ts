/**
 * What a freeze costs per member (issue 14 item 4), on simulated agents with the embedded store:
 *  - with the embedded store the members of a group that start together share ONE fence check (not
 *    one store call each), and that check still fences: an ended lease sends nothing to any member;
 *    with Redis every member checks its own VM's lock;
 *  - a thaw keeps its agent socket (released when idle, like any command's) and the next command
 *    re-reads guest-info on it, so a copy read while the guest was frozen is never used after;
 *  - freeze and thaw wait for no guest-info read (qga/session-core.ts INFO_BLIND).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory.js';
import type { FenceCheck } from '../../src/store/types.js';
import { BACKUP, agentCommands, rig, simFleet, rejection, type Rig, type SimFleet } from './freeze-fixture.js';

/** The embedded store, counting fence checks; `endNext` makes the next check answer 'ended'. */
class CountingStore extends MemoryStore {
  checks: string[] = [];
  endNext = false;
  /** this key's next check answers 'ended' (its lock lost on its own, as a Redis shard may) */
  endKey: string | undefined;
  override async check(key: string, leaseId: string, epoch: string, opts?: { timeoutMs?: number }): Promise<FenceCheck> {
    this.checks.push(key);
    if (this.endNext || this.endKey === key) {
      this.endNext = false;
      this.endKey = undefined;
      return { state: 'ended' };
    }
    return super.check(key, leaseId, epoch, opts);
  }
}

describe('freeze path per member', () => {
  let fleet: SimFleet;
  let g: Rig;
  afterEach(async () => {
    await g?.close();
    await fleet?.close();
  });

  it('a group of 4 makes one fence check for its members and one after the freezes', async () => {
    fleet = await simFleet(['m1', 'm2', 'm3', 'm4']);
    const store = new CountingStore();
    g = await rig(fleet, { store });
    store.checks = [];
    const grp = await g.freeze.groups.create({ vms: ['m1', 'm2', 'm3', 'm4'], ttlSeconds: 60 }, BACKUP);
    expect(grp.vms.map((v) => v.frozen > 0)).toEqual([true, true, true, true]);
    // before: one per member (4) and one after; now: one for the wave, one after
    expect(store.checks).toEqual(['vm:m1', 'vm:m1']);
    for (const vm of ['m1', 'm2', 'm3', 'm4']) expect(agentCommands(fleet.vm[vm])).toEqual(['guest-fsfreeze-freeze']);
  });

  it('with Redis (a lock per VM, each on its own shard in a cluster) every member checks its own lock', async () => {
    fleet = await simFleet(['m1', 'm2', 'm3']);
    const store = new CountingStore();
    // the freezer decides by the store's kind; the locks here are still the embedded store's
    Object.defineProperty(store, 'kind', { value: 'redis' });
    g = await rig(fleet, { store });
    store.checks = [];
    await g.freeze.groups.create({ vms: ['m1', 'm2', 'm3'], ttlSeconds: 60 }, BACKUP);
    expect([...store.checks].sort()).toEqual(['vm:m1', 'vm:m1', 'vm:m2', 'vm:m3']);
  });

  it('with Redis, one member whose lock says ended is not frozen; the others are thawed again', async () => {
    fleet = await simFleet(['m1', 'm2', 'm3']);
    const store = new CountingStore();
    Object.defineProperty(store, 'kind', { value: 'redis' });
    g = await rig(fleet, { store });
    store.endKey = 'vm:m2';
    const err = await rejection(g.freeze.groups.create({ vms: ['m1', 'm2', 'm3'], ttlSeconds: 60 }, BACKUP));
    expect(err.code).toBe('LEASE_CONFLICT');
    const perVm = err.extra?.vms as Array<{ vm: string; result: string; thawAttempted: boolean }>;
    expect(perVm.map((v) => [v.vm, v.result, v.thawAttempted])).toEqual([
      ['m1', 'frozen', true],
      ['m2', 'failed', false],
      ['m3', 'frozen', true],
    ]);
    expect(agentCommands(fleet.vm.m2)).toEqual([]);
    for (const vm of ['m1', 'm3']) expect(agentCommands(fleet.vm[vm])).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
    for (const vm of ['m1', 'm2', 'm3']) expect(fleet.vm[vm].state.frozen).toBe(false);
  });

  it('the shared check fences: a lease ended before the freezes were sent freezes no member', async () => {
    fleet = await simFleet(['m1', 'm2', 'm3']);
    const store = new CountingStore();
    g = await rig(fleet, { store });
    store.endNext = true;
    const err = await rejection(g.freeze.groups.create({ vms: ['m1', 'm2', 'm3'], ttlSeconds: 60 }, BACKUP));
    expect(err.code).toBe('LEASE_CONFLICT');
    const perVm = err.extra?.vms as Array<{ vm: string; result: string; thawAttempted: boolean }>;
    expect(perVm.map((v) => [v.vm, v.result, v.thawAttempted])).toEqual([
      ['m1', 'failed', false],
      ['m2', 'failed', false],
      ['m3', 'failed', false],
    ]);
    for (const vm of ['m1', 'm2', 'm3']) {
      expect(agentCommands(fleet.vm[vm])).toEqual([]);
      expect(fleet.vm[vm].state.frozen).toBe(false);
      expect((await g.freeze.status(vm, BACKUP)).lease).toBeNull();
    }
  });

  it('the freeze lane reads no guest-info: a freeze on a new socket is sync + freeze, the thaw sync + thaw, the next freeze the freeze alone', async () => {
    fleet = await simFleet(['vm1']);
    g = await rig(fleet, { agent: { idleReleaseMs: 60_000 } });
    const a = fleet.vm.vm1;
    const log = () => a.stats.commandLog.map((e) => e.command);
    const f = await g.freeze.freeze('vm1', { ttlSeconds: 60 }, BACKUP);
    expect(log()).toEqual(['guest-sync-delimited', 'guest-fsfreeze-freeze']);
    // the freeze let go of its socket: the thaw opens one
    await g.freeze.thaw('vm1', { leaseId: f.leaseId }, BACKUP);
    expect(log().slice(2)).toEqual(['guest-sync-delimited', 'guest-fsfreeze-thaw']);
    // the thaw kept it: the next freeze is the one command on it
    const connections = a.stats.connections;
    const f2 = await g.freeze.freeze('vm1', { ttlSeconds: 60 }, BACKUP);
    expect(log().slice(4)).toEqual(['guest-fsfreeze-freeze']);
    expect(a.stats.connections).toBe(connections);
    await g.freeze.thaw('vm1', { leaseId: f2.leaseId }, BACKUP);
    expect(a.state.frozen).toBe(false);
  });

  it('after a thaw the socket stays and guest-info read while frozen is read again before the next command', async () => {
    fleet = await simFleet(['vm1']);
    // a long idle release: the socket the thaw used is still held when the next command comes
    g = await rig(fleet, { agent: { idleReleaseMs: 60_000 } });
    const a = fleet.vm.vm1;
    const f = await g.freeze.freeze('vm1', { ttlSeconds: 60 }, BACKUP);
    // a read while frozen: guest-info read now lists it disabled, the agent confirms frozen
    expect((await rejection(g.services.agent.call('vm1', 'guest-get-osinfo'))).code).toBe('VM_FROZEN');
    const t = await g.freeze.thaw('vm1', { leaseId: f.leaseId }, BACKUP);
    expect(t).toMatchObject({ vm: 'vm1', consistent: true });
    const connections = a.stats.connections;
    const logged = a.stats.commandLog.length;
    const os = (await g.services.agent.call('vm1', 'guest-get-osinfo')) as Record<string, unknown>;
    expect(typeof os.id).toBe('string');
    // same socket (no new connection, no handshake), guest-info re-read on it, then the command
    expect(a.stats.connections).toBe(connections);
    expect(a.stats.commandLog.slice(logged).map((e) => e.command)).toEqual(['guest-info', 'guest-get-osinfo']);
  });
});
