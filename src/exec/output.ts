/**
 * How captured process output is shown over HTTP. The agent hands out base64; we keep that field
 * verbatim (`out-data`, lossless, what the QGA manual describes) and add the decoded text
 * (`outText`) only when the bytes are valid UTF-8, so a caller never receives a mangled string
 * and never has to guess whether to decode.
 */

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The UTF-8 text of base64 `b64`, or undefined when the bytes are not valid UTF-8. */
export function utf8TextOf(b64: string): string | undefined {
  const bytes = Buffer.from(b64, 'base64');
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Decoded size of a base64 string without decoding it (for cache accounting and caps). */
export function base64DecodedLength(b64: string): number {
  const len = b64.length;
  if (len === 0) return 0;
  let pad = 0;
  if (b64.charCodeAt(len - 1) === 0x3d) pad++;
  if (len > 1 && b64.charCodeAt(len - 2) === 0x3d) pad++;
  return Math.floor((len * 3) / 4) - pad;
}
