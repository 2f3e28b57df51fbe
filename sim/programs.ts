/**
 * The programs guest-exec can "run". Nothing touches the host: each program is a small function
 * over in-memory stdin/stdout/stderr and the virtual filesystem, returning how it ended and how
 * long (wall time) the simulated process lives.
 */
import type { VirtualFs } from './vfs.js';
import { readAt, virtualFileBytes } from './vfs.js';

/** guest-exec captures at most 16 MiB per stream (GUEST_EXEC_MAX_OUTPUT). */
export const EXEC_OUTPUT_MAX = 16 * 1024 * 1024;

/** A stream capture that keeps at most `cap` bytes and remembers whether more was written. */
export class CappedSink {
  private readonly chunks: Buffer[] = [];
  length = 0;
  truncated = false;

  constructor(
    readonly cap: number,
    readonly keep = true,
  ) {}

  room(): number {
    return this.cap - this.length;
  }

  write(data: Buffer | string): void {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    this.take(buf.length, (n) => buf.subarray(0, n));
  }

  /** Write `total` bytes produced on demand; only what fits under the cap is generated. */
  take(total: number, produce: (n: number) => Buffer): void {
    if (!this.keep || total <= 0) return;
    const n = Math.min(total, this.room());
    if (n > 0) {
      this.chunks.push(Buffer.from(produce(n)));
      this.length += n;
    }
    if (total > n) this.truncated = true;
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

export interface ProgramIO {
  stdin: Buffer;
  out: CappedSink;
  err: CappedSink;
  env: string[] | undefined;
  fs: VirtualFs;
}

export interface ProgramEnd {
  exitcode?: number;
  signal?: number;
  /** simulated run time in seconds (before timeScale) */
  seconds?: number;
}

type Program = (args: string[], io: ProgramIO) => ProgramEnd;

const DEFAULT_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/', 'LANG=C.UTF-8'];

function catFile(name: string, io: ProgramIO): boolean {
  if (name === '-') {
    io.out.write(io.stdin);
    return true;
  }
  const f = io.fs.get(name);
  if (!f) {
    io.err.write(`cat: ${name}: No such file or directory\n`);
    return false;
  }
  io.out.take(f.size, (n) => readAt(f, 0, n));
  return true;
}

function headBytes(args: string[], io: ProgramIO): ProgramEnd {
  const i = args.indexOf('-c');
  const count = i >= 0 ? Number(args[i + 1]) : NaN;
  const file = args.filter((_, k) => k !== i && k !== i + 1)[0] ?? '-';
  if (!Number.isFinite(count) || count < 0) {
    io.err.write(`head: invalid number of bytes: '${args[i + 1] ?? ''}'\n`);
    return { exitcode: 1 };
  }
  if (file === '/dev/zero') io.out.take(count, (n) => Buffer.alloc(n));
  else if (file === '/dev/urandom') io.out.take(count, (n) => virtualFileBytes(0x5eed, 0, n));
  else if (file === '-') io.out.write(io.stdin.subarray(0, count));
  else {
    const f = io.fs.get(file);
    if (!f) {
      io.err.write(`head: cannot open '${file}' for reading: No such file or directory\n`);
      return { exitcode: 1 };
    }
    io.out.take(Math.min(count, f.size), (n) => readAt(f, 0, n));
  }
  return { exitcode: 0 };
}

/** Split a tiny shell line into words, honouring '...' and "..." quoting. */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|"([^"]*)"|(\S+)/g;
  for (const m of line.matchAll(re)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

/** `sh -c SCRIPT` for a handful of builtins: exit, echo (>&2), true, false, sleep, kill -N $$, cat, env. */
function shell(args: string[], io: ProgramIO): ProgramEnd {
  if (args[0] !== '-c' || args[1] === undefined) {
    io.err.write('sh: only -c SCRIPT is simulated\n');
    return { exitcode: 2 };
  }
  let status = 0;
  let seconds = 0;
  for (const line of args[1].split(/[;\n]/)) {
    const w = words(line.trim());
    if (w.length === 0) continue;
    const toErr = w[w.length - 1] === '>&2' || w[w.length - 1] === '1>&2';
    if (toErr) w.pop();
    const sink = toErr ? io.err : io.out;
    switch (w[0]) {
      case 'exit':
        return { exitcode: Number(w[1] ?? status) & 0xff, seconds };
      case 'echo':
        sink.write(`${w.slice(1).join(' ')}\n`);
        status = 0;
        break;
      case 'true':
      case ':':
        status = 0;
        break;
      case 'false':
        status = 1;
        break;
      case 'sleep':
        seconds += Number(w[1] ?? 0) || 0;
        status = 0;
        break;
      case 'kill':
        if (w[2] === '$$') return { signal: Math.abs(Number(w[1])) || 15, seconds };
        status = 1;
        break;
      case 'cat':
        status = w.slice(1).every((f) => catFile(f, io)) ? 0 : 1;
        if (w.length === 1) io.out.write(io.stdin);
        break;
      case 'env':
        sink.write((io.env ?? DEFAULT_ENV).map((e) => `${e}\n`).join(''));
        status = 0;
        break;
      default:
        io.err.write(`sh: 1: ${w[0]}: not found\n`);
        status = 127;
    }
  }
  return { exitcode: status, seconds };
}

const PROGRAMS: Record<string, Program> = {
  echo(args, io) {
    const noNewline = args[0] === '-n';
    io.out.write(`${(noNewline ? args.slice(1) : args).join(' ')}${noNewline ? '' : '\n'}`);
    return { exitcode: 0 };
  },
  cat(args, io) {
    if (args.length === 0) {
      io.out.write(io.stdin);
      return { exitcode: 0 };
    }
    return { exitcode: args.map((a) => catFile(a, io)).every(Boolean) ? 0 : 1 };
  },
  sh: shell,
  bash: shell,
  true: () => ({ exitcode: 0 }),
  false: () => ({ exitcode: 1 }),
  sleep(args, io) {
    const s = Number(args[0]);
    if (!Number.isFinite(s) || s < 0) {
      io.err.write(`sleep: invalid time interval '${args[0] ?? ''}'\n`);
      return { exitcode: 1 };
    }
    return { exitcode: 0, seconds: s };
  },
  env(args, io) {
    io.out.write((io.env ?? DEFAULT_ENV).map((e) => `${e}\n`).join(''));
    return { exitcode: 0 };
  },
  binary(args, io) {
    io.out.write(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    return { exitcode: 0 };
  },
  head: headBytes,
};

const DIRS = ['/bin/', '/usr/bin/', '/sbin/', '/usr/sbin/', '/usr/local/bin/'];

/** Resolve a guest-exec path like g_spawn with G_SPAWN_SEARCH_PATH would; undefined when absent. */
export function findProgram(path: string): Program | undefined {
  if (!path.includes('/')) return Object.hasOwn(PROGRAMS, path) ? PROGRAMS[path] : undefined;
  const dir = DIRS.find((d) => path.startsWith(d));
  if (!dir) return undefined;
  const name = path.slice(dir.length);
  return Object.hasOwn(PROGRAMS, name) ? PROGRAMS[name] : undefined;
}
