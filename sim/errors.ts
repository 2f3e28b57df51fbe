/**
 * An error the simulated agent sends back as `{"error": {"class": ..., "desc": ...}}`.
 * Internal to the simulator: it is wire data, not a gateway failure, so it is not a GatewayError.
 */
export class QgaError extends Error {
  constructor(
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(desc);
    this.name = 'QgaError';
  }
}

/** strerror() texts the simulated guest reports. */
export const ENOENT = 'No such file or directory';
export const EBADF = 'Bad file descriptor';
export const EINVAL = 'Invalid argument';
export const EISDIR = 'Is a directory';
export const EROFS = 'Read-only file system';

export function generic(desc: string): QgaError {
  return new QgaError('GenericError', desc);
}
