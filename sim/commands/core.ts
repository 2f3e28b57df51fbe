/** guest-sync, guest-sync-delimited, guest-ping, guest-info, guest-get/set-time and sim-echo. */
import { performance } from 'node:perf_hooks';
import { generic } from '../errors.js';
import { opt, req } from '../visitor.js';
import type { AgentRuntime, CommandDef } from './types.js';

/** Guest wall clock in nanoseconds; like g_get_real_time() it has microsecond resolution. */
export function guestTimeNs(rt: AgentRuntime): bigint {
  const micros = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
  return micros * 1000n + rt.state.timeOffsetNs;
}

const NS_PER_S = 1_000_000_000n;
const YEAR_1970 = 0n;
const YEAR_2070 = 3_155_760_000n; // 2070-01-01T00:00:00Z in seconds

export const coreCommands: CommandDef[] = [
  {
    name: 'guest-sync-delimited',
    since: '1.1',
    args: [req('id', 'int')],
    run(rt, args) {
      rt.setDelimited();
      return args.id as number | bigint;
    },
  },
  {
    name: 'guest-sync',
    since: '0.15.0',
    args: [req('id', 'int')],
    run: (_rt, args) => args.id as number | bigint,
  },
  {
    name: 'guest-ping',
    since: '0.15.0',
    run: () => undefined,
  },
  {
    name: 'guest-get-time',
    since: '1.5',
    run: (rt) => guestTimeNs(rt),
  },
  {
    name: 'guest-set-time',
    since: '1.5',
    args: [opt('time', 'int')],
    run(rt, args) {
      if (args.time === undefined) {
        // no value: the guest reads its RTC, which the simulator keeps on host time
        rt.state.timeOffsetNs = 0n;
        return undefined;
      }
      const ns = BigInt(args.time as number | bigint);
      const secs = ns / NS_PER_S;
      if (secs < YEAR_1970 || secs >= YEAR_2070) throw generic('Invalid time');
      const hostMicros = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
      rt.state.timeOffsetNs = (ns / 1000n) * 1000n - hostMicros * 1000n;
      return undefined;
    },
  },
  {
    name: 'guest-info',
    since: '0.15.0',
    run(rt) {
      // QEMU prepends each command while walking its table, so the list comes out reversed
      const cmds = rt.commandTable().reverse();
      return {
        version: rt.version,
        supported_commands: cmds.map((c) => ({
          name: c.name,
          enabled: c.enabled,
          'success-response': c.successResponse,
        })),
      };
    },
  },
];

/** Test-only command: echoes a marker after an optional delay (the agent is blocked meanwhile). */
export const simEcho: CommandDef = {
  name: 'sim-echo',
  since: '0.0',
  args: [req('marker', 'str'), opt('delayMs', 'int')],
  async run(rt, args) {
    const ms = Number(args.delayMs ?? 0);
    if (ms > 0) await rt.sleep(ms);
    return { marker: args.marker as string };
  },
};
