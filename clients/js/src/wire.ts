// The tickcast wire format (docs/protocol.md §1.2, §1.4; shared/protocol.md §3.2): binary batches
// decoded with DataView, JSON batches, and the scaled-integer decimal strings of format=json.
//
// Prices and quantities are integers scaled by 10^px_decimals / 10^qty_decimals. They are held
// as JavaScript numbers: exact while |value| < 2^53 (9.007e15 scaled units), which covers every
// instrument tickcast serves. Timestamps and trade ids are u64 and are decoded as BigInt;
// sequence numbers are numbers (exact below 2^53).

/** Record kinds. */
export const KIND_SNAPSHOT = 1;
export const KIND_DELTA = 2;
export const KIND_TRADE = 3;
export const KIND_STATUS = 4;

/** Record flag bit 0: a snapshot that replaces the client's book. */
export const FLAG_SNAPSHOT = 1;
/** Record flag bit 1 (protocol 1.1): the book body carries a CRC-32 of the book after applying. */
export const FLAG_CHECKSUM = 2;

export const BATCH_HEADER_BYTES = 8;
export const RECORD_HEADER_BYTES = 32;
export const BOOK_BODY_HEADER_BYTES = 8;
export const LEVEL_BYTES = 16;
export const TRADE_BODY_BYTES = 32;
export const STATUS_BODY_BYTES = 8;

/** Status codes carried by kind-4 records. */
export const STATUS_FEED_STALE = 1;
export const STATUS_FEED_RESUMED = 2;
export const STATUS_SLOW_CONSUMER = 3;

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
export class DecodeError extends Error {
  override name = "DecodeError";
}

const TWO32 = 4294967296;

/** i64 little-endian at `off` as a number (exact below 2^53). */
export function readI64(dv: DataView, off: number): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getInt32(off + 4, true);
  return hi * TWO32 + lo;
}

/** u64 little-endian at `off` as a number (exact below 2^53). */
export function readU64(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) * TWO32 + dv.getUint32(off, true);
}

function readLevels(dv: DataView, off: number, count: number): number[] {
  const out = new Array<number>(count * 2);
  for (let i = 0; i < count; i++) {
    out[2 * i] = readI64(dv, off);
    out[2 * i + 1] = readI64(dv, off + 8);
    off += LEVEL_BYTES;
  }
  return out;
}

function asDataView(data: ArrayBuffer | ArrayBufferView): DataView {
  if (data instanceof DataView) return data;
  if (ArrayBuffer.isView(data)) return new DataView(data.buffer, data.byteOffset, data.byteLength);
  return new DataView(data);
}

/**
 * Decodes one binary batch and calls `onRecord` for each record, in order. Records of unknown
 * kinds are skipped by their length (forward compatibility). Throws {@link DecodeError} on a
 * malformed batch.
 */
export function decodeBatch(
  data: ArrayBuffer | ArrayBufferView,
  onRecord: (r: WireRecord) => void,
): number {
  const dv = asDataView(data);
  const len = dv.byteLength;
  if (len < BATCH_HEADER_BYTES) throw new DecodeError(`batch of ${len} bytes is shorter than its header`);
  const version = dv.getUint8(0);
  if (version !== 1) throw new DecodeError(`unsupported batch version ${version}`);
  const count = dv.getUint16(2, true);
  let off = BATCH_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (off + RECORD_HEADER_BYTES > len) throw new DecodeError(`record ${i} header past the end of the batch`);
    const rlen = dv.getUint16(off, true);
    if (rlen < RECORD_HEADER_BYTES || off + rlen > len) throw new DecodeError(`record ${i} has a bad length ${rlen}`);
    const kind = dv.getUint8(off + 2);
    const flags = dv.getUint8(off + 3);
    const sid = dv.getUint32(off + 4, true);
    const seq = readU64(dv, off + 8);
    const body = off + RECORD_HEADER_BYTES;
    const blen = rlen - RECORD_HEADER_BYTES;
    if (kind === KIND_SNAPSHOT || kind === KIND_DELTA) {
      if (blen < BOOK_BODY_HEADER_BYTES) throw new DecodeError(`book record ${i} body too short`);
      const nb = dv.getUint16(body, true);
      const na = dv.getUint16(body + 2, true);
      if (BOOK_BODY_HEADER_BYTES + (nb + na) * LEVEL_BYTES > blen) {
        throw new DecodeError(`book record ${i}: ${nb}+${na} levels do not fit ${blen} bytes`);
      }
      const lv = body + BOOK_BODY_HEADER_BYTES;
      onRecord({
        kind,
        flags,
        sid,
        symbol: "",
        seq,
        exchTs: dv.getBigUint64(off + 16, true),
        recvTs: dv.getBigUint64(off + 24, true),
        bids: readLevels(dv, lv, nb),
        asks: readLevels(dv, lv + nb * LEVEL_BYTES, na),
        checksum: flags & FLAG_CHECKSUM ? dv.getUint32(body + 4, true) : undefined,
      });
    } else if (kind === KIND_TRADE) {
      if (blen < 25) throw new DecodeError(`trade record ${i} body too short`);
      onRecord({
        kind,
        flags,
        sid,
        symbol: "",
        seq,
        exchTs: dv.getBigUint64(off + 16, true),
        recvTs: dv.getBigUint64(off + 24, true),
        price: readI64(dv, body),
        qty: readI64(dv, body + 8),
        tradeId: dv.getBigUint64(body + 16, true),
        side: dv.getUint8(body + 24) === 0 ? "buy" : "sell",
      });
    } else if (kind === KIND_STATUS) {
      if (blen < 2) throw new DecodeError(`status record ${i} body too short`);
      onRecord({
        kind,
        flags,
        sid,
        symbol: "",
        seq,
        exchTs: dv.getBigUint64(off + 16, true),
        recvTs: dv.getBigUint64(off + 24, true),
        code: dv.getUint16(body, true),
      });
    }
    off += rlen;
  }
  return count;
}

