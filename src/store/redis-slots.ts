/**
 * Redis Cluster slots, computed here (CRC16-XMODEM of the key's hash tag, mod 16384, as Redis
 * does), and the deadline index's buckets: INDEX_BUCKETS keys, bucket b covering the contiguous
 * slot range [b × 64, (b + 1) × 64), each key named with a hash tag chosen (once per key prefix,
 * at start) so that the key itself hashes to a slot inside its bucket's range, the one nearest the
 * range's middle. A lease's entry goes to the bucket of its session's slot (a VM: `{vm:<name>}`; a
 * group: `{group:<id>}`), so in the usual layouts (each master serving contiguous ranges) the entry
 * lives on the same master as the lease's record: see redis.ts's header.
 */

export const SLOTS = 16_384;
export const INDEX_BUCKETS = 256;
const SLOTS_PER_BUCKET = SLOTS / INDEX_BUCKETS;
/** names tried when looking for the bucket keys' hash tags (every bucket finds one: ~0 chance of a miss) */
const TAG_TRIES = 65_536;

const TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let k = 0; k < 8; k++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/** CRC16-XMODEM (poly 0x1021, init 0), the one Redis Cluster uses. */
export function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ bytes[i]) & 0xff];
  return crc;
}

/** The slot of a key: its hash tag's (the part between the first `{` and the next `}`, if not empty), else the whole key's. */
export function keySlot(key: string): number {
  const buf = Buffer.from(key, 'utf8');
  const open = buf.indexOf(0x7b);
  if (open >= 0) {
    const close = buf.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(buf.subarray(open + 1, close)) % SLOTS;
  }
  return crc16(buf) % SLOTS;
}

export const bucketOfSlot = (slot: number): number => Math.floor(slot / SLOTS_PER_BUCKET);

/** prefix ('' for every prefix without a `{`) → each bucket's n */
const cache = new Map<string, number[]>();

/**
 * The bucket keys for a key prefix: `<prefix>{dl:<n>}:deadlines`, n chosen per bucket as above.
 * (A prefix that carries a hash tag of its own puts every key in one slot: then every bucket
 * falls back to `dl:<65536 + b>`, all in that slot, which works the same on one node.)
 */
export function bucketKeys(prefix: string): string[] {
  // without a `{` in the prefix, a name's slot is its tag's: one search serves every prefix
  const tags = bucketTags(prefix.includes('{') ? prefix : '');
  return tags.map((n) => `${prefix}{dl:${n}}:deadlines`);
}

/** per bucket, the n of the name that hashes nearest the middle of its range (ms of CRC work: done once) */
function bucketTags(prefix: string): number[] {
  const hit = cache.get(prefix);
  if (hit) return hit;
  const name = (n: number) => `${prefix}{dl:${n}}:deadlines`;
  const best: Array<{ n: number; off: number } | undefined> = Array.from({ length: INDEX_BUCKETS }, () => undefined);
  for (let n = 0; n < TAG_TRIES; n++) {
    const slot = keySlot(name(n));
    const b = bucketOfSlot(slot);
    const off = Math.abs(slot - (b * SLOTS_PER_BUCKET + SLOTS_PER_BUCKET / 2));
    const cur = best[b];
    if (!cur || off < cur.off) best[b] = { n, off };
  }
  const tags = best.map((c, b) => (c ? c.n : TAG_TRIES + b));
  cache.set(prefix, tags);
  return tags;
}
