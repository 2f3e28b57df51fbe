/**
 * One VM name from two registry sources (a `vms:` entry and a discovered socket): the config one is
 * used, and the gateway says so once, in a warning naming both, instead of hiding the other silently.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Simulator } from '../../sim/index.js';
import { VmRegistry } from '../../src/registry/registry.js';

const root = mkdtempSync(join(tmpdir(), 'qga-shadow-'));
const sim = new Simulator({ dir: root });

afterAll(async () => {
  await sim.close();
  rmSync(root, { recursive: true, force: true });
});

describe('registry: one name from two sources', () => {
  it('warns once, naming the source used and the one hidden; nothing when the names differ', async () => {
    const disc = join(root, 'disc');
    mkdirSync(disc);
    const configured = await sim.addVm({ name: 'cfg-dup' });
    await sim.addVm({ name: 'disc-dup', socketPath: join(disc, 'dup.sock') });
    await sim.addVm({ name: 'disc-other', socketPath: join(disc, 'other.sock') });
    const warned: Array<{ obj: Record<string, unknown>; msg: string }> = [];
    const logger = { info: () => undefined, warn: (obj: object, msg: string) => void warned.push({ obj: obj as Record<string, unknown>, msg }) };
    const reg = new VmRegistry({
      vms: [{ name: 'dup', endpoint: configured.endpoint }],
      registry: { allowApiRegistration: false, directories: [{ path: disc, suffix: '.sock' }], allowedTcpEndpoints: [], rescanIntervalMs: 60_000 },
    });
    await reg.start(logger);
    try {
      expect(warned.map((w) => w.obj)).toEqual([{ vm: 'dup', wins: 'config', hidden: ['discovery'] }]);
      expect(warned[0].msg).toMatch(/VM name dup comes from config and discovery; the config one is used/);
      expect(reg.resolve('dup')).toEqual(configured.endpoint);
      // a rescan that finds it again says nothing more
      await reg.list();
      expect(warned).toHaveLength(1);
    } finally {
      reg.stop();
    }
  });
});
