/**
 * A scripted agent on a unix socket for hostile-reply tests: it speaks the handshake like qemu-ga
 * 10 (0xFF resets its parser, guest-sync-delimited answers after a 0xFF, guest-info lists
 * `offered`), and answers every other command from a per-command script (then `{}`). A script
 * writes whatever it likes, as slowly as it likes (`write` resolves when the socket drained).
 */
import net from 'node:net';
import path from 'node:path';
import { readAgentLines, STRAY_FF_REPLY } from './agent-lines.js';

export type Script = (write: (data: string | Buffer) => Promise<void>, id: string) => Promise<void>;

export interface ScriptedAgent {
  socketPath: string;
  /** every command received, sync and info included */
  commands: string[];
  /** the replies of the next calls of a command, in order; afterwards it answers {} */
  script(command: string, s: Script): void;
  close(): Promise<void>;
}

export async function startScriptedAgent(dir: string, name: string, offered: readonly string[]): Promise<ScriptedAgent> {
  const socketPath = path.join(dir, `${name}.sock`);
  const scripts = new Map<string, Script[]>();
  const sockets = new Set<net.Socket>();
  const commands: string[] = [];
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const write = (data: string | Buffer): Promise<void> =>
      new Promise((resolve) => {
        if (sock.destroyed) return resolve();
        if (sock.write(data)) resolve();
        else {
          // both listeners go when either fires (a 'close' listener left per drained write piled up)
          const done = (): void => {
            sock.off('drain', done).off('close', done);
            resolve();
          };
          sock.once('drain', done).once('close', done);
        }
      });
    const handle = async (line: string): Promise<void> => {
      const req = JSON.parse(line) as { execute: string; arguments?: { id?: number }; id?: number };
      commands.push(req.execute);
      const id = req.id === undefined ? '' : `, "id": ${req.id}`;
      if (req.execute === 'guest-sync-delimited') return write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${req.arguments?.id}}\n`)]));
      if (req.execute === 'guest-info') {
        const list = offered.map((c) => `{"enabled": true, "name": "${c}", "success-response": true}`).join(', ');
        return write(`{"return": {"version": "10.0.0", "supported_commands": [${list}]}${id}}\n`);
      }
      const s = scripts.get(req.execute)?.shift();
      if (!s) return write(`{"return": {}${id}}\n`);
      if (sock.destroyed) return;
      return s(write, id);
    };
    readAgentLines(sock, (line) => handle(line).catch(() => undefined), () => write(STRAY_FF_REPLY));
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    commands,
    script(command, s) {
      scripts.set(command, [...(scripts.get(command) ?? []), s]);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** mulberry32: small, seedable, good enough to drive a test */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
