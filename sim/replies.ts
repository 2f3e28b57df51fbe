/**
 * Turning a reply object into bytes on the agent's output stream, including the reply faults.
 * A reply is QEMU-style JSON + '\n', preceded by 0xFF right after guest-sync-delimited.
 */
import type { JsonObject } from '../src/qga/types.js';
import type { FaultSpec } from './faults.js';
import type { Outbox } from './outbox.js';
import { toQemuJson } from './qjson.js';
import type { QObj } from './qobject.js';

export interface ReplyPlan {
  rsp: JsonObject;
  fault?: FaultSpec;
  req?: QObj;
}

const DEFAULT_GARBAGE = '#<garbage from the simulator: not JSON>#';
const PAD_MARK = '@@sim-padding@@';

export function encodeReply(rsp: JsonObject, delimited: boolean): Buffer {
  return Buffer.from(`${delimited ? '\xff' : ''}${toQemuJson(rsp)}\n`, 'latin1');
}

/** A valid reply line of about `bytes` bytes: {"return": {"padding": "xxxx…"}} (+ id). */
function oversizeLine(bytes: number, rsp: JsonObject): Buffer {
  const [pre, post] = toQemuJson(rsp).split(`"${PAD_MARK}"`);
  const head = Buffer.from(`${pre}"`, 'latin1');
  const tail = Buffer.from(`"${post}\n`, 'latin1');
  const fill = Math.max(0, bytes - head.length - tail.length);
  return Buffer.concat([head, Buffer.alloc(fill, 0x78), tail]);
}

export function buildReply(
  plan: ReplyPlan,
  delimited: boolean,
  outbox: Outbox,
  withId: (o: JsonObject, req?: QObj) => JsonObject,
): void {
  const fault = plan.fault;
  switch (fault?.kind) {
    case 'no-reply':
      return;
    case 'garbage':
      outbox.push(Buffer.from(`${fault.bytes ?? DEFAULT_GARBAGE}\n`, 'latin1'));
      return;
    case 'oversize':
      outbox.push(oversizeLine(fault.bytes, withId({ return: { padding: PAD_MARK } }, plan.req)));
      return;
    default:
      break;
  }
  const line = encodeReply(plan.rsp, delimited);
  const half = Math.floor(line.length / 2);
  if (fault?.kind === 'partial-line') {
    outbox.push(line.subarray(0, half));
  } else if (fault?.kind === 'drop-mid-reply') {
    outbox.push(line.subarray(0, half));
    outbox.pushCut();
    outbox.push(line.subarray(half));
  } else {
    outbox.push(line);
  }
}
