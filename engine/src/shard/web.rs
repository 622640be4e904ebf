//! The trading screen (`ui/`) and the client library it imports (`clients/js/dist/`), built
//! into the binary by `engine/build.rs` and served at `/`. Sans-IO: a request in, a response
//! out, bodies shared from the binary's read-only data (never copied per request).
//!
//! Decided (docs/protocol.md, "Plain HTTP"):
//! - `GET`/`HEAD` only; a path not in the table is not ours (the router answers 404).
//! - `ETag` is a content hash computed at build time; `If-None-Match` with it (or `*`) → 304.
//!   `Cache-Control: no-cache`: browsers revalidate every load (a 304 is a few bytes), so a new
//!   binary's files are picked up at once although their URLs do not change.
//! - The same Origin and token rules as `/ws`: an `Origin` that is sent must be allowed (a page
//!   load, a navigation, sends none); with tokens configured, the page (`/`, `*.html`) needs a
//!   valid `?token=`, which the page passes on to its `/ws` connection. The page's scripts and
//!   styles are public: module imports cannot carry the token, and they hold no data.

use crate::config::Config;
use crate::fanout::admission;
use crate::proto::handshake::{HttpRequest, query_param};

use super::http::{Route, refuse};

/// One built-in file.
#[derive(Debug)]
pub(crate) struct WebFile {
    pub(crate) path: &'static str,
    pub(crate) content_type: &'static str,
    /// Quoted, as sent.
    pub(crate) etag: &'static str,
    pub(crate) body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

/// `/` of a binary built without `ui/`.
const NO_UI: &[u8] = b"<!doctype html><meta charset=utf-8><title>tickcast</title>\
<p>This tickcast binary was built without the trading screen (<code>ui/</code> was missing at \
build time). The data is at <code>/ws</code>, <code>/stream</code> and <code>/sse</code>; \
<a href=\"/metrics\">/metrics</a>.</p>\n";

/// The built-in file at `path` (`/` is `/index.html`).
pub(crate) fn file(path: &str) -> Option<&'static WebFile> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES
        .binary_search_by(|f| f.path.cmp(path))
        .ok()
        .and_then(|i| FILES.get(i))
}

/// Answers a `GET` or `HEAD` of a built-in file; `None` when `h.path` is not one.
pub(crate) fn serve(config: &Config, h: &HttpRequest, now_s: u64) -> Option<Route> {
    let Some(f) = file(&h.path) else {
        if h.path == "/" {
            return Some(super::http::respond(
                200,
                "text/html; charset=utf-8",
                if h.method == "HEAD" { b"" } else { NO_UI },
                &[("Cache-Control", "no-cache")],
            ));
        }
        return None;
    };
    let html = f.content_type.starts_with("text/html");
    let access = admission::check_origin_if_sent(config, h.origin.as_deref()).and_then(|()| {
        if html {
            admission::check_token(config, query_param(&h.query, "token"), now_s).map(|_| ())
        } else {
            Ok(())
        }
    });
    if let Err(refusal) = access {
        return Some(refuse(refusal));
    }
    let not_modified = h
        .if_none_match
        .as_deref()
        .is_some_and(|v| etag_matches(v, f.etag));
    let mut head = Vec::with_capacity(256);
    let status = if not_modified {
        "304 Not Modified"
    } else {
        "200 OK"
    };
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_bytes());
    head.extend_from_slice(b"\r\nContent-Type: ");
    head.extend_from_slice(f.content_type.as_bytes());
    if !not_modified {
        head.extend_from_slice(b"\r\nContent-Length: ");
        head.extend_from_slice(f.body.len().to_string().as_bytes());
    }
    head.extend_from_slice(b"\r\nETag: ");
    head.extend_from_slice(f.etag.as_bytes());
    head.extend_from_slice(
        b"\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
    );
    let body: &'static [u8] = if not_modified || h.method == "HEAD" {
        b""
    } else {
        f.body
    };
    Some(Route::Static { head, body })
}

/// `If-None-Match`: `*`, or a list of entity tags (weak comparison: `W/` ignored).
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_etags_are_quoted() {
        assert!(FILES.windows(2).all(|w| w[0].path < w[1].path));
        for f in FILES {
            assert!(
                f.etag.starts_with('"') && f.etag.ends_with('"'),
                "{}",
                f.etag
            );
            assert!(f.path.starts_with('/'));
            assert!(!f.path.starts_with("/tests/"), "{}", f.path);
        }
        assert!(
            FILES
                .iter()
                .any(|f| f.path == "/lib/tickcast-client/index.js"),
            "the client library is served"
        );
    }

    #[test]
    fn if_none_match_forms() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\", \"b\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }
}
