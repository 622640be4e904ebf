// Order books per (symbol, depth): snapshots, deltas, the sequence rule and checksums.

import { bookChecksum } from "./crc32.js";
import { formatScaled, type BookRecord } from "./wire.js";

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
  toJSON(n?: number): { symbol: string; seq: number; bids: [string, string][]; asks: [string, string][] };
  /** CRC-32 of the top min(10, depth) levels per side (shared/protocol.md §3.2). */
  checksum(): number;
}

/** Why a record could not be applied. */
export type ApplyResult = "ok" | "ignored" | "gap" | "checksum";

class Side {
  px: number[] = [];
  qty: number[] = [];
  constructor(readonly descending: boolean) {}

  get length(): number {
    return this.px.length;
  }

  replace(levels: number[]): void {
    const n = levels.length >> 1;
    const px = new Array<number>(n);
    const qty = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      px[i] = levels[2 * i]!;
      qty[i] = levels[2 * i + 1]!;
    }
    this.px = px;
    this.qty = qty;
  }

  /** Index of `price`, or -(insertion point) - 1. */
  find(price: number): number {
    const px = this.px;
    let lo = 0;
    let hi = px.length - 1;
    const desc = this.descending;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const p = px[mid]!;
      if (p === price) return mid;
      if (desc ? p > price : p < price) lo = mid + 1;
      else hi = mid - 1;
    }
    return -lo - 1;
  }

  apply(levels: number[]): void {
    for (let i = 0; i < levels.length; i += 2) {
      const price = levels[i]!;
      const q = levels[i + 1]!;
      const at = this.find(price);
      if (at >= 0) {
        if (q === 0) {
          this.px.splice(at, 1);
          this.qty.splice(at, 1);
        } else {
          this.qty[at] = q;
        }
      } else if (q !== 0) {
        const ins = -at - 1;
        if (ins === this.px.length) {
          this.px.push(price);
          this.qty.push(q);
        } else {
          this.px.splice(ins, 0, price);
          this.qty.splice(ins, 0, q);
        }
      }
    }
  }

  levels(n: number | undefined): Level[] {
    const m = n === undefined || n <= 0 ? this.px.length : Math.min(n, this.px.length);
    const out = new Array<Level>(m);
    for (let i = 0; i < m; i++) out[i] = [this.px[i]!, this.qty[i]!];
    return out;
  }
}

/**
 * One book stream (symbol, depth). `apply` enforces the sequence rule (docs/protocol.md §1.3):
 * a snapshot (kind 1) always sets a new base; a delta must carry the previous `seq` + 1; a record
 * with a checksum must match the book after applying.
 */
export class OrderBook implements BookView {
  readonly bidSide = new Side(true);
  readonly askSide = new Side(false);
  seq = 0;
  /** The book's content is right as of `seq` (false before the first snapshot and after a checksum mismatch). */
  valid = false;
  /** A fresh snapshot is awaited (after a gap, a resubscribe, or a resume the server could not honour). */
  awaiting = true;
  stale = false;
  /** Checksums verified so far, and mismatches seen. */
  checksumsVerified = 0;

  constructor(
    readonly symbol: string,
    readonly depth: number,
    public pxDecimals: number,
    public qtyDecimals: number,
  ) {}

  get bidCount(): number {
    return this.bidSide.length;
  }
  get askCount(): number {
    return this.askSide.length;
  }
  bidPrice(i: number): number | undefined {
    return this.bidSide.px[i];
  }
  bidQty(i: number): number | undefined {
    return this.bidSide.qty[i];
  }
  askPrice(i: number): number | undefined {
    return this.askSide.px[i];
  }
  askQty(i: number): number | undefined {
    return this.askSide.qty[i];
  }
  bids(n?: number): Level[] {
    return this.bidSide.levels(n);
  }
  asks(n?: number): Level[] {
    return this.askSide.levels(n);
  }

  toJSON(n?: number): { symbol: string; seq: number; bids: [string, string][]; asks: [string, string][] } {
    const fmt = (l: Level): [string, string] => [formatScaled(l[0], this.pxDecimals), formatScaled(l[1], this.qtyDecimals)];
    return { symbol: this.symbol, seq: this.seq, bids: this.bids(n).map(fmt), asks: this.asks(n).map(fmt) };
  }

  checksum(): number {
    const b = this.bidSide;
    const a = this.askSide;
    return bookChecksum(this.depth, b.px, b.qty, b.length, a.px, a.qty, a.length);
  }

  get synced(): boolean {
    return this.valid && !this.awaiting;
  }

  /** A snapshot is now expected (a resubscribe was sent). Deltas that continue `seq` still apply. */
  desync(): void {
    this.awaiting = true;
  }

  /** The server recovered the stream from `seq`: the deltas that follow continue the book. */
  resumeOk(): void {
    if (this.valid) this.awaiting = false;
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
  apply(r: BookRecord): ApplyResult {
    if (r.kind === 1) {
      this.bidSide.replace(r.bids);
      this.askSide.replace(r.asks);
    } else {
      if (!this.valid || r.seq !== this.seq + 1) {
        if (this.awaiting || !this.valid) return "ignored";
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
