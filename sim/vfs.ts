/**
 * The simulated guest's files, all in memory. Two kinds: ordinary files (a growable Buffer) and
 * virtual files, whose bytes are a pure function of (seed, offset) so a test can serve a 1 GB file
 * without holding it, and compute the expected digest with virtualFileBytes().
 */

export interface RegularFile {
  kind: 'regular';
  data: Buffer;
  /** bytes in use; data may be larger (growth slack) */
  size: number;
}

export interface VirtualFile {
  kind: 'virtual';
  size: number;
  seed: number;
}

export type FileNode = RegularFile | VirtualFile;

/** Largest virtual file that writing may turn into a real in-memory one. */
export const MATERIALIZE_MAX = 64 * 1024 * 1024;

function mix32(x: number): number {
  // murmur3 fmix32: cheap, stateless, good enough to make every 4-byte word look random
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

const WORDS_PER_SEGMENT = 0x1_0000_0000;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Word i of a virtual file: fmix32(low 32 bits of i XOR a key derived from seed and i's high bits). */
function fillWords(seed: number, firstWord: number, out: Uint32Array): void {
  let w = firstWord;
  let k = 0;
  while (k < out.length) {
    const hi = Math.floor(w / WORDS_PER_SEGMENT);
    const key = mix32((seed ^ Math.imul(hi + 1, 0x9e3779b9)) >>> 0);
    let lo = w - hi * WORDS_PER_SEGMENT;
    const stop = Math.min(out.length, k + (WORDS_PER_SEGMENT - lo));
    for (; k < stop; k++, lo++) {
      let x = (lo ^ key) >>> 0;
      x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
      x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
      out[k] = (x ^ (x >>> 16)) >>> 0;
    }
    w = firstWord + k;
  }
}

/**
 * The bytes of a virtual file with this seed at [offset, offset + length): byte o is byte (o % 4)
 * (little-endian) of word floor(o / 4). Exported so tests can compute expected content and hashes.
 */
export function virtualFileBytes(seed: number, offset: number, length: number): Buffer {
  if (length <= 0) return Buffer.alloc(0);
  const firstWord = Math.floor(offset / 4);
  const lastWord = Math.floor((offset + length - 1) / 4);
  const words = new Uint32Array(lastWord - firstWord + 1);
  fillWords(seed >>> 0, firstWord, words);
  if (!LITTLE_ENDIAN) {
    const b = Buffer.from(words.buffer);
    for (let i = 0; i < words.length; i++) b.writeUInt32LE(words[i], i * 4);
  }
  const skip = offset - firstWord * 4;
  return Buffer.from(words.buffer, skip, length);
}

export class VirtualFs {
  private readonly files = new Map<string, FileNode>();

  /** Directories that exist implicitly (parents of files) or were created explicitly. */
  private readonly dirs = new Set<string>(['/']);

  get(path: string): FileNode | undefined {
    return this.files.get(path);
  }

  has(path: string): boolean {
    return this.files.has(path);
  }

  isDir(path: string): boolean {
    if (this.dirs.has(path)) return true;
    const prefix = path.endsWith('/') ? path : `${path}/`;
    for (const p of this.files.keys()) if (p.startsWith(prefix)) return true;
    return false;
  }

  mkdir(path: string): void {
    this.dirs.add(path);
  }

  /** A parent directory exists when it was created, holds files, or is one of the guest's usual ones. */
  parentExists(path: string): boolean {
    const slash = path.lastIndexOf('/');
    if (slash <= 0) return true;
    return this.isDir(path.slice(0, slash));
  }

  setRegular(path: string, data: Buffer): RegularFile {
    const node: RegularFile = { kind: 'regular', data: Buffer.from(data), size: data.length };
    this.files.set(path, node);
    return node;
  }

  setVirtual(path: string, size: number, seed: number): VirtualFile {
    const node: VirtualFile = { kind: 'virtual', size, seed };
    this.files.set(path, node);
    return node;
  }

  delete(path: string): boolean {
    return this.files.delete(path);
  }

  paths(): string[] {
    return [...this.files.keys()];
  }

  /** Whole content of a file (materializes a virtual one; meant for small files and tests). */
  read(path: string): Buffer | undefined {
    const f = this.files.get(path);
    if (!f) return undefined;
    return readAt(f, 0, f.size);
  }
}

export function readAt(f: FileNode, pos: number, count: number): Buffer {
  const n = Math.max(0, Math.min(count, f.size - pos));
  if (n === 0) return Buffer.alloc(0);
  if (f.kind === 'virtual') return virtualFileBytes(f.seed, pos, n);
  return Buffer.from(f.data.subarray(pos, pos + n));
}

/** Turn a virtual file into a regular one so it can be written (bounded size). */
export function materialize(fs: VirtualFs, path: string, f: VirtualFile): RegularFile {
  return fs.setRegular(path, virtualFileBytes(f.seed, 0, f.size));
}

export function writeAt(f: RegularFile, pos: number, data: Buffer): void {
  const end = pos + data.length;
  if (end > f.data.length) {
    const grown = Buffer.alloc(Math.max(end, Math.min(f.data.length * 2, end + 64 * 1024 * 1024)));
    f.data.copy(grown, 0, 0, f.size);
    f.data = grown;
  }
  if (pos > f.size) f.data.fill(0, f.size, pos);
  data.copy(f.data, pos);
  if (end > f.size) f.size = end;
}

export function truncate(f: RegularFile): void {
  f.size = 0;
}
