/**
 * The error a caller's AbortSignal stands for: its reason when that is an Error (a caller that
 * says why it gave up keeps its own error), otherwise a standard AbortError.
 */
export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new DOMException('This operation was aborted', 'AbortError');
}

/** Something told when a signal it watches (watchAbort) aborts. */
export interface AbortWatcher {
  onSignalAbort(signal: AbortSignal): void;
}

/**
 * Per signal, who watches it, behind ONE 'abort' listener per signal (issue 14): an HTTP
 * connection's signal is shared by every call made on it, and an EventTarget listener added and
 * removed per call cost ~3 µs each (bench/quick-layers.ts); a Set entry costs a fraction. On abort,
 * the watchers are told in the order they started watching.
 */
const watchers = new WeakMap<AbortSignal, Set<AbortWatcher>>();

export function watchAbort(signal: AbortSignal, watcher: AbortWatcher): void {
  let set = watchers.get(signal);
  if (set === undefined) {
    const s = new Set<AbortWatcher>();
    set = s;
    watchers.set(signal, s);
    signal.addEventListener(
      'abort',
      () => {
        watchers.delete(signal);
        for (const w of [...s]) w.onSignalAbort(signal);
        s.clear();
      },
      { once: true },
    );
  }
  set.add(watcher);
}

export function unwatchAbort(signal: AbortSignal, watcher: AbortWatcher): void {
  watchers.get(signal)?.delete(watcher);
}
