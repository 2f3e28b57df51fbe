/**
 * Channels to simulated agents for channel-level tests: a Simulator in a temp dir per test
 * (beforeEach), every channel made through it destroyed and the simulator closed after each test
 * (afterEach). `channel()` adds a VM and a Channel to it with short test timings; Channel options
 * override them.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { Channel, type ChannelOptions } from '../../src/qga/channel.js';
import { COMMANDS } from '../../src/qga/commands.js';
import type { TimeoutClass } from '../../src/qga/types.js';
import { Simulator, type SimAgent } from '../../sim/index.js';

export const CHANNEL_TEST_TIMEOUTS: Record<TimeoutClass, number> = { fast: 3000, normal: 3000, slow: 5000, freeze: 5000, long: 5000 };

export interface SimChannel {
  vm: SimAgent;
  ch: Channel;
  /** the VM's unix socket ('' on TCP) */
  socketPath: string;
}

export interface SimChannels {
  /** this test's simulator */
  readonly sim: Simulator;
  /**
   * a new VM (agent `version`, default 10.0.0; `disabled` commands; on `socketPath` if given, or
   * on TCP with `tcp`; named `name`, default prefix + a number) and a Channel to it
   */
  channel(opts?: { version?: string; socketPath?: string; disabled?: string[]; tcp?: boolean; name?: string } & Partial<ChannelOptions>): Promise<SimChannel>;
}

/** Registers the per-test set-up and clean-up; call at the top level of a test file. `prefix` names the VMs and the temp dir. */
export function useSimChannels(prefix: string): SimChannels {
  let dir = '';
  let sim: Simulator | undefined;
  let channels: Channel[] = [];
  let seq = 0;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
    sim = new Simulator({ dir });
    channels = [];
  });
  afterEach(async () => {
    for (const ch of channels) ch.destroy();
    await sim?.close();
    sim = undefined;
    await rm(dir, { recursive: true, force: true });
  });
  const current = (): Simulator => {
    if (sim === undefined) throw new Error('useSimChannels: no simulator outside a test');
    return sim;
  };
  return {
    get sim() {
      return current();
    },
    async channel(opts = {}) {
      const { version, socketPath, disabled, tcp, name: given, ...chOpts } = opts;
      const name = given ?? `${prefix}${++seq}`;
      const vm = await current().addVm({ name, version: version ?? '10.0.0', disabled: disabled ?? [], ...(socketPath ? { socketPath } : {}), ...(tcp ? { tcp } : {}) });
      const ch = new Channel({
        vm: name,
        endpoint: vm.endpoint,
        catalog: (c) => COMMANDS[c],
        timeouts: CHANNEL_TEST_TIMEOUTS,
        syncTimeoutMs: 1000,
        connectTimeoutMs: 1000,
        backoff: { initialMs: 10, maxMs: 100 },
        idleReleaseMs: 0,
        ...chOpts,
      });
      channels.push(ch);
      return { vm, ch, socketPath: vm.endpoint.type === 'unix' ? vm.endpoint.path : '' };
    },
  };
}