// ---- decimals ----------------------------------------------------------------------------

/**
 * Formats a scaled integer as the server's JSON does: `-`, the integer part, and when
 * `decimals > 0` a point and exactly `decimals` fraction digits. `(6500010, 2)` → `"65000.10"`.
 */
export function formatScaled(value: number | bigint, decimals: number): string {
  const neg = value < 0;
  let digits = (neg ? -value : value).toString();
  if (decimals > 0) {
    if (digits.length <= decimals) digits = "0".repeat(decimals - digits.length + 1) + digits;
    digits = digits.slice(0, digits.length - decimals) + "." + digits.slice(digits.length - decimals);
  }
  return neg ? "-" + digits : digits;
}

/**
 * Parses a decimal string into an integer scaled by 10^decimals. Extra fraction digits must be
 * zeros. Throws {@link DecodeError} on anything else.
 */
export function parseScaled(s: string, decimals: number): number {
  let neg = false;
  let i = 0;
  if (s.charCodeAt(0) === 45 /* - */) {
    neg = true;
    i = 1;
  }
  let v = 0;
  let digits = 0;
  let frac = -1;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (frac >= 0 || digits === 0) throw new DecodeError(`bad decimal ${JSON.stringify(s)}`);
      frac = 0;
      continue;
    }
    const d = c - 48;
    if (d < 0 || d > 9) throw new DecodeError(`bad decimal ${JSON.stringify(s)}`);
    digits++;
    if (frac >= 0) {
      if (frac >= decimals) {
        if (d !== 0) throw new DecodeError(`${JSON.stringify(s)} has more than ${decimals} decimals`);
        continue;
      }
      frac++;
    }
    v = v * 10 + d;
  }
  if (digits === 0 || frac === 0) throw new DecodeError(`bad decimal ${JSON.stringify(s)}`);
  for (let f = frac < 0 ? 0 : frac; f < decimals; f++) v *= 10;
  return neg ? -v : v;
}

// ---- JSON records ------------------------------------------------------------------------

/** Decimals of a symbol, from the subscribe reply. */
export interface Decimals {
  pxDecimals: number;
  qtyDecimals: number;
}

const KINDS: Record<string, number> = { snapshot: 1, delta: 2, trade: 3, status: 4 };

function jsonLevels(levels: unknown, d: Decimals): number[] {
  if (!Array.isArray(levels)) return [];
  const out = new Array<number>(levels.length * 2);
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i] as [string, string];
    out[2 * i] = parseScaled(l[0], d.pxDecimals);
    out[2 * i + 1] = parseScaled(l[1], d.qtyDecimals);
  }
  return out;
}

function big(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(Math.trunc(v));
  if (typeof v === "string" && v !== "") return BigInt(v);
  return 0n;
}

/**
 * Parses the text of a `format=json` batch (or one SSE `data:` record) into records. u64
 * timestamps are recovered exactly from the text (JSON.parse alone would round them).
 * `decimals(symbol)` gives the scale of a symbol, or `undefined` for one not subscribed (its
 * records are skipped).
 */
