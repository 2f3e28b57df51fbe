/** Public surface of the QGA simulator. */
export { Simulator, type SimulatorOptions } from './simulator.js';
export { SimAgent, type SimVmOptions, type SimStats, type CommandLogEntry } from './agent.js';
export type { FaultSpec, FaultKind } from './faults.js';
export type { GuestState, SimDisk, SimFilesystem } from './state.js';
export { virtualFileBytes, VirtualFs } from './vfs.js';
export { FROZEN_ALLOWED } from './commands/index.js';
