//! The decoder's fast path: a strict single-pass scanner for the feed's hot messages
//! (`l2update`, `trade`, `heartbeat`), with no tape and no string copies.
//!
//! It is a *recogniser* of a conservative subset of JSON, not a second JSON parser with its
//! own error semantics: it either returns the fully decoded message, or `None`, meaning "not
//! decided here", and the caller hands the untouched message to simd-json's generic path,
//! which produces the authoritative result or error. So the scanner must never accept a
//! message that simd-json would reject or read differently; every construct it is unsure of
//! makes it give up:
//!
//! - strings: accepted only without escapes, control characters or non-ASCII bytes (so their
//!   raw bytes are their value, and trivially valid UTF-8);
//! - numbers: known integer fields only as plain digits up to `i64::MAX` without leading
//!   zeros; numbers of unknown fields as `-?(0|[1-9]d*)(.d+)?` with at most 18 digits per part
//!   and no exponent;
//! - structure: one object, whitespace (space, tab, CR, LF) anywhere JSON allows it, nesting
//!   of unknown values at most [`MAX_NESTING`] deep, nothing but whitespace after it;
//! - semantics: a duplicated known field, a missing or mistyped field, an unknown symbol or
//!   type, or a bad decimal all give up (the generic path reports them).
//!
//! Snapshots and `symbols` messages are rare and always take the generic path.

use super::decode::Change;
use crate::book::Side;
use crate::wire::{Trade, parse_decimal};

/// Deepest nesting of arrays/objects in a value the scanner skips.
const MAX_NESTING: usize = 16;

/// A message the scanner decoded completely.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scanned<'m> {
    /// An `l2update`; its changes were written to the caller's vector.
    Update { symbol: &'m [u8], seq: u64, ts: u64 },
    /// A `trade`, with price and quantity still as decimal text (the scale is the symbol's).
    Trade {
        symbol: &'m [u8],
        ts: u64,
        trade_id: u64,
        price: &'m [u8],
        qty: &'m [u8],
        side: Side,
    },
    /// A `heartbeat`.
    Heartbeat { symbol: &'m [u8], seq: u64, ts: u64 },
}

/// An `l2update` change as text: side and the two decimal strings (byte ranges of the message).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RawChange {
    side: u8,
    px: (u32, u32),
    qty: (u32, u32),
}

/// The value of a known field.
#[derive(Clone, Copy)]
enum Val<'m> {
    Str(&'m [u8]),
    UInt(u64),
    Changes,
    Other,
}

#[derive(Default)]
struct Fields<'m> {
    ty: Option<Val<'m>>,
    symbol: Option<Val<'m>>,
    symbols: Option<Val<'m>>,
    seq: Option<Val<'m>>,
    ts: Option<Val<'m>>,
    bids: Option<Val<'m>>,
    asks: Option<Val<'m>>,
    changes: Option<Val<'m>>,
    trade_id: Option<Val<'m>>,
    price: Option<Val<'m>>,
    qty: Option<Val<'m>>,
    side: Option<Val<'m>>,
}

/// Scans `msg`. On `Some(Update)`, `raw` holds the update's changes as text, in order;
/// [`scale_changes`] turns them into [`Change`]s.
pub(super) fn scan<'m>(msg: &'m [u8], raw: &mut Vec<RawChange>) -> Option<Scanned<'m>> {
    let mut c = Cursor { b: msg, i: 0 };
    let mut f = Fields::default();
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek()? == b'}' {
        return None;
    }
    loop {
        let key = c.simple_str()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        let slot = match key {
            b"type" => &mut f.ty,
            b"symbol" => &mut f.symbol,
            b"symbols" => &mut f.symbols,
            b"seq" => &mut f.seq,
            b"ts" => &mut f.ts,
            b"bids" => &mut f.bids,
            b"asks" => &mut f.asks,
            b"changes" => &mut f.changes,
            b"trade_id" => &mut f.trade_id,
            b"price" => &mut f.price,
            b"qty" => &mut f.qty,
            b"side" => &mut f.side,
            _ => {
                c.skip_value(0)?;
                c.ws();
                if c.next_member()? {
                    continue;
                }
                break;
            }
        };
        if slot.is_some() {
            return None;
        }
        let v = match c.peek()? {
            b'"' => Val::Str(c.simple_str()?),
            b'0'..=b'9' => Val::UInt(c.uint()?),
            b'[' if key == b"changes" => {
                c.changes(raw)?;
                Val::Changes
            }
            _ => {
                c.skip_value(0)?;
                Val::Other
            }
        };
        *slot = Some(v);
        c.ws();
        if !c.next_member()? {
            break;
        }
    }
    c.ws();
    if c.i != msg.len() {
        return None;
    }
    let ty = str_of(f.ty?)?;
    let symbol = str_of(f.symbol?)?;
    match ty {
        b"l2update" => {
            if !matches!(f.changes?, Val::Changes) {
                return None;
            }
            Some(Scanned::Update {
                symbol,
                seq: uint_of(f.seq?)?,
                ts: uint_of(f.ts?)?,
            })
        }
        b"trade" => Some(Scanned::Trade {
            symbol,
            ts: uint_of(f.ts?)?,
            price: str_of(f.price?)?,
            qty: str_of(f.qty?)?,
            trade_id: uint_of(f.trade_id?)?,
            side: side(str_of(f.side?)?)?,
        }),
        b"heartbeat" => Some(Scanned::Heartbeat {
            symbol,
            seq: uint_of(f.seq?)?,
            ts: uint_of(f.ts?)?,
        }),
        _ => None,
    }
}

