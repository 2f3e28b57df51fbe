/**
 * qmp_dispatch() as qemu-ga runs it: validate the request object, find the command, refuse it if
 * disabled (by the admin, by the build, or by the frozen allow-list), check its arguments, run it,
 * and wrap the result — echoing the request's "id" when this agent version does.
 */
import type { JsonObject, JsonValue } from '../src/qga/types.js';
import { COMMANDS, FROZEN_ALLOWED, type AgentRuntime, type CommandDef, type CommandInfo } from './commands/index.js';
import { QgaError } from './errors.js';
import { qdictOrder } from './qjson.js';
import { qobjToJson, type QObj } from './qobject.js';
import { parseVersion, versionAtLeast, type VersionTraits } from './version.js';
import { visitStruct } from './visitor.js';

export interface DispatchResult {
  /** the reply object, or undefined when the command sends none (shutdown, suspend) */
  rsp: JsonObject | undefined;
}

export function errorBody(errorClass: string, desc: string): JsonObject {
  return { error: { class: errorClass, desc } };
}

export class Dispatcher {
  /** commands this build registers, in registration order */
  private readonly registered: CommandDef[];
  private readonly byName: Map<string, CommandDef>;

  constructor(
    version: string,
    private readonly traits: VersionTraits,
    /** disabled by the guest admin (qemu-ga -b) */
    private readonly blocked: ReadonlySet<string>,
    /** not built into this agent (e.g. guest-get-devices on Linux) */
    private readonly lacking: ReadonlySet<string>,
  ) {
    const v = parseVersion(version);
    this.registered = COMMANDS.filter((c) => {
      const [a, b, m] = parseVersion(c.since);
      if (!versionAtLeast(v, a, b, m)) return false;
      return !(traits.lackingCommandsAbsent && lacking.has(c.name));
    });
    this.byName = new Map(this.registered.map((c) => [c.name, c]));
  }

  private disabledReason(name: string, frozen: boolean): string | undefined | null {
    if (frozen && !FROZEN_ALLOWED.has(name)) return this.traits.frozenReason ?? null;
    if (this.blocked.has(name) || this.lacking.has(name)) return this.traits.blockedReason ?? null;
    return undefined; // enabled
  }

  commandTable(frozen: boolean): CommandInfo[] {
    return this.registered.map((c) => ({
      name: c.name,
      enabled: this.disabledReason(c.name, frozen) === undefined,
      successResponse: c.successResponse !== false,
    }));
  }

  /** The command a request names, if it is a well-formed object with a string "execute". */
  static commandName(req: QObj): string | undefined {
    if (req.t !== 'dict') return undefined;
    const e = req.v.get('execute');
    return e?.t === 'str' ? e.v : undefined;
  }

  /** Add the request id to a reply when this agent version echoes it. */
  withId(rsp: JsonObject, req: QObj): JsonObject {
    if (req.t !== 'dict' || this.traits.requestId !== 'echo') return rsp;
    const id = req.v.get('id');
    if (id !== undefined) rsp.id = qobjToJson(id);
    return rsp;
  }

  private checkObject(dict: Map<string, QObj>): string {
    const member = this.traits.newMemberWording ? 'QMP input member' : 'QMP input object member';
    let execute: string | undefined;
    for (const key of qdictOrder([...dict.keys()])) {
      const v = dict.get(key) as QObj;
      if (key === 'execute') {
        if (v.t !== 'str') throw new QgaError('GenericError', `${member} 'execute' must be a string`);
        execute = v.v;
      } else if (key === 'arguments') {
        if (v.t !== 'dict') throw new QgaError('GenericError', `${member} 'arguments' must be an object`);
      } else if (key !== 'id' || this.traits.requestId === 'reject') {
        throw new QgaError('GenericError', `${member} '${key}' is unexpected`);
      }
    }
    if (execute === undefined) throw new QgaError('GenericError', "QMP input lacks member 'execute'");
    return execute;
  }

  async dispatch(req: QObj, rt: AgentRuntime): Promise<DispatchResult> {
    if (req.t !== 'dict') {
      return { rsp: errorBody('GenericError', 'QMP input must be a JSON object') };
    }
    let result: JsonValue | undefined;
    let cmd: CommandDef;
    try {
      const name = this.checkObject(req.v);
      const found = this.byName.get(name);
      if (!found) throw new QgaError('CommandNotFound', `The command ${name} has not been found`);
      cmd = found;
      const reason = this.disabledReason(name, rt.state.frozen);
      if (reason !== undefined) {
        throw new QgaError('CommandNotFound', `Command ${name} has been disabled${reason === null ? '' : `: ${reason}`}`);
      }
      const argObj = req.v.get('arguments');
      const schema = typeof cmd.args === 'function' ? cmd.args(this.traits) : cmd.args ?? [];
      const args = visitStruct(schema, argObj?.t === 'dict' ? argObj.v : new Map());
      result = await cmd.run(rt, args);
    } catch (e) {
      if (e instanceof QgaError) return { rsp: this.withId(errorBody(e.errorClass, e.desc), req) };
      const msg = e instanceof Error ? e.message : String(e);
      return { rsp: this.withId(errorBody('GenericError', `simulator error: ${msg}`), req) };
    }
    if (cmd.successResponse === false) return { rsp: undefined };
    return { rsp: this.withId({ return: result ?? {} }, req) };
  }
}
