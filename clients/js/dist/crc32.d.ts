/** Continues a CRC-32 over `bytes` (start with `crc = 0`). */
export declare function crc32(bytes: Uint8Array, crc?: number): number;
/**
 * The checksum of a book (§3.2): CRC-32 over the top `n = min(10, depth)` levels of each side
 * (`depth` 0 counts as unlimited, so n = 10), bids best first then asks best first, each level
 * `i64 price` then `i64 qty` little-endian. Sides are given as best-first price and quantity
 * arrays of scaled integers.
 */
export declare function bookChecksum(depth: number, bidPx: ArrayLike<number>, bidQty: ArrayLike<number>, bidCount: number, askPx: ArrayLike<number>, askQty: ArrayLike<number>, askCount: number): number;
