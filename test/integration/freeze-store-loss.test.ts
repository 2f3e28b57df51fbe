/**
 * Leases a process holds when the lease store loses them or cannot be read, with a real
 * redis-server (the embedded store cannot lose what it wrote):
 *  - Redis restarted empty (FLUSHALL here), then another freeze of the VM is refused: the first
 *    lease's local timer still thaws the guest at its deadline (the refused freeze's clean-up
 *    dropped it before: the VM stayed frozen for good);
 *  - the holder's thaw after the loss goes through with the lease this process holds (leaseCheck
 *    `local`), instead of 409 "never existed";
 *  - SIGTERM-style stop while Redis is down: the VMs this process froze are thawed (before, the
 *    unreadable store meant "no sessions": nothing was thawed, nothing logged).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rawCommand, startRedis, type TestRedis } from '../helpers/redis.js';
import { BACKUP, agentCommands, rejection, rig, simFleet, waitFor, type Rig, type SimFleet } from './freeze-fixture.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe('freeze leases the store lost or cannot read (redis)', () => {
  let fleet: SimFleet;
  let g: Rig | undefined;
  afterEach(async () => {
    await g?.close();
    g = undefined;
    await fleet?.close();
  });

  it('Redis restarted empty, then a refused freeze of the VM: the first lease still thaws the guest at its deadline', async () => {
    fleet = await simFleet(['lost1']);
    g = await rig(fleet, { redisUrl: redis.url, keyPrefix: 'loss1:' });
    const first = await g.freeze.freeze('lost1', { ttlSeconds: 2 }, BACKUP);
    expect(fleet.vm.lost1.state.frozen).toBe(true);
    expect(await rawCommand(redis.port, ['FLUSHALL'])).toBe('+OK\r\n');
    // the store grants the session again; the agent refuses the freeze (the guest is frozen)
    const err = await rejection(g.freeze.freeze('lost1', { ttlSeconds: 30 }, BACKUP));
    expect(err.code).toBe('VM_FROZEN');
    await waitFor(() => !fleet.vm.lost1.state.frozen, 6_000, "the first lease's deadline thaw");
    // at its deadline (the local timer), not before
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(first.expiresAt) - 50);
    expect(agentCommands(fleet.vm.lost1).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(1);
  });

  it("the holder's thaw after the loss goes through with the lease this process holds", async () => {
    fleet = await simFleet(['lost2']);
    g = await rig(fleet, { redisUrl: redis.url, keyPrefix: 'loss2:' });
    const fr = await g.freeze.freeze('lost2', { ttlSeconds: 60 }, BACKUP);
    expect(await rawCommand(redis.port, ['FLUSHALL'])).toBe('+OK\r\n');
    const r = await g.freeze.thaw('lost2', { leaseId: fr.leaseId }, BACKUP);
    expect([r.thawed, r.leaseCheck]).toEqual([fr.frozen, 'local']);
    expect(fleet.vm.lost2.state.frozen).toBe(false);
    // and a lease id this process never held is still refused
    const other = await rejection(g.freeze.thaw('lost2', { leaseId: '00000000-0000-4000-8000-000000000000' }, BACKUP));
    expect(other.code).toBe('LEASE_CONFLICT');
  });

  it('a stop while Redis is down thaws the VMs this process froze', async () => {
    const own = await startRedis();
    try {
      fleet = await simFleet(['down1', 'down2']);
      g = await rig(fleet, { redisUrl: own.url, keyPrefix: 'down:' });
      await g.freeze.freeze('down1', { ttlSeconds: 60 }, BACKUP);
      await g.freeze.groups.create({ vms: ['down2'], ttlSeconds: 60 }, BACKUP);
      expect([fleet.vm.down1.state.frozen, fleet.vm.down2.state.frozen]).toEqual([true, true]);
      await own.stop();
      const rg = g;
      g = undefined;
      await rg.close();
      expect([fleet.vm.down1.state.frozen, fleet.vm.down2.state.frozen]).toEqual([false, false]);
    } finally {
      await own.stop().catch(() => undefined);
    }
  }, 20_000);
});
