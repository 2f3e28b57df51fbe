/**
 * The error a caller's AbortSignal stands for: its reason when that is an Error (a caller that
 * says why it gave up keeps its own error), otherwise a standard AbortError.
 */
export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new DOMException('This operation was aborted', 'AbortError');
}
