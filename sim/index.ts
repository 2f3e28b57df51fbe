/**
 * QGA simulator: in-memory qemu-ga endpoints for tests, the demo and benchmarks.
 *
 *   const sim = new Simulator({ dir });                 // sockets: <dir>/<name>.sock
 *   const vm = await sim.addVm({ name: 'vm1', version: '10.0.0', disabled: [], tcp: false });
 *   vm.endpoint; vm.state; vm.stats; vm.setFault({ command: '*', kind: 'delay', ms: 50 });
 *   vm.addFile(path, data); vm.addVirtualFile(path, size, seed); vm.readFile(path);
 *   await vm.kill(); await vm.restart(); await sim.removeVm('vm1'); await sim.close();
 *
 * Wire behaviour follows the real agent byte for byte where it was checked
 * (test/integration/sim-vs-qemu-ga.test.ts); nothing runs on or writes to the host.
 */
export { Simulator, type SimulatorOptions } from './simulator.js';
export { SimAgent, type SimVmOptions, type SimStats, type CommandLogEntry } from './agent.js';
export type { FaultSpec, FaultKind } from './faults.js';
export type { GuestState, SimDisk, SimFilesystem } from './state.js';
export { virtualFileBytes, VirtualFs } from './vfs.js';
export { FROZEN_ALLOWED } from './commands/index.js';