export function decodeJsonRecords(
  text: string,
  decimals: (symbol: string) => Decimals | undefined,
  onRecord: (r: WireRecord) => void,
): number {
  // Quote the big integers so that JSON.parse keeps every digit.
  const quoted = text.replace(/"(exch_ts|recv_ts|trade_id)":(\d+)/g, '"$1":"$2"');
  let parsed: unknown;
  try {
    parsed = JSON.parse(quoted);
  } catch (e) {
    throw new DecodeError(`bad JSON batch: ${(e as Error).message}`);
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  let n = 0;
  for (const o of list as Record<string, unknown>[]) {
    if (o === null || typeof o !== "object") throw new DecodeError("a JSON record is not an object");
    const kind = KINDS[o.kind as string];
    const symbol = String(o.symbol ?? "");
    const d = decimals(symbol);
    if (kind === undefined || d === undefined) continue;
    const sid = Number(o.sid ?? 0);
    const seq = Number(o.seq ?? 0);
    const exchTs = big(o.exch_ts);
    const recvTs = big(o.recv_ts);
    n++;
    if (kind === KIND_SNAPSHOT || kind === KIND_DELTA) {
      onRecord({
        kind: kind as 1 | 2,
        flags: kind === KIND_SNAPSHOT ? FLAG_SNAPSHOT : 0,
        sid,
        symbol,
        seq,
        exchTs,
        recvTs,
        bids: jsonLevels(o.bids, d),
        asks: jsonLevels(o.asks, d),
        checksum: typeof o.crc === "number" ? o.crc >>> 0 : undefined,
      });
    } else if (kind === KIND_TRADE) {
      onRecord({
        kind: 3,
        flags: 0,
        sid,
        symbol,
        seq,
        exchTs,
        recvTs,
        price: parseScaled(String(o.price), d.pxDecimals),
        qty: parseScaled(String(o.qty), d.qtyDecimals),
        tradeId: big(o.trade_id),
        side: o.side === "sell" ? "sell" : "buy",
      });
    } else {
      onRecord({ kind: 4, flags: 0, sid, symbol, seq, exchTs, recvTs, code: Number(o.code ?? 0) });
    }
  }
  return n;
}

// ---- encoding (test fixtures, fake servers, benchmarks) -----------------------------------

function writeI64(dv: DataView, off: number, v: number): void {
  dv.setBigInt64(off, BigInt(v), true);
}

/** Encodes records into one binary batch (the inverse of {@link decodeBatch}). */
export function encodeBatch(records: readonly WireRecord[]): Uint8Array {
  let size = BATCH_HEADER_BYTES;
  for (const r of records) size += recordSize(r);
  const buf = new Uint8Array(size);
  const dv = new DataView(buf.buffer);
  dv.setUint8(0, 1);
  dv.setUint16(2, records.length, true);
  let off = BATCH_HEADER_BYTES;
  for (const r of records) {
    const rlen = recordSize(r);
    dv.setUint16(off, rlen, true);
    dv.setUint8(off + 2, r.kind);
    dv.setUint8(off + 3, r.flags);
    dv.setUint32(off + 4, r.sid, true);
    dv.setBigUint64(off + 8, BigInt(r.seq), true);
    dv.setBigUint64(off + 16, r.exchTs, true);
    dv.setBigUint64(off + 24, r.recvTs, true);
    const body = off + RECORD_HEADER_BYTES;
    if (r.kind === KIND_SNAPSHOT || r.kind === KIND_DELTA) {
      const nb = r.bids.length / 2;
      const na = r.asks.length / 2;
      dv.setUint16(body, nb, true);
      dv.setUint16(body + 2, na, true);
      dv.setUint32(body + 4, r.checksum ?? 0, true);
      let p = body + BOOK_BODY_HEADER_BYTES;
      for (const side of [r.bids, r.asks]) {
        for (let i = 0; i < side.length; i += 2) {
          writeI64(dv, p, side[i]!);
          writeI64(dv, p + 8, side[i + 1]!);
          p += LEVEL_BYTES;
        }
      }
    } else if (r.kind === KIND_TRADE) {
      writeI64(dv, body, r.price);
      writeI64(dv, body + 8, r.qty);
      dv.setBigUint64(body + 16, r.tradeId, true);
      dv.setUint8(body + 24, r.side === "buy" ? 0 : 1);
    } else {
      dv.setUint16(body, (r as StatusRecord).code, true);
    }
    off += rlen;
  }
  return buf;
}

function recordSize(r: WireRecord): number {
  if (r.kind === KIND_SNAPSHOT || r.kind === KIND_DELTA) {
    return RECORD_HEADER_BYTES + BOOK_BODY_HEADER_BYTES + ((r.bids.length + r.asks.length) / 2) * LEVEL_BYTES;
  }
  return RECORD_HEADER_BYTES + (r.kind === KIND_TRADE ? TRADE_BODY_BYTES : STATUS_BODY_BYTES);
}

/** Encodes one record as the server's format=json object text (`crc` when it has a checksum). */
export function encodeJsonRecord(r: WireRecord, symbol: string, d: Decimals): string {
  const head = `{"kind":"${["", "snapshot", "delta", "trade", "status"][r.kind]}","symbol":${JSON.stringify(symbol)},"sid":${r.sid},"seq":${r.seq},"exch_ts":${r.exchTs},"recv_ts":${r.recvTs}`;
  if (r.kind === KIND_SNAPSHOT || r.kind === KIND_DELTA) {
    const lv = (a: number[]) => {
      const parts: string[] = [];
      for (let i = 0; i < a.length; i += 2) {
        parts.push(`["${formatScaled(a[i]!, d.pxDecimals)}","${formatScaled(a[i + 1]!, d.qtyDecimals)}"]`);
      }
      return `[${parts.join(",")}]`;
    };
    const crc = r.checksum !== undefined ? `,"crc":${r.checksum}` : "";
    return `${head},"bids":${lv(r.bids)},"asks":${lv(r.asks)}${crc}}`;
  }
  if (r.kind === KIND_TRADE) {
    return `${head},"price":"${formatScaled(r.price, d.pxDecimals)}","qty":"${formatScaled(r.qty, d.qtyDecimals)}","trade_id":${r.tradeId},"side":"${r.side}"}`;
  }
  return `${head},"code":${(r as StatusRecord).code}}`;
}
