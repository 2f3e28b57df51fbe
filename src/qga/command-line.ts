/**
 * The text of the command lines AgentConnection writes. A line whose arguments hold a Base64Text
 * (guest-file-write's buf-b64, ~1.4 MB per 1 MiB chunk) is built as one Buffer: the JSON around it
 * is written as utf8, the base64 bytes are copied once as they are (the alphabet needs no escaping),
 * so the chunk is not stringified, concatenated, flattened and utf8-encoded again. The bytes are
 * exactly those of the text line (test/unit/command-line.test.ts). Base64Text, the argument type
 * that takes this path, is defined at the end of this file.
 */
import { stringifyJson } from '../util/json.js';
import type { JsonObject } from './types.js';

/** `{"execute":"<command>"` per command name, so a line is not re-serialized from an object each time (bounded) */
const EXECUTE_HEAD = new Map<string, string>();

function executeHead(command: string): string {
  let head = EXECUTE_HEAD.get(command);
  if (head === undefined) {
    head = `{"execute":${JSON.stringify(command)}`;
    if (EXECUTE_HEAD.size < 1024) EXECUTE_HEAD.set(command, head);
  }
  return head;
}

/** `{"execute":…,"arguments":…,"id":…}\n`: the same text stringifyJson made of that object, built directly */
export function commandLine(command: string, args: JsonObject | undefined, id: number | undefined): string {
  const head = executeHead(command);
  const a = args === undefined ? '' : `,"arguments":${stringifyJson(args)}`;
  return id === undefined ? `${head}${a}}\n` : `${head}${a},"id":${id}}\n`;
}

export function syncLine(syncId: number): string {
  return `{"execute":"guest-sync-delimited","arguments":{"id":${syncId}}}\n`;
}

/**
 * commandLine + `tail`, as a Buffer when a top-level argument is a Base64Text (its bytes copied
 * once), else as the text. The Buffer path is taken only when every other argument serializes the
 * same member by member (no toJSON, nothing skipped); otherwise the text path, where a Base64Text
 * is its string through toJSON.
 */
export function commandData(command: string, args: JsonObject | undefined, id: number | undefined, tail = ''): string | Buffer {
  if (args !== undefined && hasBase64(args)) {
    const parts = memberParts(executeHead(command), args, id, tail);
    if (parts !== undefined) return join(parts);
  }
  return commandLine(command, args, id) + tail;
}

function hasBase64(args: JsonObject): boolean {
  for (const k in args) if ((args[k] as unknown) instanceof Base64Text) return true;
  return false;
}

/** The line in pieces: text around each Base64Text; undefined if a member may not serialize on its own alike. */
function memberParts(head: string, args: JsonObject, id: number | undefined, tail: string): Array<string | Base64Text> | undefined {
  const proto: unknown = Object.getPrototypeOf(args);
  if ((proto !== Object.prototype && proto !== null) || Object.prototype.hasOwnProperty.call(args, 'toJSON')) return undefined;
  const parts: Array<string | Base64Text> = [];
  let text = `${head},"arguments":{`;
  let sep = '';
  for (const k of Object.keys(args)) {
    const v: unknown = args[k];
    if (v instanceof Base64Text) {
      parts.push(`${text}${sep}${JSON.stringify(k)}:"`, v);
      text = '"';
    } else if (plainMember(v)) {
      text += `${sep}${JSON.stringify(k)}:${stringifyJson(v)}`;
    } else {
      return undefined;
    }
    sep = ',';
  }
  parts.push(`${text}${id === undefined ? '}}\n' : `},"id":${id}}\n`}${tail}`);
  return parts;
}

/** a value JSON.stringify writes as stringifyJson does on its own: never skipped, no toJSON of its own */
function plainMember(v: unknown): boolean {
  switch (typeof v) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
      return true;
    case 'object':
      return v === null || !('toJSON' in v);
    default:
      return false;
  }
}

function join(parts: Array<string | Base64Text>): Buffer {
  let size = 0;
  for (const p of parts) size += typeof p === 'string' ? Buffer.byteLength(p) : p.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of parts) at += typeof p === 'string' ? out.write(p, at, 'utf8') : out.write(p.text, at, 'latin1');
  return out;
}

/**
 * Base64 text made by Node's encoder from bytes, for an agent command's argument (guest-file-write's
 * buf-b64). Every character is one of [A-Za-z0-9+/=], so the text needs no JSON escaping: the
 * command writer copies its bytes into the line as they are, instead of stringify → concatenate →
 * flatten → utf8-encode (about three copies of a chunk's base64 fewer per write). Anything else
 * that serializes it (JSON.stringify, stringifyJson) sees the plain string through toJSON;
 * valueOf/toString give it too. Only `encode` makes one, so the alphabet is guaranteed.
 */
export class Base64Text {
  private constructor(readonly text: string) {}

  /** bytes[start, end) in base64 */
  static encode(bytes: Buffer, start = 0, end = bytes.length): Base64Text {
    return new Base64Text(bytes.toString('base64', start, end));
  }

  get length(): number {
    return this.text.length;
  }

  toJSON(): string {
    return this.text;
  }

  valueOf(): string {
    return this.text;
  }

  toString(): string {
    return this.text;
  }
}
