/**
 * Every job a channel accepted is counted exactly once in its stats (queued or inFlight) from
 * acceptance until it settles: through the connect, the sync, the guest-info read, a ping written
 * behind the sync (a channel with a guest-info copy), a hung agent and the deadlines. And
 * agent.maxQueue bounds the jobs waiting BEHIND the next one on the wire: a burst reaching an
 * idle channel (its first job still waiting for the connect) gets as many places as the same
 * burst once that job is on the wire (issue 14 report: two pings at once on a fresh channel with
 * maxQueue 1, the second refused 429 QUEUE_FULL while its held refusal still counted in admission).
 */
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import type { Channel, ChannelOptions } from '../../src/qga/channel.js';
import type { SimAgent } from '../../sim/index.js';
import { useSimChannels } from '../helpers/sim-channels.js';

/** the hung pings' own deadline */
const DEADLINE = 400;

const chans = useSimChannels('acct');
async function setup(opts: Partial<ChannelOptions> = {}): Promise<{ vm: SimAgent; ch: Channel }> {
  const { vm, ch } = await chans.channel(opts);
  return { vm, ch };
}

/**
 * Watches queued + inFlight against accepted − settled ('command' events: a job leaves the stats
 * in the same step its event is emitted) at every state/resync/command event and every 2 ms.
 */
function watch(ch: Channel): { accepted: () => void; gaps: string[]; phases: Set<string>; stop: () => void } {
  let accepted = 0;
  let settled = 0;
  const gaps: string[] = [];
  const phases = new Set<string>();
  const check = (at: string): void => {
    const s = ch.stats();
    phases.add(`${s.state} q=${s.queued} f=${s.inFlight}`);
    if (s.queued + s.inFlight !== accepted - settled) gaps.push(`${at}: ${s.state} queued ${s.queued} inFlight ${s.inFlight}, unsettled ${accepted - settled}`);
  };
  const onCommand = (): void => {
    settled++;
    check('command');
  };
  const onOther = (): void => check('event');
  ch.events.on('command', onCommand);
  ch.events.on('state', onOther);
  ch.events.on('resync', onOther);
  const timer = setInterval(() => check('poll'), 2);
  return {
    /** called right BEFORE the job is handed over (a 'state' event may come from inside execute()) */
    accepted: () => {
      accepted++;
    },
    gaps,
    phases,
    stop: () => {
      clearInterval(timer);
      ch.events.off('command', onCommand);
      ch.events.off('state', onOther);
      ch.events.off('resync', onOther);
    },
  };
}

const code = (p: Promise<unknown>): Promise<unknown> => p.then(() => 'ok', (e: { code?: string }) => e.code);

describe('channel accounting: every accepted job is queued or in flight until it settles', () => {
  for (const warm of [false, true]) {
    it(`two pings at once on a ${warm ? 'channel with a guest-info copy (ping behind the sync)' : 'fresh channel (guest-info read first)'}, the agent hung on guest-ping: counted 2 until each times out`, async () => {
      const { vm, ch } = await setup();
      if (warm) {
        await ch.info();
        expect(ch.release()).toBe(true);
      }
      vm.resetStats();
      vm.setFault({ command: 'guest-ping', kind: 'hang' });
      const w = watch(ch);
      const t0 = performance.now();
      const pings: Promise<unknown>[] = [];
      for (let i = 0; i < 2; i++) {
        w.accepted();
        pings.push(code(ch.execute('guest-ping', undefined, { timeoutMs: DEADLINE + i * 200 })));
      }
      const outcomes = await Promise.all(pings);
      const ms = performance.now() - t0;
      w.stop();
      // the first times out on the wire; the second expires during the resync the hung agent never answers
      expect(outcomes).toEqual(['AGENT_TIMEOUT', 'AGENT_UNAVAILABLE']);
      expect(ms).toBeGreaterThanOrEqual(DEADLINE + 200 - 5);
      expect(ms).toBeLessThan(DEADLINE + 200 + 500);
      expect(w.gaps).toEqual([]);
      expect(w.phases).toContain('ready q=1 f=1');
      expect(ch.stats()).toMatchObject({ queued: 0, inFlight: 0 });
      expect(vm.stats.commandLog.map((c) => c.command)).toEqual(
        warm ? ['guest-sync-delimited', 'guest-ping'] : ['guest-sync-delimited', 'guest-info', 'guest-ping'],
      );
    });
  }

  it('maxQueue 1: an idle channel takes a second job while the first waits for the connect (as it does once the first is on the wire), not a third', async () => {
    const { vm, ch } = await setup({ maxQueue: 1 });
    vm.setFault({ command: 'guest-ping', kind: 'hang' });
    const w = watch(ch);
    w.accepted();
    const first = code(ch.execute('guest-ping', undefined, { timeoutMs: DEADLINE }));
    expect(ch.stats()).toMatchObject({ state: 'connecting', queued: 1, inFlight: 0 });
    w.accepted();
    const second = code(ch.execute('guest-ping', undefined, { timeoutMs: DEADLINE + 200 }));
    expect(ch.stats()).toMatchObject({ state: 'connecting', queued: 2, inFlight: 0 });
    await expect(code(ch.execute('guest-ping'))).resolves.toBe('QUEUE_FULL');
    await expect(Promise.all([first, second])).resolves.toEqual(['AGENT_TIMEOUT', 'AGENT_UNAVAILABLE']);
    w.stop();
    expect(w.gaps).toEqual([]);
    // a priority job waiting ahead takes the next place on the wire: then maxQueue counts every ordinary one
    vm.clearFaults();
    vm.setFault({ command: 'guest-fsfreeze-thaw', kind: 'delay', ms: 100 });
    ch.release();
    const thaw = code(ch.execute('guest-fsfreeze-thaw', undefined, { priority: 'thaw' }));
    const ping = code(ch.execute('guest-ping'));
    await expect(code(ch.execute('guest-ping'))).resolves.toBe('QUEUE_FULL');
    await expect(Promise.all([thaw, ping])).resolves.toEqual(['ok', 'ok']);
  });

  it('destroy() with one job on the wire and one waiting: each counted until its own command event', async () => {
    const { vm, ch } = await setup();
    await ch.info();
    vm.setFault({ command: 'guest-ping', kind: 'hang' });
    const w = watch(ch);
    w.accepted();
    const first = code(ch.execute('guest-ping'));
    w.accepted();
    const second = code(ch.execute('guest-ping'));
    expect(ch.stats()).toMatchObject({ queued: 1, inFlight: 1 });
    ch.destroy();
    w.stop();
    await expect(Promise.all([first, second])).resolves.toEqual(['AGENT_UNAVAILABLE', 'AGENT_UNAVAILABLE']);
    expect(w.gaps).toEqual([]);
    expect(ch.stats()).toMatchObject({ state: 'closed', queued: 0, inFlight: 0 });
  });
});
