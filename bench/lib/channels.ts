/** Channel and pool options as the gateway builds them (src/gateway.ts), for in-process benches. */
import { COMMANDS, DEFAULT_TIMEOUTS } from '../../src/qga/commands.js';
import type { ChannelOptions } from '../../src/qga/channel.js';
import { AgentPool } from '../../src/pool/pool.js';
import type { Endpoint } from '../../src/qga/types.js';

export function channelOptions(): Omit<ChannelOptions, 'vm' | 'endpoint'> {
  return {
    catalog: (name: string) => COMMANDS[name],
    timeouts: { ...DEFAULT_TIMEOUTS },
    // benches hold their sockets; releases happen only where a bench asks for them
    idleReleaseMs: 0,
  };
}

export function makePool(vms: Array<{ name: string; endpoint: Endpoint }>, maxOpen: number): AgentPool {
  const byName = new Map(vms.map((v) => [v.name, v.endpoint]));
  return new AgentPool({ resolve: (vm) => byName.get(vm), maxOpen, channelOptions: channelOptions() });
}
