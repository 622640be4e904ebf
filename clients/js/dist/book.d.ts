import { type BookRecord } from "./wire.js";
/** A price level: [price, quantity] as scaled integers. */
export type Level = readonly [price: number, qty: number];
/** A read-only view of a book the client holds. Prices and quantities are scaled integers. */
export interface BookView {
    readonly symbol: string;
    /** Levels per side the subscription holds (0: the whole book). */
    readonly depth: number;
    readonly pxDecimals: number;
    readonly qtyDecimals: number;
    /** `seq` of the last record applied (0 before the first snapshot). */
    readonly seq: number;
    /** False until the first snapshot, and while a resync is awaited. */
    readonly synced: boolean;
    /** True between a feed-stale status (code 1) and the feed-resumed one (code 2). */
    readonly stale: boolean;
    readonly bidCount: number;
    readonly askCount: number;
    /** Price of the i-th bid, best first (0-based); `undefined` past the end. */
    bidPrice(i: number): number | undefined;
    bidQty(i: number): number | undefined;
    askPrice(i: number): number | undefined;
    askQty(i: number): number | undefined;
    /** The top `n` bids (default all) as [price, qty] pairs, best first. Allocates. */
    bids(n?: number): Level[];
    asks(n?: number): Level[];
    /** The book with decimal strings, as format=json prints levels: `[["65000.10","1.500000"],..]`. */
    toJSON(n?: number): {
        symbol: string;
        seq: number;
        bids: [string, string][];
        asks: [string, string][];
    };
    /** CRC-32 of the top min(10, depth) levels per side (shared/protocol.md §3.2). */
    checksum(): number;
}
/** Why a record could not be applied. */
export type ApplyResult = "ok" | "ignored" | "gap" | "checksum";
declare class Side {
    readonly descending: boolean;
    px: number[];
    qty: number[];
    constructor(descending: boolean);
    get length(): number;
    replace(levels: number[]): void;
    /** Index of `price`, or -(insertion point) - 1. */
    find(price: number): number;
    apply(levels: number[]): void;
    levels(n: number | undefined): Level[];
}
/**
 * One book stream (symbol, depth). `apply` enforces the sequence rule (docs/protocol.md §1.3):
 * a snapshot (kind 1) always sets a new base; a delta must carry the previous `seq` + 1; a record
 * with a checksum must match the book after applying.
 */
export declare class OrderBook implements BookView {
    readonly symbol: string;
    readonly depth: number;
    pxDecimals: number;
    qtyDecimals: number;
    readonly bidSide: Side;
    readonly askSide: Side;
    seq: number;
    /** The book's content is right as of `seq` (false before the first snapshot and after a checksum mismatch). */
    valid: boolean;
    /** A fresh snapshot is awaited (after a gap, a resubscribe, or a resume the server could not honour). */
    awaiting: boolean;
    stale: boolean;
    /** Checksums verified so far, and mismatches seen. */
    checksumsVerified: number;
    constructor(symbol: string, depth: number, pxDecimals: number, qtyDecimals: number);
    get bidCount(): number;
    get askCount(): number;
    bidPrice(i: number): number | undefined;
    bidQty(i: number): number | undefined;
    askPrice(i: number): number | undefined;
    askQty(i: number): number | undefined;
    bids(n?: number): Level[];
    asks(n?: number): Level[];
    toJSON(n?: number): {
        symbol: string;
        seq: number;
        bids: [string, string][];
        asks: [string, string][];
    };
    checksum(): number;
    get synced(): boolean;
    /** A snapshot is now expected (a resubscribe was sent). Deltas that continue `seq` still apply. */
    desync(): void;
    /** The server recovered the stream from `seq`: the deltas that follow continue the book. */
    resumeOk(): void;
    /**
     * Applies one book record:
     * - a snapshot (kind 1) always sets a new base;
     * - a delta applies when the book is valid and the delta carries `seq` + 1 (continuity proven
     *   by the sequence, even while a snapshot is awaited);
     * - any other delta is "ignored" while a snapshot is awaited (it belongs to a subscription
     *   being replaced), else it is a "gap": the book is left as it was and awaits a snapshot;
     * - a record whose checksum does not match the book after applying is a "checksum" mismatch:
     *   the book is marked invalid and awaits a snapshot.
     */
    apply(r: BookRecord): ApplyResult;
}
export {};
