/**
 * How captured process output is shown over HTTP. The agent hands out base64; we keep that field
 * verbatim (`out-data`, lossless, what the QGA manual describes) and add the decoded text
 * (`outText`) only when the bytes are text (valid UTF-8, no control characters but tab, newline,
 * carriage return and escape), so a caller never receives a mangled string or an answer blown up by
 * escapes, and never has to guess whether to decode.
 */

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The UTF-8 text of base64 `b64`, or undefined when the bytes are not text: not valid UTF-8, or
 * holding a control character other than tab, newline, carriage return and escape (terminal
 * colours). NUL padding (tar) and other binary bytes are valid UTF-8, but each comes out of JSON
 * as a 6-character \u escape: such output stays in `out-data` only, instead of an answer several
 * times its size. `truncated` (the agent cut the output at its cap): a character cut in two at the
 * end is left out rather than losing the whole text.
 */
export function utf8TextOf(b64: string, truncated = false): string | undefined {
  let bytes = Buffer.from(b64, 'base64');
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d && b !== 0x1b) || b === 0x7f) return undefined;
  }
  if (truncated) bytes = bytes.subarray(0, wholeCharactersEnd(bytes));
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** where the last whole UTF-8 character ends (before a multi-byte sequence cut short at the end) */
function wholeCharactersEnd(bytes: Buffer): number {
  const len = bytes.length;
  let i = len - 1;
  while (i >= 0 && i > len - 4 && (bytes[i] & 0xc0) === 0x80) i--;
  if (i < 0) return len;
  const lead = bytes[i];
  // not the lead byte of a sequence (too many continuation bytes, or a byte UTF-8 never has): left to the decoder
  if ((lead & 0xc0) === 0x80 || lead >= 0xf8) return len;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return len - i < need ? i : len;
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
