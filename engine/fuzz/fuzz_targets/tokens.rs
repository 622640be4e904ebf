//! Token parsing (protocol §3.5): `entitle::verify` on arbitrary bytes as a JWT, and the
//! `symbols` pattern matcher on arbitrary patterns and names.
//!
//! Checks, besides "never panics": a token that verifies carries an `exp` after the time it was
//! checked at; `*` matches everything; a pattern without `*` matches only itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::config::JwtKey;
use tickcast::fanout::entitle::{Patterns, verify};

fuzz_target!(|data: &[u8]| {
    let key = JwtKey::hs256(b"fuzz-secret-of-sixteen+");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(grant) = verify(&key, text, 1_000) {
            assert!(grant.exp > 1_000);
        }
        // Pattern and symbol: split at the first NUL.
        let (pat, sym) = text.split_once('\0').unwrap_or((text, text));
        let p = Patterns::new([pat]);
        let m = p.allows(sym);
        if !pat.contains('*') {
            assert_eq!(m, pat == sym, "{pat:?} vs {sym:?}");
        }
        assert!(Patterns::new(["*"]).allows(sym));
    }
});
