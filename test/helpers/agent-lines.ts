/**
 * How qemu-ga reads its socket, for the fake agents of the tests: bytes are split into lines; a
 * 0xFF byte discards the partial line before it and is answered with qemu-ga's parse error
 * (`strayReply`). Each line is handled after the previous one's handler settled.
 */
import type net from 'node:net';

export const STRAY_FF_REPLY = '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n';

export function readAgentLines(sock: net.Socket, onLine: (line: string) => Promise<void>, strayReply: () => unknown): void {
  let buf = '';
  let chain = Promise.resolve();
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (;;) {
      const ff = buf.indexOf('\xff');
      const nl = buf.indexOf('\n');
      if (ff >= 0 && (nl < 0 || ff < nl)) {
        buf = buf.slice(ff + 1);
        chain = chain.then(() => void strayReply());
        continue;
      }
      if (nl < 0) break;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim() !== '') chain = chain.then(() => onLine(line));
    }
  });
}
