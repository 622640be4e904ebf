// Order books per (symbol, depth): snapshots, deltas, the sequence rule and checksums.
import { bookChecksum } from "./crc32.js";
import { formatScaled } from "./wire.js";
class Side {
    descending;
    px = [];
    qty = [];
    constructor(descending) {
        this.descending = descending;
    }
    get length() {
        return this.px.length;
    }
    replace(levels) {
        const n = levels.length >> 1;
        const px = new Array(n);
        const qty = new Array(n);
        for (let i = 0; i < n; i++) {
            px[i] = levels[2 * i];
            qty[i] = levels[2 * i + 1];
        }
        this.px = px;
        this.qty = qty;
    }
    /** Index of `price`, or -(insertion point) - 1. */
    find(price) {
        const px = this.px;
        let lo = 0;
        let hi = px.length - 1;
        const desc = this.descending;
        while (lo <= hi) {
            const mid = (lo + hi) >> 1;
            const p = px[mid];
            if (p === price)
                return mid;
            if (desc ? p > price : p < price)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        return -lo - 1;
    }
    apply(levels) {
        for (let i = 0; i < levels.length; i += 2) {
            const price = levels[i];
            const q = levels[i + 1];
            const at = this.find(price);
            if (at >= 0) {
                if (q === 0) {
                    this.px.splice(at, 1);
                    this.qty.splice(at, 1);
                }
                else {
                    this.qty[at] = q;
                }
            }
            else if (q !== 0) {
                const ins = -at - 1;
                if (ins === this.px.length) {
                    this.px.push(price);
                    this.qty.push(q);
                }
                else {
                    this.px.splice(ins, 0, price);
                    this.qty.splice(ins, 0, q);
                }
            }
        }
    }
    levels(n) {
        const m = n === undefined || n <= 0 ? this.px.length : Math.min(n, this.px.length);
        const out = new Array(m);
        for (let i = 0; i < m; i++)
            out[i] = [this.px[i], this.qty[i]];
        return out;
    }
}
/**
 * One book stream (symbol, depth). `apply` enforces the sequence rule (docs/protocol.md §1.3):
 * a snapshot (kind 1) always sets a new base; a delta must carry the previous `seq` + 1; a record
 * with a checksum must match the book after applying.
 */
export class OrderBook {
    symbol;
    depth;
    pxDecimals;
    qtyDecimals;
    bidSide = new Side(true);
    askSide = new Side(false);
    seq = 0;
    /** The book's content is right as of `seq` (false before the first snapshot and after a checksum mismatch). */
    valid = false;
    /** A fresh snapshot is awaited (after a gap, a resubscribe, or a resume the server could not honour). */
    awaiting = true;
    stale = false;
    /** Checksums verified so far, and mismatches seen. */
    checksumsVerified = 0;
    constructor(symbol, depth, pxDecimals, qtyDecimals) {
        this.symbol = symbol;
        this.depth = depth;
        this.pxDecimals = pxDecimals;
        this.qtyDecimals = qtyDecimals;
    }
    get bidCount() {
        return this.bidSide.length;
    }
    get askCount() {
        return this.askSide.length;
    }
    bidPrice(i) {
        return this.bidSide.px[i];
    }
    bidQty(i) {
        return this.bidSide.qty[i];
    }
    askPrice(i) {
        return this.askSide.px[i];
    }
    askQty(i) {
        return this.askSide.qty[i];
    }
    bids(n) {
        return this.bidSide.levels(n);
    }
    asks(n) {
        return this.askSide.levels(n);
    }
    toJSON(n) {
        const fmt = (l) => [formatScaled(l[0], this.pxDecimals), formatScaled(l[1], this.qtyDecimals)];
        return { symbol: this.symbol, seq: this.seq, bids: this.bids(n).map(fmt), asks: this.asks(n).map(fmt) };
    }
    checksum() {
        const b = this.bidSide;
        const a = this.askSide;
        return bookChecksum(this.depth, b.px, b.qty, b.length, a.px, a.qty, a.length);
    }
    get synced() {
        return this.valid && !this.awaiting;
    }
    /** A snapshot is now expected (a resubscribe was sent). Deltas that continue `seq` still apply. */
    desync() {
        this.awaiting = true;
    }
    /** The server recovered the stream from `seq`: the deltas that follow continue the book. */
    resumeOk() {
        if (this.valid)
            this.awaiting = false;
    }
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
    apply(r) {
        if (r.kind === 1) {
            this.bidSide.replace(r.bids);
            this.askSide.replace(r.asks);
        }
        else {
            if (!this.valid || r.seq !== this.seq + 1) {
                if (this.awaiting || !this.valid)
                    return "ignored";
                this.awaiting = true;
                return "gap";
            }
            this.bidSide.apply(r.bids);
            this.askSide.apply(r.asks);
        }
        this.seq = r.seq;
        this.valid = true;
        this.awaiting = false;
        if (r.checksum !== undefined) {
            if (this.checksum() !== r.checksum) {
                this.valid = false;
                this.awaiting = true;
                return "checksum";
            }
            this.checksumsVerified++;
        }
        return "ok";
    }
}
