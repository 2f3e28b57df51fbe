/**
 * Waiting for a VM instead of polling it (GET /v1/vms/{vm}/wait):
 *   - for the agent: a sync handshake (AgentService.probe) is tried at once and again every
 *     RETRY_MS while it fails (a connect to a missing socket fails at once; a socket whose agent is
 *     not up yet holds the sync until the agent answers it, within what is left of the wait);
 *   - for an IP: guest-network-get-interfaces at most every POLL_MS until an address passes the
 *     filter (family, scope, interface-name exclude globs).
 * Both end at the deadline with what was last seen, and at once when the caller goes away. No
 * agent call is started with less than MIN_CALL_MS of the wait left. A wait of 0 is one check.
 */
import { performance } from 'node:perf_hooks';
import { errors, isGatewayError } from '../errors.js';
import { abortReason } from '../util/abort.js';
import { globMatcher } from '../util/glob.js';
import type { JsonValue } from '../qga/types.js';
import { MIN_CALL_MS } from './probe-release.js';
import type { AgentService, FleetState } from './service.js';

/** retry of a failed agent handshake while waiting */
const RETRY_MS = 250;
/** interface polls while waiting for an address (the contract: within 1 s of it appearing) */
export const POLL_MS = 1000;

export interface IpFilter {
  family?: 'ipv4' | 'ipv6';
  /** global: no loopback, link-local or unspecified addresses */
  scope?: 'global';
  /** interface-name globs to skip (`docker*`, `veth*`) */
  exclude?: readonly string[];
}

export interface IpAddressSeen {
  interface: string;
  'ip-address': string;
  'ip-address-type': string;
  prefix?: number;
}

export type WaitResult<T> = { done: true; value: T } | { done: false; last: T };

export interface AgentWaitValue {
  agent: FleetState['agent'];
}

export interface IpWaitValue {
  agent: FleetState['agent'];
  /** every address that passes the filter (done), or every address seen last (timed out) */
  addresses: IpAddressSeen[];
  /** why the last interface read failed, if it did */
  lastError?: string;
}

/**
 * `timeoutMs` 0 is one immediate check: a single attempt bounded by `onceMs` (the route gives
 * agent.timeouts.fast), answered done or not, with no retry.
 */
export async function waitForAgent(agent: AgentService, vm: string, timeoutMs: number, signal: AbortSignal, onceMs = 0): Promise<WaitResult<AgentWaitValue>> {
  const once = timeoutMs <= 0;
  const deadline = performance.now() + (once ? Math.max(onceMs, MIN_CALL_MS) : timeoutMs);
  for (;;) {
    const left = deadline - performance.now();
    // no sync started with less than MIN_CALL_MS left: it could only time out (and mark the VM down)
    if (left < MIN_CALL_MS) return { done: false, last: { agent: agent.fleetState(vm).agent } };
    // deregistered (or gone from its discovery folder) while waited for
    if (!agent.registry.resolve(vm)) throw errors.vmNotFound(vm);
    const ok = await agent.probe(vm, { timeoutMs: Math.ceil(left), signal });
    if (signal.aborted) throw abortReason(signal);
    if (ok) return { done: true, value: { agent: agent.fleetState(vm).agent } };
    if (once) return { done: false, last: { agent: agent.fleetState(vm).agent } };
    await sleep(Math.min(RETRY_MS, deadline - performance.now()), signal);
  }
}

