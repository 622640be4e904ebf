// CRC-32 (IEEE 802.3 polynomial, reflected, as zlib's crc32) and the book checksum of
// shared/protocol.md §3.2.
const TABLE = /* @__PURE__ */ (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
        let c = n;
        for (let k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        t[n] = c >>> 0;
    }
    return t;
})();
/** Continues a CRC-32 over `bytes` (start with `crc = 0`). */
export function crc32(bytes, crc = 0) {
    let c = ~crc >>> 0;
    for (let i = 0; i < bytes.length; i++)
        c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return ~c >>> 0;
}
const scratch = new DataView(new ArrayBuffer(16));
const scratchBytes = new Uint8Array(scratch.buffer);
function putI64(off, v) {
    // Exact for |v| < 2^53: split into the low and high 32-bit words.
    const lo = v % 4294967296;
    const hi = Math.floor(v / 4294967296);
    scratch.setUint32(off, lo < 0 ? lo + 4294967296 : lo, true);
    scratch.setInt32(off + 4, hi, true);
}
/**
 * The checksum of a book (§3.2): CRC-32 over the top `n = min(10, depth)` levels of each side
 * (`depth` 0 counts as unlimited, so n = 10), bids best first then asks best first, each level
 * `i64 price` then `i64 qty` little-endian. Sides are given as best-first price and quantity
 * arrays of scaled integers.
 */
export function bookChecksum(depth, bidPx, bidQty, bidCount, askPx, askQty, askCount) {
    const n = depth === 0 ? 10 : Math.min(10, depth);
    let c = 0xffffffff;
    const side = (px, qty, count) => {
        const m = Math.min(n, count);
        for (let i = 0; i < m; i++) {
            putI64(0, px[i]);
            putI64(8, qty[i]);
            for (let j = 0; j < 16; j++)
                c = TABLE[(c ^ scratchBytes[j]) & 0xff] ^ (c >>> 8);
        }
    };
    side(bidPx, bidQty, bidCount);
    side(askPx, askQty, askCount);
    return ~c >>> 0;
}
