//! The control-message parser: `control::parse_request` on arbitrary bytes (client text
//! messages).
//!
//! Checks, besides "never panics": every refusal becomes an `{"op":"error"}` reply that is valid
//! JSON, carries the request's id as a number, a string or null, and a known code; every
//! accepted request names a sensible symbol selection and depth.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tickcast::book::DEPTHS;
use tickcast::control::{MAX_SYMBOLS_PER_REQUEST, Request, SymbolSel, parse_request};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Request::Subscribe {
            symbols,
            depth_idx,
            channels,
            ..
        }) => {
            check_symbols(&symbols);
            assert!(depth_idx < DEPTHS.len(), "depth index {depth_idx}");
            assert!(
                channels.book || channels.trades,
                "a subscription with no channel"
            );
        }
        Ok(Request::Unsubscribe { symbols, .. }) => check_symbols(&symbols),
        Ok(Request::Symbols { .. } | Request::Ping { .. }) => {}
        Err(e) => {
            let reply: Value = serde_json::from_slice(&e.to_json()).expect("error reply is JSON");
            assert_eq!(reply["op"], "error");
            assert_eq!(reply["code"], e.code.as_str());
            let id = &reply["id"];
            assert!(id.is_null() || id.is_number() || id.is_string(), "id {id}");
        }
    }
});

fn check_symbols(symbols: &SymbolSel) {
    if let SymbolSel::List(list) = symbols {
        assert!(!list.is_empty() && list.len() <= MAX_SYMBOLS_PER_REQUEST);
        for (i, s) in list.iter().enumerate() {
            assert!(!list[..i].contains(s), "duplicate symbol {s}");
        }
    }
}
