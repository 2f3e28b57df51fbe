/**
 * One budget over the partly received reply lines of every channel of a gateway
 * (agent.maxBufferedBytes). The composition root makes one and hands it to every connection; a
 * decoder takes bytes from it before it keeps them and gives them back as soon as the line is
 * parsed or dropped. The line whose bytes do not fit is dropped (REPLY_TOO_LARGE), never buffered.
 */
export class ReplyBudget {
  private usedBytes = 0;

  constructor(readonly limitBytes: number) {}

  get used(): number {
    return this.usedBytes;
  }

  /** Take `bytes` if they fit; false (and nothing taken) if they would exceed the limit. */
  tryTake(bytes: number): boolean {
    if (this.usedBytes + bytes > this.limitBytes) return false;
    this.usedBytes += bytes;
    return true;
  }

  release(bytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - bytes);
  }
}
