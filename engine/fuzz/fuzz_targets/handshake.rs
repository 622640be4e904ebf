//! The upgrade parser: `proto::handshake::parse_request` on arbitrary bytes, with the server's
//! default limits, and the responses written from whatever it returns.
//!
//! Checks, besides "never panics": a complete head is no longer than the input and the limit and
//! parses the same on its own; an incomplete head is below the limit; every response written is
//! one well-formed head (a single blank line, at the end for bodiless responses), so that no
//! request value can split a response.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::proto::handshake::{
    HandshakeLimits, Request, parse_request, percent_decode, query_param, write_accept_response,
    write_http_response,
};

fuzz_target!(|data: &[u8]| {
    let limits = HandshakeLimits::default();
    match parse_request(data, &limits) {
        Ok(Some((request, head_len))) => {
            assert!(head_len <= data.len() && head_len <= limits.max_head_bytes);
            let again = parse_request(&data[..head_len], &limits);
            assert_eq!(
                again,
                Ok(Some((request.clone(), head_len))),
                "head alone parses alike"
            );
            let mut out = Vec::new();
            match &request {
                Request::Upgrade(up) => {
                    if let Some(token) = query_param(&up.query, "token") {
                        let _ = percent_decode(token);
                    }
                    write_accept_response(up, up.protocols.first().map(String::as_str), &mut out);
                    assert_one_head(&out, out.len());
                }
                Request::Http(http) => {
                    let body = format!("no route for {} {}\n", http.method, http.path);
                    write_http_response(404, "text/plain", body.as_bytes(), &[], &mut out);
                    assert_one_head(&out, out.len() - body.len());
                }
            }
        }
        Ok(None) => assert!(
            data.len() < limits.max_head_bytes,
            "partial head at the limit"
        ),
        Err(e) => {
            assert!(
                matches!(e.status(), 400 | 405 | 426 | 431),
                "status {}",
                e.status()
            );
            let mut out = Vec::new();
            e.write_response(&mut out);
            let head_end = find(&out, b"\r\n\r\n").map_or(0, |i| i + 4);
            assert_one_head(&out, head_end);
        }
    }
});

/// `out` holds exactly one response head, ending at `head_end`.
fn assert_one_head(out: &[u8], head_end: usize) {
    assert!(out.starts_with(b"HTTP/1.1 "), "status line");
    let first_blank = find(out, b"\r\n\r\n").map(|i| i + 4);
    assert_eq!(
        first_blank,
        Some(head_end),
        "one head, ending where its body starts"
    );
    let head = &out[..head_end];
    assert!(
        !head.windows(2).enumerate().any(|(i, w)| {
            (w[1] == b'\n' && w[0] != b'\r')
                || (w[0] == b'\r' && w[1] != b'\n' && i + 1 < head.len())
        }),
        "bare CR or LF in the response head"
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
