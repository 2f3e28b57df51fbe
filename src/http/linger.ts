/**
 * Closing a connection whose request body was not read (a 401/403/413 answered before the body, a
 * forward that failed while the body was still coming), without losing the answer.
 *
 * Closing a socket that still has unread bytes makes the kernel send a reset, and a reset that
 * reaches the client before it has read the answer makes the client drop the answer too: it sees
 * ECONNRESET instead of the 401 (seen with Node's fetch sending a 20 MB body: 9 times in 20). Reading
 * the whole body instead (what Node does to keep the connection) would let any client make the
 * gateway read gigabytes it refused. So the connection lingers, half closed:
 *  - the answer is sent with `Connection: close`, then our side is shut (FIN): no more answers;
 *  - nothing more of the body is read (the socket's reads are stopped): TCP flow control stops the
 *    client once the kernel's buffers are full;
 *  - LINGER_MS later the socket is destroyed (the reset), whatever is left unread: the client had
 *    that long to read the answer.
 */
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** how long a refused connection is held open after its answer, at most */
export const LINGER_MS = 2_000;
/**
 * Ask for the connection of `request` to end after `reply`, lingering as above. Node's HTTP server
 * ends a `Connection: close` exchange with socket.destroySoon(), which destroys the socket as soon
 * as its write side is done: this socket's destroySoon lingers instead.
 */
export function closeAfterAnswer(request: FastifyRequest, reply: FastifyReply): void {
  reply.header('connection', 'close');
  const socket = request.raw.socket as Socket | null;
  if (socket && !socket.destroyed) socket.destroySoon = () => linger(socket);
}

function noop(): void {}

function linger(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.writable) socket.end();
  // Stop reading. Node's HTTP parser reads the socket's handle directly, where pause() does nothing;
  // a 'data' listener gives the reads back to the stream, which pause() then stops (and the kernel,
  // once the stream's buffer is full). Again after this turn: Node drops the rest of an unread body
  // (IncomingMessage._dump) by resuming the socket from a nextTick queued when the answer finished.
  socket.on('data', noop);
  socket.pause();
  setImmediate(() => socket.pause());
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}
