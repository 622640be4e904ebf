//! The decoder's fast path: a scanner for the feed's hot messages (`l2update`, `trade`,
//! `heartbeat`) in exactly the form the feed sends them, with no tape and no copy.
//!
//! It is a *recogniser*, not a second JSON parser: it either returns the fully decoded message,
//! or `None`, meaning "not certain", and the caller hands the untouched message to simd-json,
//! which decides it (value or error). The scanner never refuses a message, so every error and
//! every malformed-message count comes from simd-json's path, as before. What it accepts is a
//! set of fixed templates, byte for byte (`docs/protocol.md`'s field order, no whitespace):
//!
//! ```text
//! {"type":"l2update","symbol":"NAME","seq":UINT,"ts":UINT,"changes":[CHANGE,...]}
//!     CHANGE = ["buy"|"sell","DEC","DEC"]      (the list may be empty)
//! {"type":"trade","symbol":"NAME","trade_id":UINT,"ts":UINT,"price":"DEC","qty":"DEC","side":"buy"|"sell"}
//! {"type":"heartbeat","symbol":"NAME","seq":UINT,"ts":UINT}
//! ```
//!
//! - `NAME`: printable ASCII without `"` or `\` (its bytes are its value), a symbol the decoder
//!   knows;
//! - `UINT`: 1 to 19 digits, no leading zero (but `0` itself), at most `i64::MAX`;
//! - `DEC`: `-`? digits (`.` digits)?, a valid decimal for the symbol's decimals (as
//!   [`parse_decimal`] reads it; anything it refuses falls back).
//!
//! Anything else falls back: other field orders, unknown or repeated keys, whitespace anywhere,
//! escapes, non-ASCII bytes, exponents, fractions or signs in integers, leading zeros, bytes after
//! the closing brace, unknown symbols, bad sides or decimals, other message types. On those
//! templates simd-json reads the same values (the differential fuzz target
//! `engine/fuzz/fuzz_targets/feed_scan_diff.rs` and the decoder's tests hold the two to it).

use crate::book::Side;
use crate::feed::decode::Change;
use crate::wire::{Trade, parse_decimal};

/// A symbol resolved by the caller: sid and the scales of its prices and quantities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sym {
    pub(crate) sid: u32,
    pub(crate) px_dec: u8,
    pub(crate) qty_dec: u8,
}

/// A message the scanner decoded completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// An `l2update`; its changes are in the caller's vector.
    Update { sid: u32, seq: u64, ts: u64 },
    /// A `trade`, scaled.
    Trade { sid: u32, ts: u64, trade: Trade },
    /// A `heartbeat`.
    Heartbeat { sid: u32, seq: u64, ts: u64 },
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

/// Scans `msg`, resolving its symbol name with `lookup`. On `Some(Update)`, `changes` holds the
/// update's changes, scaled, in order; it is cleared first and may hold anything after `None`.
#[inline]
pub(crate) fn scan(
    msg: &[u8],
    lookup: impl FnOnce(&[u8]) -> Option<Sym>,
    changes: &mut Vec<Change>,
) -> Option<Scanned> {
    let rest = msg.strip_prefix(b"{\"type\":\"")?;
    if let Some(rest) = rest.strip_prefix(b"l2update\",\"symbol\":\"") {
        let mut c = Cursor::new(rest);
        let sym = lookup(c.name()?)?;
        c.lit(b"\",\"seq\":")?;
        let seq = c.uint()?;
        c.lit(b",\"ts\":")?;
        let ts = c.uint()?;
        c.lit(b",\"changes\":[")?;
        c.changes(sym, changes)?;
        c.end(b"}")?;
        Some(Scanned::Update {
            sid: sym.sid,
            seq,
            ts,
        })
    } else if let Some(rest) = rest.strip_prefix(b"trade\",\"symbol\":\"") {
        let mut c = Cursor::new(rest);
        let sym = lookup(c.name()?)?;
        c.lit(b"\",\"trade_id\":")?;
        let trade_id = c.uint()?;
        c.lit(b",\"ts\":")?;
        let ts = c.uint()?;
        c.lit(b",\"price\":\"")?;
        let px = c.decimal(sym.px_dec)?;
        c.lit(b"\",\"qty\":\"")?;
        let qty = c.decimal(sym.qty_dec)?;
        c.lit(b"\",\"side\":\"")?;
        let taker_side = c.side()?;
        c.end(b"\"}")?;
        Some(Scanned::Trade {
            sid: sym.sid,
            ts,
            trade: Trade {
                px,
                qty,
                trade_id,
                taker_side,
            },
        })
    } else if let Some(rest) = rest.strip_prefix(b"heartbeat\",\"symbol\":\"") {
        let mut c = Cursor::new(rest);
        let sym = lookup(c.name()?)?;
        c.lit(b"\",\"seq\":")?;
        let seq = c.uint()?;
        c.lit(b",\"ts\":")?;
        let ts = c.uint()?;
        c.end(b"}")?;
        Some(Scanned::Heartbeat {
            sid: sym.sid,
            seq,
            ts,
        })
    } else {
        None
    }
}

