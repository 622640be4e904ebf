// CRC-32 (IEEE 802.3 polynomial, reflected, as zlib's crc32) and the book checksum of
// shared/protocol.md §3.2.

const TABLE = /* @__PURE__ */ (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** Continues a CRC-32 over `bytes` (start with `crc = 0`). */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

// Slicing-by-4 tables: T1..T3 advance a byte through 1..3 more zero bytes, so that a 32-bit word
// is folded in with four independent lookups instead of a chain of four.
const [T0, T1, T2, T3] = /* @__PURE__ */ (() => {
  const t = [TABLE, new Int32Array(256), new Int32Array(256), new Int32Array(256)] as const;
  for (let n = 0; n < 256; n++) {
    let c = TABLE[n]!;
    for (let k = 1; k < 4; k++) {
      c = TABLE[c & 0xff]! ^ (c >>> 8);
      t[k][n] = c;
    }
  }
  return t;
})();

/** Folds the little-endian 32-bit word `w` into CRC state `c`. */
function feedU32(c: number, w: number): number {
  c ^= w;
  return T3[c & 0xff]! ^ T2[(c >>> 8) & 0xff]! ^ T1[(c >>> 16) & 0xff]! ^ T0[c >>> 24]!;
}

/** Feeds the 8 little-endian bytes of the i64 `v` (exact for |v| < 2^53) into CRC state `c`. */
function feedI64(c: number, v: number): number {
  // ToUint32 wraps modulo 2^32, so `v >>> 0` is the low word even for negatives; the high word
  // is floor(v / 2^32) in two's complement.
  return feedU32(feedU32(c, v >>> 0), Math.floor(v / 4294967296) | 0);
}

/**
 * The checksum of a book (§3.2): CRC-32 over the top `n = min(10, depth)` levels of each side
 * (`depth` 0 counts as unlimited, so n = 10), bids best first then asks best first, each level
 * `i64 price` then `i64 qty` little-endian. Sides are given as best-first price and quantity
 * arrays of scaled integers.
 */
export function bookChecksum(
  depth: number,
  bidPx: ArrayLike<number>,
  bidQty: ArrayLike<number>,
  bidCount: number,
  askPx: ArrayLike<number>,
  askQty: ArrayLike<number>,
  askCount: number,
): number {
  const n = depth === 0 ? 10 : Math.min(10, depth);
  let c = -1;
  const nb = Math.min(n, bidCount);
  for (let i = 0; i < nb; i++) c = feedI64(feedI64(c, bidPx[i]!), bidQty[i]!);
  const na = Math.min(n, askCount);
  for (let i = 0; i < na; i++) c = feedI64(feedI64(c, askPx[i]!), askQty[i]!);
  return ~c >>> 0;
}
