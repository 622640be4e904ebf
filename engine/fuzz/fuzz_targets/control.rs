//! The control-message parser: `control::parse_request_v11` on arbitrary bytes (client text
//! messages), as the shards call it, and the version-1 `parse_request` beside it.
//!
//! Checks, besides "never panics": every refusal becomes an `{"op":"error"}` reply that is valid
//! JSON, carries the request's id as a number, a string or null, and a known code; every
//! accepted request names a sensible symbol selection and depth; a `resume` is only accepted on
//! a subscribe, names each symbol once, only symbols the subscribe names (any with `*`), at
//! least one stream per symbol and only channels the subscribe asks for, with an epoch of at
//! most `MAX_EPOCH_LEN` bytes; and the version-1 parser agrees on the request itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tickcast::book::DEPTHS;
use tickcast::control::{
    ErrorCode, MAX_EPOCH_LEN, MAX_SYMBOLS_PER_REQUEST, Request, RequestError, Resume, SymbolSel,
    parse_request, parse_request_v11,
};

fuzz_target!(|data: &[u8]| {
    let v1 = parse_request(data);
    match parse_request_v11(data) {
        Ok((request, resume)) => {
            // Without its resume, the request is what version 1 reads.
            assert_eq!(v1.as_ref().ok(), Some(&request), "v1 and v1.1 disagree");
            match &request {
                Request::Subscribe {
                    symbols,
                    depth_idx,
                    channels,
                    ..
                } => {
                    check_symbols(symbols);
                    assert!(*depth_idx < DEPTHS.len(), "depth index {depth_idx}");
                    assert!(
                        channels.book || channels.trades,
                        "a subscription with no channel"
                    );
                    if let Some(r) = &resume {
                        check_resume(r, symbols, channels.book, channels.trades);
                    }
                }
                Request::Unsubscribe { symbols, .. } => {
                    check_symbols(symbols);
                    assert!(resume.is_none(), "resume on an unsubscribe");
                }
                Request::Refresh { token, .. } => {
                    assert!(!token.is_empty(), "an empty refresh token was accepted");
                    assert!(resume.is_none(), "resume on a refresh");
                }
                Request::Symbols { .. } | Request::Ping { .. } => {
                    assert!(resume.is_none(), "resume on {request:?}");
                }
            }
        }
        Err(e) => {
            check_error(&e);
            // Version 1 refuses it too, unless only the resume was wrong.
            match &v1 {
                Ok(_) => assert_eq!(e.code, ErrorCode::BadResume, "{e}"),
                Err(e1) => assert_eq!(e1.code, e.code, "{e1} vs {e}"),
            }
        }
    }
    if let Err(e) = v1 {
        check_error(&e);
    }
});

fn check_error(e: &RequestError) {
    let reply: Value = serde_json::from_slice(&e.to_json()).expect("error reply is JSON");
    assert_eq!(reply["op"], "error");
    assert_eq!(reply["code"], e.code.as_str());
    let id = &reply["id"];
    assert!(id.is_null() || id.is_number() || id.is_string(), "id {id}");
}

fn check_resume(r: &Resume, symbols: &SymbolSel, book: bool, trades: bool) {
    assert!(r.epoch.len() <= MAX_EPOCH_LEN, "epoch of {} bytes", r.epoch.len());
    assert!(r.streams.len() <= MAX_SYMBOLS_PER_REQUEST);
    for (i, s) in r.streams.iter().enumerate() {
        assert!(
            !r.streams[..i].iter().any(|o| o.symbol == s.symbol),
            "{} named twice",
            s.symbol
        );
        if let SymbolSel::List(list) = symbols {
            assert!(list.contains(&s.symbol), "{} not subscribed", s.symbol);
        }
        assert!(s.book.is_some() || s.trades.is_some(), "{} names no stream", s.symbol);
        assert!(book || s.book.is_none(), "a book position without the book channel");
        assert!(trades || s.trades.is_none(), "a trades position without trades");
    }
}

fn check_symbols(symbols: &SymbolSel) {
    if let SymbolSel::List(list) = symbols {
        assert!(!list.is_empty() && list.len() <= MAX_SYMBOLS_PER_REQUEST);
        for (i, s) in list.iter().enumerate() {
            assert!(!list[..i].contains(s), "duplicate symbol {s}");
        }
    }
}
