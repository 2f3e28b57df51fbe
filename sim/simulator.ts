/**
 * A fleet of simulated QGA endpoints in one process (tests, the demo, benchmarks with 100+ VMs).
 * Unix sockets are created as <dir>/<name>.sock; nothing else on the host is touched.
 */
import { SimAgent, type SimVmOptions } from './agent.js';

export interface SimulatorOptions {
  /** directory for the unix sockets (the caller owns and removes it) */
  dir: string;
  /** default for every VM's timeScale */
  timeScale?: number;
  /** default qemu-ga version for VMs that do not name one */
  version?: string;
}

export class Simulator {
  private readonly vms = new Map<string, SimAgent>();
  private closed = false;

  constructor(private readonly opts: SimulatorOptions) {}

  async addVm(opts: SimVmOptions): Promise<SimAgent> {
    if (this.closed) throw new Error('simulator is closed');
    if (this.vms.has(opts.name)) throw new Error(`simulated VM ${opts.name} already exists`);
    if (!/^[A-Za-z0-9._-]+$/.test(opts.name)) throw new Error(`invalid simulated VM name: ${opts.name}`);
    const vm = new SimAgent(this.opts.dir, {
      timeScale: this.opts.timeScale,
      version: this.opts.version,
      ...opts,
    });
    this.vms.set(opts.name, vm);
    try {
      await vm.start();
    } catch (e) {
      this.vms.delete(opts.name);
      await vm.close();
      throw e;
    }
    return vm;
  }

  getVm(name: string): SimAgent | undefined {
    return this.vms.get(name);
  }

  list(): SimAgent[] {
    return [...this.vms.values()];
  }

  async removeVm(name: string): Promise<void> {
    const vm = this.vms.get(name);
    if (!vm) return;
    this.vms.delete(name);
    await vm.close();
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.vms.values()];
    this.vms.clear();
    await Promise.all(all.map((vm) => vm.close()));
  }
}
