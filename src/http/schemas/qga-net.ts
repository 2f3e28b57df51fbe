/** QGA types of guest-network-get-interfaces and guest-network-get-route. */
import { Type } from 'typebox';
import { described, enumComponent, objectComponent } from './component.js';

export const GuestIpAddressType = enumComponent(
  'GuestIpAddressType',
  'IP address type: ipv4 = IP version 4, ipv6 = IP version 6. (since 1.1)',
  ['ipv4', 'ipv6'],
);

export const GuestIpAddress = objectComponent('GuestIpAddress', 'An IP address of an interface. (since 1.1)', {
  'ip-address': Type.String({ description: 'IP address' }),
  'ip-address-type': described(GuestIpAddressType, 'Type of ip-address (e.g. ipv4, ipv6)'),
  prefix: Type.Integer({ format: 'int64', description: 'Network prefix length of ip-address' }),
});

const counter = (description: string) => Type.Integer({ format: 'uint64', description });

export const GuestNetworkInterfaceStat = objectComponent('GuestNetworkInterfaceStat', 'Statistic counters of an interface. (since 2.11)', {
  'rx-bytes': counter('total bytes received'),
  'rx-packets': counter('total packets received'),
  'rx-errs': counter('bad packets received'),
  'rx-dropped': counter('receiver dropped packets'),
  'tx-bytes': counter('total bytes transmitted'),
  'tx-packets': counter('total packets transmitted'),
  'tx-errs': counter('packet transmit problems'),
  'tx-dropped': counter('dropped packets transmitted'),
});

export const GuestNetworkInterface = objectComponent('GuestNetworkInterface', 'A network interface of the guest. (since 1.1)', {
  name: Type.String({ description: 'The name of interface for which info are being delivered' }),
  'hardware-address': Type.Optional(Type.String({ description: 'Hardware address of name' })),
  'ip-addresses': Type.Optional(Type.Array(GuestIpAddress, { description: 'List of addresses assigned to name' })),
  statistics: Type.Optional(
    described(GuestNetworkInterfaceStat, 'various statistic counters related to name (since 2.11)'),
  ),
});

export const GuestNetworkRoute = objectComponent('GuestNetworkRoute', 'Route information, currently, only linux supported. (since 9.1)', {
  iface: Type.String({ description: "The destination network or host's egress network interface in the routing table" }),
  destination: Type.String({ description: 'The IP address of the target network or host, The final destination of the packet' }),
  metric: Type.Integer({ format: 'int64', description: 'Route metric' }),
  gateway: Type.Optional(Type.String({ description: 'The IP address of the next hop router' })),
  mask: Type.Optional(Type.String({ description: 'Subnet Mask (IPv4 only)' })),
  irtt: Type.Optional(Type.Integer({ format: 'int64', description: 'Initial round-trip delay (not for windows, IPv4 only)' })),
  flags: Type.Optional(Type.Integer({ format: 'int64', description: 'Route flags (not for windows)' })),
  refcnt: Type.Optional(Type.Integer({ format: 'int64', description: "The route's reference count (not for windows)" })),
  use: Type.Optional(Type.Integer({ format: 'int64', description: 'Route usage count (not for windows)' })),
  window: Type.Optional(Type.Integer({ format: 'int64', description: 'TCP window size, used for flow control (not for windows, IPv4 only)' })),
  mtu: Type.Optional(Type.Integer({ format: 'int64', description: 'Data link layer maximum packet size (not for windows)' })),
  desprefixlen: Type.Optional(Type.String({ description: 'Destination prefix length (for IPv6)' })),
  source: Type.Optional(Type.String({ description: 'Source IP address (for IPv6)' })),
  srcprefixlen: Type.Optional(Type.String({ description: 'Source prefix length (for IPv6)' })),
  nexthop: Type.Optional(Type.String({ description: 'Next hop IP address (for IPv6)' })),
  version: Type.Integer({ format: 'int64', description: 'IP version (4 or 6)' }),
});
