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
//!   type, or a bad decimal all give up (the generic path reports them);
//! - order: the `symbol` must come before `changes` (as every feed sends it), so that the
//!   changes' decimal strings are scaled to integers while they are scanned, in one pass.
//!
//! Snapshots and `symbols` messages are rare and always take the generic path.

use super::decode::Change;
use crate::book::Side;
use crate::wire::{Trade, parse_decimal};

/// A symbol resolved by the caller: sid and the scales of its prices and quantities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sym {
    pub(super) sid: u32,
    pub(super) px_dec: u8,
    pub(super) qty_dec: u8,
}

/// Deepest nesting of arrays/objects in a value the scanner skips.
const MAX_NESTING: usize = 16;

/// A message the scanner decoded completely.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scanned {
    /// An `l2update`; its changes were written to the caller's vector.
    Update { sym: Sym, seq: u64, ts: u64 },
    /// A `trade`, scaled.
    Trade { sym: Sym, ts: u64, trade: Trade },
    /// A `heartbeat`.
    Heartbeat { sym: Sym, seq: u64, ts: u64 },
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

/// Scans `msg`, resolving its symbol name with `lookup`. On `Some(Update)`, `changes` holds the
/// update's changes, scaled, in order (it is cleared first, and may hold anything after `None`).
pub(super) fn scan(
    msg: &[u8],
    lookup: impl Fn(&[u8]) -> Option<Sym>,
    changes: &mut Vec<Change>,
) -> Option<Scanned> {
    let mut c = Cursor { b: msg, i: 0 };
    let mut f = Fields::default();
    let mut sym = None;
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
            b'"' => {
                let s = c.simple_str()?;
                if key == b"symbol" {
                    sym = Some(lookup(s)?);
                }
                Val::Str(s)
            }
            b'0'..=b'9' => Val::UInt(c.uint()?),
            b'[' if key == b"changes" => {
                let s = sym?;
                c.changes(s.px_dec, s.qty_dec, changes)?;
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
    let sym = sym?;
    match ty {
        b"l2update" => {
            if !matches!(f.changes?, Val::Changes) {
                return None;
            }
            Some(Scanned::Update {
                sym,
                seq: uint_of(f.seq?)?,
                ts: uint_of(f.ts?)?,
            })
        }
        b"trade" => {
            let ts = uint_of(f.ts?)?;
            let trade = Trade {
                px: parse_decimal(str_of(f.price?)?, sym.px_dec).ok()?,
                qty: parse_decimal(str_of(f.qty?)?, sym.qty_dec).ok()?,
                trade_id: uint_of(f.trade_id?)?,
                taker_side: side(str_of(f.side?)?)?,
            };
            Some(Scanned::Trade { sym, ts, trade })
        }
        b"heartbeat" => Some(Scanned::Heartbeat {
            sym,
            seq: uint_of(f.seq?)?,
            ts: uint_of(f.ts?)?,
        }),
        _ => None,
    }
}

/// Powers of ten that fit a `u64`.
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

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
        // Eight digits at a time while they last (timestamps have 19), then one by one.
        while self.i - start <= 8 {
            let Some(eight) = self.eight_digits() else {
                break;
            };
            n = n * 100_000_000 + eight;
            self.i += 8;
        }
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

    /// The value of the next eight bytes if they are all ASCII digits (SWAR).
    #[inline]
    fn eight_digits(&self) -> Option<u64> {
        const LO: u64 = 0x0f0f_0f0f_0f0f_0f0f;
        const HI: u64 = 0xf0f0_f0f0_f0f0_f0f0;
        const THREE: u64 = 0x3030_3030_3030_3030;
        const SIX: u64 = 0x0606_0606_0606_0606;
        let end = self.i.checked_add(8)?;
        let bytes: [u8; 8] = self.b.get(self.i..end)?.try_into().ok()?;
        let x = u64::from_le_bytes(bytes);
        // Every byte is 0x30..=0x39: high nibble 3, and adding 6 does not carry out of it.
        if x & HI != THREE || (x.wrapping_add(SIX) & HI) != THREE {
            return None;
        }
        let d = x & LO;
        // First digit in the lowest byte: combine pairs, quads, then the two halves.
        let d = (d.wrapping_mul(10) + (d >> 8)) & 0x00ff_00ff_00ff_00ff;
        let d = (d.wrapping_mul(100) + (d >> 16)) & 0x0000_ffff_0000_ffff;
        Some((d.wrapping_mul(10_000) + (d >> 32)) & 0xffff_ffff)
    }

    /// A decimal string scaled by `10^decimals`, in one pass for the usual form
    /// (`-?d+(.d+)?`, at most 19 digits after scaling, no more fraction digits than
    /// `decimals`); anything else is read as a string and handed to [`parse_decimal`], which
    /// also decides every error. `None` on any error.
    #[inline]
    fn decimal(&mut self, decimals: u8) -> Option<i64> {
        let start = self.i;
        self.eat(b'"')?;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.i += 1;
        }
        let mut mag: u64 = 0;
        let int_start = self.i;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            mag = mag.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        let int_len = self.i - int_start;
        let mut frac_len = 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let frac_start = self.i;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                mag = mag.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                self.i += 1;
            }
            frac_len = self.i - frac_start;
            if frac_len == 0 {
                return self.decimal_slow(start, decimals);
            }
        }
        let scale = POW10.get(usize::from(decimals).wrapping_sub(frac_len));
        let (Some(&scale), Some(b'"')) = (scale, self.peek()) else {
            return self.decimal_slow(start, decimals);
        };
        if int_len == 0 || int_len + usize::from(decimals) > 19 {
            return self.decimal_slow(start, decimals);
        }
        self.i += 1;
        // At most 19 digits in all (int_len + decimals <= 19): no overflow, as in parse_decimal.
        let mag = mag * scale;
        if neg {
            0i64.checked_sub_unsigned(mag)
        } else {
            i64::try_from(mag).ok()
        }
    }

    /// The general case of [`decimal`](Self::decimal): the string from `start`, by
    /// [`parse_decimal`].
    #[cold]
    fn decimal_slow(&mut self, start: usize, decimals: u8) -> Option<i64> {
        self.i = start;
        parse_decimal(self.simple_str()?, decimals).ok()
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

    /// `[["buy"|"sell","px","qty"],...]` into `out` (cleared first), scaled.
    fn changes(&mut self, px_dec: u8, qty_dec: u8, out: &mut Vec<Change>) -> Option<()> {
        out.clear();
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.eat(b'[')?;
            self.ws();
            let side = side(self.simple_str()?)?;
            self.ws();
            self.eat(b',')?;
            self.ws();
            let px = self.decimal(px_dec)?;
            self.ws();
            self.eat(b',')?;
            self.ws();
            let qty = self.decimal(qty_dec)?;
            self.ws();
            self.eat(b']')?;
            out.push(Change { side, px, qty });
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
}
