/**
 * The host side of a VM's agent channel, like a QEMU chardev socket with server=on: it accepts
 * any number of connections but serves ONE at a time. Later clients wait with nothing read from
 * them (pauseOnConnect) until the current one leaves; then their buffered bytes are processed.
 */
import { rmSync } from 'node:fs';
import net from 'node:net';
import type { Endpoint } from '../src/qga/types.js';

export interface ListenerEvents {
  /** bytes from the client being served */
  input(chunk: Buffer): void;
  /** a client became the served one */
  served(socket: net.Socket): void;
  /** the served client left (EOF, error, or dropped by us) */
  left(socket: net.Socket): void;
}

export class ChannelListener {
  private server: net.Server | undefined;
  private active: net.Socket | undefined;
  private readonly waiting: net.Socket[] = [];
  private readonly sockets = new Set<net.Socket>();
  private port = 0;
  connections = 0;

  constructor(
    private readonly kind: 'unix' | 'tcp',
    private readonly path: string,
    private readonly events: ListenerEvents,
  ) {}

  get endpoint(): Endpoint {
    return this.kind === 'unix' ? { type: 'unix', path: this.path } : { type: 'tcp', host: '127.0.0.1', port: this.port };
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  get connected(): boolean {
    return this.active !== undefined;
  }

  get waitingClients(): number {
    return this.waiting.length;
  }

  async listen(): Promise<void> {
    if (this.server) return;
    const server = net.createServer({ pauseOnConnect: true }, (s) => this.onConnection(s));
    if (this.kind === 'unix') rmSync(this.path, { force: true }); // a stale socket file from a killed run
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (this.kind === 'unix') server.listen(this.path, () => resolve());
      else server.listen({ host: '127.0.0.1', port: this.port }, () => resolve());
    });
    server.on('error', () => undefined);
    if (this.kind === 'tcp') this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  /** Stop listening and drop every client (served and waiting). */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of [...this.sockets]) s.destroy();
    this.waiting.length = 0;
    if (this.active) this.leave(this.active);
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Close the served connection after flushing what was written to it (FIN, not RST). */
  endActive(): void {
    const s = this.active;
    if (!s) return;
    this.leave(s);
    s.end();
    s.once('finish', () => s.destroy());
  }

  /** Drop the served connection at once. */
  dropActive(): void {
    const s = this.active;
    if (!s) return;
    this.leave(s);
    s.destroy();
  }

  pauseInput(): void {
    this.active?.pause();
  }

  resumeInput(): void {
    this.active?.resume();
  }

  private onConnection(s: net.Socket): void {
    if (!this.server) {
      s.destroy();
      return;
    }
    this.connections++;
    this.sockets.add(s);
    s.on('error', () => undefined); // a reset peer; 'close' follows
    s.on('close', () => {
      this.sockets.delete(s);
      const w = this.waiting.indexOf(s);
      if (w >= 0) this.waiting.splice(w, 1);
      if (this.active === s) this.leave(s);
    });
    if (this.active) this.waiting.push(s);
    else this.serve(s);
  }

  private serve(s: net.Socket): void {
    this.active = s;
    s.on('data', (chunk: Buffer) => {
      if (this.active === s) this.events.input(chunk);
    });
    // QEMU closes its side as soon as it reads EOF; unsent output stays with the agent
    s.on('end', () => {
      if (this.active === s) {
        this.leave(s);
        s.destroy();
      }
    });
    this.events.served(s);
    s.resume();
  }

  private leave(s: net.Socket): void {
    if (this.active !== s) return;
    this.active = undefined;
    this.events.left(s);
    while (this.waiting.length > 0 && !this.active) {
      const next = this.waiting.shift() as net.Socket;
      if (!next.destroyed) this.serve(next);
    }
  }
}