struct Cursor<'m> {
    b: &'m [u8],
    i: usize,
}

impl<'m> Cursor<'m> {
    #[inline]
    fn new(b: &'m [u8]) -> Self {
        Self { b, i: 0 }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The bytes `want`, exactly.
    #[inline]
    fn lit(&mut self, want: &[u8]) -> Option<()> {
        let end = self.i + want.len();
        (self.b.get(self.i..end)? == want).then(|| self.i = end)
    }

    /// The bytes `want`, and then the end of the message.
    #[inline]
    fn end(&mut self, want: &[u8]) -> Option<()> {
        (self.b.get(self.i..)? == want).then_some(())
    }

    /// A string's content up to (not including) its closing quote: printable ASCII without `\`,
    /// so that its raw bytes are its value.
    #[inline]
    fn name(&mut self) -> Option<&'m [u8]> {
        let rest = self.b.get(self.i..)?;
        let len = rest
            .iter()
            .position(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')?;
        if rest[len] != b'"' {
            return None;
        }
        self.i += len;
        Some(&rest[..len])
    }

    /// `buy` or `sell`, and the closing quote is next.
    #[inline]
    fn side(&mut self) -> Option<Side> {
        let rest = self.b.get(self.i..)?;
        if rest.starts_with(b"buy\"") {
            self.i += 3;
            Some(Side::Bid)
        } else if rest.starts_with(b"sell\"") {
            self.i += 4;
            Some(Side::Ask)
        } else {
            None
        }
    }

    /// Digits as a `u64`: 1 to 19 of them, no leading zero (but `0`), at most `i64::MAX`. The
    /// caller's next literal makes sure no fraction or exponent follows.
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
        Some(n)
    }

    /// The value of the next eight bytes if they are all ASCII digits (SWAR).
    #[inline]
    fn eight_digits(&self) -> Option<u64> {
        const LO: u64 = 0x0f0f_0f0f_0f0f_0f0f;
        const HI: u64 = 0xf0f0_f0f0_f0f0_f0f0;
        const THREE: u64 = 0x3030_3030_3030_3030;
        const SIX: u64 = 0x0606_0606_0606_0606;
        let bytes: [u8; 8] = self.b.get(self.i..self.i + 8)?.try_into().ok()?;
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

    /// A decimal string's content, scaled by `10^decimals`, up to its closing quote (not
    /// consumed). The usual form (`-?d+(.d+)?`, at most 19 digits once scaled, no more
    /// fraction digits than `decimals`) in one pass; other strings made only of digits, `-` and
    /// `.` go to [`parse_decimal`]; `None` for anything else or any error.
    #[inline]
    fn decimal(&mut self, decimals: u8) -> Option<i64> {
        let start = self.i;
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
        let dot = self.peek() == Some(b'.');
        if dot {
            self.i += 1;
            let frac_start = self.i;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                mag = mag.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                self.i += 1;
            }
            frac_len = self.i - frac_start;
        }
        let scale = POW10.get(usize::from(decimals).wrapping_sub(frac_len));
        match (scale, self.peek()) {
            (Some(&scale), Some(b'"'))
                if int_len > 0
                    && (frac_len > 0 || !dot)
                    && int_len + usize::from(decimals) <= 19 =>
            {
                // At most 19 digits once scaled: below 10^19, no u64 overflow.
                let mag = mag * scale;
                if neg {
                    0i64.checked_sub_unsigned(mag)
                } else {
                    i64::try_from(mag).ok()
                }
            }
            _ => self.decimal_slow(start, decimals),
        }
    }

    /// The general case of [`decimal`](Self::decimal): the string from `start` to its closing
    /// quote, if it holds only digits, `-` and `.`, by [`parse_decimal`].
    #[cold]
    fn decimal_slow(&mut self, start: usize, decimals: u8) -> Option<i64> {
        let rest = self.b.get(start..)?;
        let len = rest
            .iter()
            .position(|&b| !matches!(b, b'0'..=b'9' | b'-' | b'.'))?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len;
        parse_decimal(&rest[..len], decimals).ok()
    }

    /// The changes after `"changes":[`, up to and including the closing `]`, scaled, into
    /// `out` (cleared first).
    #[inline]
    fn changes(&mut self, sym: Sym, out: &mut Vec<Change>) -> Option<()> {
        out.clear();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.lit(b"[\"")?;
            let side = self.side()?;
            self.lit(b"\",\"")?;
            let px = self.decimal(sym.px_dec)?;
            self.lit(b"\",\"")?;
            let qty = self.decimal(sym.qty_dec)?;
            self.lit(b"\"]")?;
            out.push(Change { side, px, qty });
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}
