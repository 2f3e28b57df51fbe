/**
 * stdin for guest-exec: the caller sends either text (`inputText`, sent as its UTF-8 bytes) or
 * base64 (`input-data`, the QGA member, verbatim). Decoded size is what the cap measures, since
 * that is what the process receives.
 */
import { GatewayError, errors } from '../errors.js';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function decodeStdin(
  body: { inputText?: string; 'input-data'?: string },
  maxBytes: number,
): Buffer | undefined {
  const { inputText } = body;
  const b64 = body['input-data'];
  if (inputText !== undefined && b64 !== undefined) {
    throw errors.validation('give stdin as either inputText or input-data, not both');
  }
  let buf: Buffer | undefined;
  if (inputText !== undefined) {
    if (Buffer.byteLength(inputText, 'utf8') > maxBytes) throw tooLarge(maxBytes);
    buf = Buffer.from(inputText, 'utf8');
  } else if (b64 !== undefined) {
    if (b64.length % 4 !== 0 || !BASE64.test(b64)) {
      throw errors.validation('input-data is not valid base64');
    }
    if ((b64.length / 4) * 3 - (b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0) > maxBytes) throw tooLarge(maxBytes);
    buf = Buffer.from(b64, 'base64');
  }
  return buf;
}

function tooLarge(maxBytes: number): GatewayError {
  return errors.tooLarge('stdin', maxBytes, 'exec.maxInputBytes');
}
