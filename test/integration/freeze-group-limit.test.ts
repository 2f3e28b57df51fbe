/**
 * freeze.maxGroupVms (issue 14 item 4): the group size is a setting; a larger group is refused
 * before anything reaches an agent, a group at the limit freezes every member.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BACKUP, agentCommands, rig, simFleet, rejection, type Rig, type SimFleet } from './freeze-fixture.js';

describe('freeze.maxGroupVms', () => {
  let fleet: SimFleet;
  let g: Rig;
  afterEach(async () => {
    await g?.close();
    await fleet?.close();
  });

  it('with maxGroupVms 2, a group of 3 is 400 VALIDATION_FAILED and sends nothing; a group of 2 freezes both', async () => {
    fleet = await simFleet(['a', 'b', 'c']);
    g = await rig(fleet, { freeze: { maxGroupVms: 2 } });
    const e = await rejection(g.freeze.groups.create({ vms: ['a', 'b', 'c'], ttlSeconds: 60 }, BACKUP));
    expect(e.code).toBe('VALIDATION_FAILED');
    expect(e.message).toContain('1 to 2 VMs');
    for (const vm of ['a', 'b', 'c']) expect(agentCommands(fleet.vm[vm]).filter((c) => c.startsWith('guest-fsfreeze-freeze'))).toEqual([]);
    const grp = await g.freeze.groups.create({ vms: ['a', 'b'], ttlSeconds: 60 }, BACKUP);
    expect(grp.vms).toEqual([expect.objectContaining({ vm: 'a' }), expect.objectContaining({ vm: 'b' })]);
    expect(grp.vms.every((v) => v.frozen > 0)).toBe(true);
    await g.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP);
  });
});
