/** What an AgentConnection reports when the socket or a reply line fails (see connection.ts). */

/** The socket closed (or errored, or never connected). */
export class ConnectionLostError extends Error {
  constructor(detail: string, cause?: unknown) {
    super(detail, cause === undefined ? undefined : { cause });
    this.name = 'ConnectionLostError';
  }
}

/** A reply line that cannot be an answer: not JSON, over the size cap, or neither return nor error. */
export class ProtocolViolationError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'ProtocolViolationError';
  }
}

/**
 * The answer's line went over agent.maxReplyBytes or the global agent.maxBufferedBytes: dropped
 * as it came in (never buffered), the socket resynced. Answered 502 REPLY_TOO_LARGE.
 */
export class ReplyTooLargeError extends ProtocolViolationError {
  constructor(detail: string) {
    super(detail);
    this.name = 'ReplyTooLargeError';
  }
}