/// Scales the changes [`scan`] found in `msg` into `out` (cleared first); `None` on a bad
/// decimal.
pub(super) fn scale_changes(
    msg: &[u8],
    raw: &[RawChange],
    px_dec: u8,
    qty_dec: u8,
    out: &mut Vec<Change>,
) -> Option<()> {
    out.clear();
    for r in raw {
        let px = msg.get(r.px.0 as usize..r.px.1 as usize)?;
        let qty = msg.get(r.qty.0 as usize..r.qty.1 as usize)?;
        out.push(Change {
            side: if r.side == 0 { Side::Bid } else { Side::Ask },
            px: parse_decimal(px, px_dec).ok()?,
            qty: parse_decimal(qty, qty_dec).ok()?,
        });
    }
    Some(())
}

/// Scales a trade's decimal strings.
pub(super) fn scale_trade(
    price: &[u8],
    qty: &[u8],
    trade_id: u64,
    side: Side,
    px_dec: u8,
    qty_dec: u8,
) -> Option<Trade> {
    Some(Trade {
        px: parse_decimal(price, px_dec).ok()?,
        qty: parse_decimal(qty, qty_dec).ok()?,
        trade_id,
        taker_side: side,
    })
}

fn str_of(v: Val<'_>) -> Option<&[u8]> {
    match v {
        Val::Str(s) => Some(s),
        _ => None,
    }
}

fn uint_of(v: Val<'_>) -> Option<u64> {
    match v {
        Val::UInt(n) => Some(n),
        _ => None,
    }
}

fn side(s: &[u8]) -> Option<Side> {
    match s {
        b"buy" => Some(Side::Bid),
        b"sell" => Some(Side::Ask),
        _ => None,
    }
}

struct Cursor<'m> {
    b: &'m [u8],
    i: usize,
}

impl<'m> Cursor<'m> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips JSON whitespace.
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// After a member of an object: `,` (true, whitespace skipped) or `}` (false).
    #[inline]
    fn next_member(&mut self) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.ws();
                Some(true)
            }
            b'}' => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A string without escapes, control characters or non-ASCII bytes: its raw content.
    #[inline]
    fn simple_str(&mut self) -> Option<&'m [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = self.b.get(start..)?;
        let len = rest
            .iter()
            .position(|&b| !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\')?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        Some(&rest[..len])
    }

    /// Digits as a `u64`: 1 to 19 of them, no leading zero (but `0`), at most `i64::MAX`, not
    /// followed by a fraction or exponent (then simd-json reads it as an integer too).
    #[inline]
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.i - start == 19 {
                return None;
            }
            n = n * 10 + u64::from(d - b'0');
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 || (len > 1 && self.b[start] == b'0') || n > i64::MAX as u64 {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    /// `-?(0|[1-9]d*)(.d+)?`, at most 18 digits per part, no exponent.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let first = self.peek()?;
        let int = self.digits()?;
        if int > 1 && first == b'0' {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        match self.peek() {
            Some(b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    /// 1 to 18 digits; how many.
    fn digits(&mut self) -> Option<usize> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        let n = self.i - start;
        (1..=18).contains(&n).then_some(n)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Validates and skips one value (nested at most [`MAX_NESTING`] deep).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.simple_str().map(drop),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                if depth >= MAX_NESTING {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= MAX_NESTING {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.simple_str()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    if !self.next_member()? {
                        return Some(());
                    }
                }
            }
            _ => None,
        }
    }

    /// `[["buy"|"sell","px","qty"],...]` into `raw` (cleared first).
    fn changes(&mut self, raw: &mut Vec<RawChange>) -> Option<()> {
        raw.clear();
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.eat(b'[')?;
            self.ws();
            let side = match self.simple_str()? {
                b"buy" => 0,
                b"sell" => 1,
                _ => return None,
            };
            self.ws();
            self.eat(b',')?;
            self.ws();
            let px = self.str_range()?;
            self.ws();
            self.eat(b',')?;
            self.ws();
            let qty = self.str_range()?;
            self.ws();
            self.eat(b']')?;
            raw.push(RawChange { side, px, qty });
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A simple string's content as a byte range of the message.
    fn str_range(&mut self) -> Option<(u32, u32)> {
        let s = self.simple_str()?.len();
        let end = u32::try_from(self.i - 1).ok()?;
        Some((end - u32::try_from(s).ok()?, end))
    }
}
