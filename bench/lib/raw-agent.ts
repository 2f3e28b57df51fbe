/**
 * The minimal client a Channel is compared with: one socket, 0xFF + guest-sync-delimited once,
 * then write a request line and read a reply line, nothing else (no ids, no timeouts, no queue,
 * no lossless number decoding).
 */
import net from 'node:net';
import type { Endpoint } from '../../src/qga/types.js';

export class RawAgent {
  private parts: Buffer[] = [];
  private waiter: ((line: string) => void) | undefined;
  private synced = false;

  private constructor(private readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => undefined);
  }

  static async connect(ep: Endpoint): Promise<RawAgent> {
    const sock = ep.type === 'unix' ? net.connect(ep.path) : net.connect(ep.port, ep.host);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const a = new RawAgent(sock);
    const id = 1 + Math.floor(Math.random() * 1e9);
    const line = a.nextLine();
    sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${id}}}\n`)]));
    const reply = JSON.parse(await line) as { return?: number };
    if (reply.return !== id) throw new Error(`raw sync: unexpected reply ${JSON.stringify(reply)}`);
    return a;
  }

  private nextLine(): Promise<string> {
    return new Promise<string>((r) => (this.waiter = r));
  }

  private onData(d: Buffer): void {
    let start = 0;
    if (!this.synced) {
      const s = d.indexOf(0xff);
      if (s < 0) return; // anything before the agent's 0xFF is stale
      this.synced = true;
      start = s + 1;
    }
    let nl: number;
    while ((nl = d.indexOf(0x0a, start)) >= 0) {
      this.parts.push(d.subarray(start, nl));
      const line = Buffer.concat(this.parts).toString('utf8');
      this.parts = [];
      start = nl + 1;
      const w = this.waiter;
      this.waiter = undefined;
      w?.(line);
    }
    if (start < d.length) this.parts.push(d.subarray(start));
  }

  /** one request line out, one reply line back */
  async ping(): Promise<void> {
    const line = this.nextLine();
    this.sock.write('{"execute":"guest-ping"}\n');
    const reply = await line;
    if (!reply.startsWith('{"return"')) throw new Error(`raw ping: ${reply}`);
  }

  /** any command, one at a time: the loop a client of the agent without the gateway would write */
  async cmd(execute: string, args: Record<string, unknown>): Promise<Record<string, unknown> & { return?: unknown }> {
    const line = this.nextLine();
    this.sock.write(`${JSON.stringify({ execute, arguments: args })}\n`);
    const reply = JSON.parse(await line) as { return?: unknown; error?: { desc: string } };
    if (reply.error) throw new Error(`${execute}: ${reply.error.desc}`);
    return reply as Record<string, unknown> & { return?: unknown };
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.sock.destroyed) return resolve();
      this.sock.once('close', () => resolve());
      this.sock.end();
      setTimeout(() => this.sock.destroy(), 1000).unref();
    });
  }
}
