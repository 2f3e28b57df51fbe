/**
 * The agent's outgoing byte stream. It belongs to the agent, not to a connection: whatever has not
 * been handed to a client socket yet waits here for the next client, exactly as stale replies do
 * on a real channel. Bytes are handed over in bounded chunks, so a client that leaves mid-reply
 * loses only what was in flight and the next one receives the tail.
 */
import type { Socket } from 'node:net';

const CHUNK = 64 * 1024;
const CUT = Symbol('cut');
type Item = Buffer | typeof CUT;

export class Outbox {
  private items: Item[] = [];
  /** bytes of items[0] already handed over */
  private offset = 0;
  private queued = 0;
  private socket: Socket | undefined;
  private waitingDrain = false;

  /** `onCut` is told to drop the connection once everything before the cut is flushed. */
  constructor(private readonly onCut: (socket: Socket) => void) {}

  get pendingBytes(): number {
    return this.queued;
  }

  push(buf: Buffer): void {
    if (buf.length === 0) return;
    this.items.push(buf);
    this.queued += buf.length;
    this.pump();
  }

  /** Drop the connection at this point of the stream (the drop-mid-reply fault). */
  pushCut(): void {
    this.items.push(CUT);
    this.pump();
  }

  attach(socket: Socket): void {
    this.socket = socket;
    this.waitingDrain = false;
    this.pump();
  }

  detach(): void {
    this.socket = undefined;
    this.waitingDrain = false;
  }

  clear(): void {
    this.items = [];
    this.offset = 0;
    this.queued = 0;
  }

  private pump(): void {
    const s = this.socket;
    if (!s || this.waitingDrain) return;
    while (this.items.length > 0 && this.socket === s) {
      const head = this.items[0];
      if (head === CUT) {
        this.items.shift();
        this.detach();
        this.onCut(s);
        return;
      }
      const chunk = head.subarray(this.offset, this.offset + CHUNK);
      this.offset += chunk.length;
      this.queued -= chunk.length;
      if (this.offset >= head.length) {
        this.items.shift();
        this.offset = 0;
      }
      if (s.destroyed) return;
      if (!s.write(chunk)) {
        this.waitingDrain = true;
        s.once('drain', () => {
          if (this.socket !== s) return;
          this.waitingDrain = false;
          this.pump();
        });
        return;
      }
    }
  }
}
