/**
 * A deliberately tiny agent on a unix socket for pool tests: it speaks just enough of the QGA
 * wire protocol (0xFF → parse-error line, guest-sync-delimited, guest-info, id echo, strictly
 * one command at a time) and offers `test-sleep {ms}` and `test-hang` to keep a channel busy.
 * Faults of the real agent are the simulator's job (src/sim); this exists so the pool can be
 * tested with many cheap agents.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readAgentLines, STRAY_FF_REPLY } from './agent-lines.js';

export interface FakeAgent {
  socketPath: string;
  /** connections accepted so far */
  readonly connections: number;
  /** clients connected right now */
  readonly connected: number;
  commands: string[];
  close(): Promise<void>;
}

export async function startFakeAgent(opts: { dir?: string; name?: string; version?: string } = {}): Promise<FakeAgent> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'fake-qga-')));
  const socketPath = path.join(dir, `${opts.name ?? 'agent'}.sock`);
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state = { connections: 0, commands: [] as string[] };

  const server = net.createServer((sock) => {
    state.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const send = (s: string | Buffer): void => {
      if (!sock.destroyed) sock.write(s);
    };
    const handle = async (line: string): Promise<void> => {
      let req: { execute?: string; arguments?: { id?: number; ms?: number }; id?: unknown };
      try {
        req = JSON.parse(line) as typeof req;
      } catch {
        send('{"error": {"class": "GenericError", "desc": "JSON parse error"}}\n');
        return;
      }
      const cmd = req.execute ?? '';
      state.commands.push(cmd);
      const id = req.id === undefined ? '' : `, "id": ${JSON.stringify(req.id)}`;
      const reply = (ret: string): void => send(`{"return": ${ret}${id}}\n`);
      switch (cmd) {
        case 'guest-sync-delimited':
          send(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${req.arguments?.id ?? 0}}\n`)]));
          return;
        case 'guest-info':
          return reply(`{"version": "${opts.version ?? '10.0.0'}", "supported_commands": [{"enabled": true, "name": "guest-ping", "success-response": true}]}`);
        case 'guest-ping':
          return reply('{}');
        case 'test-sleep':
          await new Promise<void>((r) => {
            const t = setTimeout(() => {
              timers.delete(t);
              r();
            }, req.arguments?.ms ?? 0);
            timers.add(t);
          });
          return reply('{}');
        case 'test-hang':
          await new Promise<void>((r) => sock.once('close', r));
          return;
        default:
          send(`{"error": {"class": "CommandNotFound", "desc": "The command ${cmd} has not been found"}${id}}\n`);
      }
    };
    readAgentLines(sock, handle, () => send(STRAY_FF_REPLY));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  return {
    socketPath,
    get connections() {
      return state.connections;
    },
    get connected() {
      return sockets.size;
    },
    commands: state.commands,
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      if (ownDir) await rm(dir, { recursive: true, force: true });
    },
  };
}
