/**
 * guest-file-*: handles are global to the agent process, numbered from 1000, never reused and
 * never timed out (qga/commands-posix.c). Errors carry QEMU's wording and strerror texts.
 */
import { EBADF, EISDIR, ENOENT, EROFS, generic } from '../errors.js';
import { MATERIALIZE_MAX, materialize, readAt, truncate, writeAt, type FileNode } from '../vfs.js';
import { enumOf, opt, req, type TypeSpec } from '../visitor.js';
import type { AgentRuntime, CommandDef, OpenFile } from './types.js';

/** Maximum guest-file-read count: 48 MiB. */
export const FILE_READ_MAX = 48 * 1024 * 1024;
const READ_DEFAULT = 4096;

interface ModeFlags {
  read: boolean;
  write: boolean;
  create: boolean;
  trunc: boolean;
  append: boolean;
}

const MODES: [string[], ModeFlags][] = [
  [['r', 'rb'], { read: true, write: false, create: false, trunc: false, append: false }],
  [['w', 'wb'], { read: false, write: true, create: true, trunc: true, append: false }],
  [['a', 'ab'], { read: false, write: true, create: true, trunc: false, append: true }],
  [['r+', 'rb+', 'r+b'], { read: true, write: true, create: false, trunc: false, append: false }],
  [['w+', 'wb+', 'w+b'], { read: true, write: true, create: true, trunc: true, append: false }],
  [['a+', 'ab+', 'a+b'], { read: true, write: true, create: true, trunc: false, append: true }],
];

const WHENCE: TypeSpec = { kind: 'alternate', name: 'GuestFileWhence', int: true, enum: enumOf('QGASeek', ['set', 'cur', 'end']) };

const BASE64_CHARS = /^[A-Za-z0-9+/=\n]*$/;

/** qbase64_decode(): a strict character check, then glib's lenient decoder. */
export function decodeBase64(text: string): Buffer {
  if (!BASE64_CHARS.test(text)) throw generic('Base64 data contains invalid characters');
  return Buffer.from(text, 'base64');
}

function findHandle(rt: AgentRuntime, handle: unknown): OpenFile {
  const h = rt.proc.handles.get(Number(handle));
  if (!h) throw generic(`handle '${String(handle)}' has not been found`);
  return h;
}

function openFile(rt: AgentRuntime, path: string, mode: string): number {
  const flags = MODES.find(([forms]) => forms.includes(mode))?.[1];
  if (!flags) throw generic(`invalid file open mode '${mode}'`);
  const fail = (why: string): never => {
    throw generic(`failed to open file '${path}' (mode: '${mode}'): ${why}`);
  };
  const fs = rt.state.files;
  let node: FileNode | undefined = fs.get(path);
  if (!node && fs.isDir(path)) fail(EISDIR);
  if (!node) {
    if (!flags.create || !fs.parentExists(path)) fail(ENOENT);
    node = fs.setRegular(path, Buffer.alloc(0));
  } else if (flags.write && node.kind === 'virtual') {
    if (flags.trunc) node = fs.setRegular(path, Buffer.alloc(0));
    else if (node.size <= MATERIALIZE_MAX) node = materialize(fs, path, node);
    else fail(EROFS);
  } else if (flags.trunc && node.kind === 'regular') {
    truncate(node);
  }
  const handle = rt.proc.nextHandle++;
  rt.proc.handles.set(handle, { path, node, pos: 0, readable: flags.read, writable: flags.write, append: flags.append });
  return handle;
}

export const fileCommands: CommandDef[] = [
  {
    name: 'guest-file-open',
    since: '0.15.0',
    args: [req('path', 'str'), opt('mode', 'str')],
    run: (rt, args) => openFile(rt, args.path as string, (args.mode as string | undefined) ?? 'r'),
  },
  {
    name: 'guest-file-close',
    since: '0.15.0',
    args: [req('handle', 'int')],
    run(rt, args) {
      findHandle(rt, args.handle);
      rt.proc.handles.delete(Number(args.handle));
      return undefined;
    },
  },
  {
    name: 'guest-file-read',
    since: '0.15.0',
    args: [req('handle', 'int'), opt('count', 'int')],
    run(rt, args) {
      const h = findHandle(rt, args.handle);
      const count = args.count === undefined ? READ_DEFAULT : Number(args.count);
      if (count < 0 || count > FILE_READ_MAX) throw generic(`value '${String(args.count)}' is invalid for argument count`);
      if (!h.readable) throw generic(`failed to read file: ${EBADF}`);
      const data = readAt(h.node, h.pos, count);
      h.pos += data.length;
      return { count: data.length, 'buf-b64': data.toString('base64'), eof: count > 0 && data.length < count };
    },
  },
  {
    name: 'guest-file-write',
    since: '0.15.0',
    args: [req('handle', 'int'), req('buf-b64', 'str'), opt('count', 'int')],
    run(rt, args) {
      const h = findHandle(rt, args.handle);
      const buf = decodeBase64(args['buf-b64'] as string);
      const count = args.count === undefined ? buf.length : Number(args.count);
      if (count < 0 || count > buf.length) throw generic(`value '${String(args.count)}' is invalid for argument count`);
      if (!h.writable || h.node.kind !== 'regular') throw generic(`failed to write to file: ${EBADF}`);
      if (h.append) h.pos = h.node.size;
      writeAt(h.node, h.pos, buf.subarray(0, count));
      h.pos += count;
      return { count, eof: false };
    },
  },
  {
    name: 'guest-file-seek',
    since: '0.15.0',
    args: [req('handle', 'int'), req('offset', 'int'), req('whence', WHENCE)],
    run(rt, args) {
      const h = findHandle(rt, args.handle);
      const names: Record<string, number> = { set: 0, cur: 1, end: 2 };
      const code = typeof args.whence === 'string' ? names[args.whence] : Number(args.whence);
      const offset = Number(args.offset);
      let pos: number;
      if (code === 0) pos = offset;
      else if (code === 1) pos = h.pos + offset;
      else if (code === 2) pos = h.node.size + offset;
      else throw generic(`invalid whence code ${String(args.whence)}`);
      if (pos < 0) throw generic('failed to seek file: Invalid argument');
      h.pos = pos;
      return { position: pos, eof: false };
    },
  },
  {
    name: 'guest-file-flush',
    since: '0.15.0',
    args: [req('handle', 'int')],
    run(rt, args) {
      findHandle(rt, args.handle);
      return undefined;
    },
  },
];
