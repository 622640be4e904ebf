//! Hand-rolled JSON and decimal formatting for the feed messages.
//!
//! The generator formats every message itself (no serde on the hot path): integers are
//! written digit by digit into the caller's buffer and scaled integers become decimal
//! strings with exactly the symbol's number of decimals. Symbol names are restricted to
//! `[A-Z0-9-]`, so they never need JSON escaping.

/// Powers of ten up to 10^18, indexed by exponent.
const POW10: [u64; 19] = {
    let mut t = [1u64; 19];
    let mut i = 1;
    while i < 19 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Largest number of decimals the formatter supports.
pub(crate) const MAX_DECIMALS: u8 = 18;

/// Appends the decimal digits of `v`.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `v % 10` is below 10, so the narrowing is exact.
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `v` zero-padded on the left to exactly `width` digits (`v < 10^width`).
fn write_u64_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let width = width.min(buf.len());
    let mut i = buf.len();
    while v > 0 && i > buf.len() - width {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[buf.len() - width..]);
}

/// Appends the scaled integer `v` as a decimal with exactly `decimals` fractional digits,
/// e.g. `(6500010, 2)` → `65000.10`, `(1500000, 6)` → `1.500000`, `(42, 0)` → `42`.
pub(crate) fn write_decimal(out: &mut Vec<u8>, v: i64, decimals: u8) {
    if v < 0 {
        out.push(b'-');
    }
    let abs = v.unsigned_abs();
    let d = decimals.min(MAX_DECIMALS);
    if d == 0 {
        write_u64(out, abs);
        return;
    }
    let p = POW10[usize::from(d)];
    write_u64(out, abs / p);
    out.push(b'.');
    write_u64_padded(out, abs % p, usize::from(d));
}

/// Appends `"<decimal>"` (a JSON string holding a decimal).
pub(crate) fn write_decimal_str(out: &mut Vec<u8>, v: i64, decimals: u8) {
    out.push(b'"');
    write_decimal(out, v, decimals);
    out.push(b'"');
}

/// Appends a JSON string for a value known not to need escaping (symbol names, sides).
pub(crate) fn write_plain_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends `[["p","q"],...]` for levels given best first.
pub(crate) fn write_levels<I>(out: &mut Vec<u8>, levels: I, px_decimals: u8, qty_decimals: u8)
where
    I: IntoIterator<Item = (i64, i64)>,
{
    out.push(b'[');
    let mut first = true;
    for (px, qty) in levels {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'[');
        write_decimal_str(out, px, px_decimals);
        out.push(b',');
        write_decimal_str(out, qty, qty_decimals);
        out.push(b']');
    }
    out.push(b']');
}

/// Parses a decimal string with exactly `decimals` fractional digits back into a scaled
/// integer. Used by tests and by anyone checking the wire format; `None` on any deviation.
pub fn parse_decimal(s: &str, decimals: u8) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = if decimals == 0 {
        (body, "")
    } else {
        body.split_once('.')?
    };
    if int_part.is_empty()
        || frac_part.len() != usize::from(decimals)
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = i64::try_from(*POW10.get(usize::from(decimals))?).ok()?;
    let int: i64 = int_part.parse().ok()?;
    let frac: i64 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().ok()?
    };
    let v = int.checked_mul(scale)?.checked_add(frac)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: i64, d: u8) -> String {
        let mut out = Vec::new();
        write_decimal(&mut out, v, d);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn decimals_have_exact_digits() {
        assert_eq!(dec(6_500_010, 2), "65000.10");
        assert_eq!(dec(1_500_000, 6), "1.500000");
        assert_eq!(dec(0, 6), "0.000000");
        assert_eq!(dec(5, 3), "0.005");
        assert_eq!(dec(42, 0), "42");
        assert_eq!(dec(-1_234, 2), "-12.34");
        assert_eq!(dec(i64::MAX, 0), i64::MAX.to_string());
    }

    #[test]
    fn integers_round_trip() {
        for v in [0u64, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    #[test]
    fn parse_inverts_write() {
        for (v, d) in [(6_500_010, 2), (1, 8), (0, 0), (123_456_789, 4), (-77, 3)] {
            assert_eq!(parse_decimal(&dec(v, d), d), Some(v));
        }
        assert_eq!(parse_decimal("1.5", 2), None);
        assert_eq!(parse_decimal("1.500", 2), None);
        assert_eq!(parse_decimal("x.50", 2), None);
        assert_eq!(parse_decimal("1", 2), None);
        assert_eq!(parse_decimal("1.0", 0), None);
    }
}
