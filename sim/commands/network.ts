/** guest-network-get-interfaces and guest-network-get-route, with one uint64 counter above 2^53. */
import type { JsonObject } from '../../src/qga/types.js';
import type { CommandDef, AgentRuntime } from './types.js';

const started = Date.now();
const TWO_53 = 9_007_199_254_740_992n;

function elapsed(rt: AgentRuntime): bigint {
  return BigInt(Math.max(0, Math.floor(rt.now() - started)));
}

export const networkCommands: CommandDef[] = [
  {
    name: 'guest-network-get-interfaces',
    since: '1.1',
    run(rt) {
      const t = elapsed(rt);
      return [
        {
          name: 'lo',
          'hardware-address': '00:00:00:00:00:00',
          'ip-addresses': [
            { 'ip-address': '127.0.0.1', 'ip-address-type': 'ipv4', prefix: 8 },
            { 'ip-address': '::1', 'ip-address-type': 'ipv6', prefix: 128 },
          ],
          statistics: {
            'rx-bytes': 5120, 'rx-packets': 64, 'rx-errs': 0, 'rx-dropped': 0,
            'tx-bytes': 5120, 'tx-packets': 64, 'tx-errs': 0, 'tx-dropped': 0,
          },
        },
        {
          name: 'eth0',
          'hardware-address': '52:54:00:12:34:56',
          'ip-addresses': [
            { 'ip-address': '10.0.2.15', 'ip-address-type': 'ipv4', prefix: 24 },
            { 'ip-address': 'fe80::5054:ff:fe12:3456', 'ip-address-type': 'ipv6', prefix: 64 },
          ],
          // a long-running 100 Gbit/s link: byte counters past 2^53 (they are uint64 in the agent)
          statistics: {
            'rx-bytes': TWO_53 + 1n + t * 1000n,
            'rx-packets': 123_456_789 + Number(t),
            'rx-errs': 0,
            'rx-dropped': 17,
            'tx-bytes': TWO_53 * 2n + 7n + t * 500n,
            'tx-packets': 98_765_432 + Number(t),
            'tx-errs': 0,
            'tx-dropped': 0,
          },
        },
        ...rt.state.extraInterfaces.map((i) => ({
          name: i.name,
          'hardware-address': '52:54:00:00:00:01',
          'ip-addresses': i.addresses.map((a) => ({ 'ip-address': a.ip, 'ip-address-type': a.type, prefix: a.prefix })),
        })),
      ];
    },
  },
  {
    name: 'guest-network-get-route',
    since: '9.1',
    run: (): JsonObject[] => [
      {
        iface: 'eth0', destination: '0.0.0.0', metric: 100, gateway: '10.0.2.2', mask: '0.0.0.0',
        irtt: 0, flags: 3, refcnt: 0, use: 0, window: 0, mtu: 0, version: 4,
      },
      {
        iface: 'eth0', destination: '10.0.2.0', metric: 100, gateway: '0.0.0.0', mask: '255.255.255.0',
        irtt: 0, flags: 1, refcnt: 0, use: 0, window: 0, mtu: 0, version: 4,
      },
      {
        iface: 'eth0', destination: 'fe80::', metric: 256, flags: 1, refcnt: 1, use: 0, mtu: 0,
        desprefixlen: '40', source: '::', srcprefixlen: '0', nexthop: '::', version: 6,
      },
    ],
  },
];
