/** Record kinds. */
export declare const KIND_SNAPSHOT = 1;
export declare const KIND_DELTA = 2;
export declare const KIND_TRADE = 3;
export declare const KIND_STATUS = 4;
/** Record flag bit 0: a snapshot that replaces the client's book. */
export declare const FLAG_SNAPSHOT = 1;
/** Record flag bit 1 (protocol 1.1): the book body carries a CRC-32 of the book after applying. */
export declare const FLAG_CHECKSUM = 2;
export declare const BATCH_HEADER_BYTES = 8;
export declare const RECORD_HEADER_BYTES = 32;
export declare const BOOK_BODY_HEADER_BYTES = 8;
export declare const LEVEL_BYTES = 16;
export declare const TRADE_BODY_BYTES = 32;
export declare const STATUS_BODY_BYTES = 8;
/** Status codes carried by kind-4 records. */
export declare const STATUS_FEED_STALE = 1;
export declare const STATUS_FEED_RESUMED = 2;
export declare const STATUS_SLOW_CONSUMER = 3;
export type Side = "buy" | "sell";
/** A decoded book record (kinds 1 and 2). Levels are flat: [px0, qty0, px1, qty1, ...]. */
export interface BookRecord {
    kind: 1 | 2;
    flags: number;
    sid: number;
    /** Symbol name: set by the JSON decoder; the binary decoder leaves it empty (use `sid`). */
    symbol: string;
    seq: number;
    exchTs: bigint;
    recvTs: bigint;
    bids: number[];
    asks: number[];
    /** CRC-32 of the book after applying, when the server sent one (flag bit 1 / JSON `crc`). */
    checksum: number | undefined;
}
export interface TradeRecord {
    kind: 3;
    flags: number;
    sid: number;
    symbol: string;
    seq: number;
    exchTs: bigint;
    recvTs: bigint;
    price: number;
    qty: number;
    tradeId: bigint;
    side: Side;
}
export interface StatusRecord {
    kind: 4;
    flags: number;
    sid: number;
    symbol: string;
    seq: number;
    exchTs: bigint;
    recvTs: bigint;
    code: number;
}
export type WireRecord = BookRecord | TradeRecord | StatusRecord;
/** A malformed batch or record. */
export declare class DecodeError extends Error {
    name: string;
}
/** i64 little-endian at `off` as a number (exact below 2^53). */
export declare function readI64(dv: DataView, off: number): number;
/** u64 little-endian at `off` as a number (exact below 2^53). */
export declare function readU64(dv: DataView, off: number): number;
/**
 * Decodes one binary batch and calls `onRecord` for each record, in order. Records of unknown
 * kinds are skipped by their length (forward compatibility). Throws {@link DecodeError} on a
 * malformed batch.
 */
export declare function decodeBatch(data: ArrayBuffer | ArrayBufferView, onRecord: (r: WireRecord) => void): number;
/**
 * Formats a scaled integer as the server's JSON does: `-`, the integer part, and when
 * `decimals > 0` a point and exactly `decimals` fraction digits. `(6500010, 2)` → `"65000.10"`.
 */
export declare function formatScaled(value: number | bigint, decimals: number): string;
/**
 * Parses a decimal string into an integer scaled by 10^decimals. Extra fraction digits must be
 * zeros. Throws {@link DecodeError} on anything else.
 */
export declare function parseScaled(s: string, decimals: number): number;
/** Decimals of a symbol, from the subscribe reply. */
export interface Decimals {
    pxDecimals: number;
    qtyDecimals: number;
}
/**
 * Parses the text of a `format=json` batch (or one SSE `data:` record) into records. u64
 * timestamps are recovered exactly from the text (JSON.parse alone would round them).
 * `decimals(symbol)` gives the scale of a symbol, or `undefined` for one not subscribed (its
 * records are skipped).
 */
export declare function decodeJsonRecords(text: string, decimals: (symbol: string) => Decimals | undefined, onRecord: (r: WireRecord) => void): number;
/** Encodes records into one binary batch (the inverse of {@link decodeBatch}). */
export declare function encodeBatch(records: readonly WireRecord[]): Uint8Array;
/** Encodes one record as the server's format=json object text (`crc` when it has a checksum). */
export declare function encodeJsonRecord(r: WireRecord, symbol: string, d: Decimals): string;