/** `timeoutMs` 0: one interface read (bringing a down agent back first), bounded by `onceMs`. */
export async function waitForIp(agent: AgentService, vm: string, filter: IpFilter, timeoutMs: number, signal: AbortSignal, onceMs = 0): Promise<WaitResult<IpWaitValue>> {
  const once = timeoutMs <= 0;
  const deadline = performance.now() + (once ? Math.max(onceMs, MIN_CALL_MS) : timeoutMs);
  const pass = addressFilter(filter);
  let seen: IpAddressSeen[] = [];
  let lastError: string | undefined;
  const timedOut = (): WaitResult<IpWaitValue> => ({ done: false, last: { agent: agent.fleetState(vm).agent, addresses: seen, ...(lastError ? { lastError } : {}) } });
  for (;;) {
    const started = performance.now();
    // no agent call started with less than MIN_CALL_MS left (its timeout would be noise)
    if (deadline - started < MIN_CALL_MS) return timedOut();
    // whether a failure now is the wait's own deadline cutting a call short (not news when an error is known)
    let cut = false;
    const budget = (): number => {
      const left = Math.ceil(deadline - performance.now());
      if (left < MIN_CALL_MS) throw new DeadlineReached();
      cut = left < agent.pool.defaultTimeoutMs('guest-network-get-interfaces');
      return left;
    };
    try {
      if (agent.states.isDown(vm)) {
        // a down agent fails calls fast: bring it back first (the probe bypasses that)
        if (!(await agent.probe(vm, { timeoutMs: budget(), signal }))) {
          cut = false;
          throw new Error(agent.fleetState(vm).agent.lastError ?? 'the agent is down');
        }
      }
      const reply = await agent.call(vm, 'guest-network-get-interfaces', undefined, { signal, timeoutMs: budget() });
      seen = addressesOf(reply);
      lastError = undefined;
      const hits = seen.filter(pass);
      if (hits.length > 0) return { done: true, value: { agent: agent.fleetState(vm).agent, addresses: hits } };
    } catch (err) {
      if (signal.aborted) throw abortReason(signal);
      if (err instanceof DeadlineReached) return timedOut();
      // the agent not there yet, or busy: keep waiting; a VM that vanished ends the wait
      if (isGatewayError(err) && (err.code === 'VM_NOT_FOUND' || err.code === 'COMMAND_DISABLED' || err.code === 'COMMAND_NOT_SUPPORTED')) throw err;
      // a timeout of a call the deadline cut short says nothing new: keep the last real error
      if (!(cut && lastError !== undefined && isGatewayError(err) && err.code === 'AGENT_TIMEOUT')) lastError = err instanceof Error ? err.message : String(err);
    }
    if (once) return timedOut();
    await sleep(Math.min(POLL_MS - (performance.now() - started), deadline - performance.now()), signal);
  }
}

/** Less than MIN_CALL_MS of the wait is left: no call is started. */
class DeadlineReached extends Error {}

/** The addresses in a guest-network-get-interfaces reply, with their interface names. */
export function addressesOf(reply: JsonValue): IpAddressSeen[] {
  const out: IpAddressSeen[] = [];
  if (!Array.isArray(reply)) return out;
  for (const iface of reply) {
    if (!iface || typeof iface !== 'object' || Array.isArray(iface)) continue;
    const name = typeof iface.name === 'string' ? iface.name : '';
    const addrs = iface['ip-addresses'];
    if (!Array.isArray(addrs)) continue;
    for (const a of addrs) {
      if (!a || typeof a !== 'object' || Array.isArray(a)) continue;
      const ip = a['ip-address'];
      const type = a['ip-address-type'];
      if (typeof ip !== 'string' || typeof type !== 'string') continue;
      out.push({ interface: name, 'ip-address': ip, 'ip-address-type': type, ...(typeof a.prefix === 'number' ? { prefix: a.prefix } : {}) });
    }
  }
  return out;
}

export function addressFilter(f: IpFilter): (a: IpAddressSeen) => boolean {
  const excluded = f.exclude && f.exclude.length > 0 ? globMatcher(f.exclude) : () => false;
  return (a) => {
    if (excluded(a.interface)) return false;
    if (f.family && a['ip-address-type'] !== f.family) return false;
    // a loopback or unspecified address never passes: every running guest has one, so waiting for
    // it would not be waiting for the network
    if (hostOnly(a['ip-address'], a['ip-address-type'])) return false;
    return f.scope !== 'global' || !linkLocal(a['ip-address'], a['ip-address-type']);
  };
}

/** loopback or unspecified */
function hostOnly(ip: string, type: string): boolean {
  if (type === 'ipv4') return ip.startsWith('127.') || ip === '0.0.0.0';
  const lower = ip.toLowerCase();
  return lower === '::1' || lower === '::' || lower.startsWith('::ffff:127.');
}

function linkLocal(ip: string, type: string): boolean {
  return type === 'ipv4' ? ip.startsWith('169.254.') : /^fe[89ab][0-9a-f]:/.test(ip.toLowerCase());
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
