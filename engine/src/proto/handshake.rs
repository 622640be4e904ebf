//! The HTTP side of the connection: the opening handshake (RFC 6455 §4.2) and the plain HTTP
//! responses served on the same port.
//!
//! [`parse_request`] reads a request head with `httparse`. A request that carries
//! `Upgrade: websocket` is an [`UpgradeRequest`] and is validated strictly; any other request is
//! an [`HttpRequest`] for the caller to route.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use std::borrow::Cow;

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3).
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bounds on a request head, so that a client cannot make the server buffer or scan without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest request head (request line, headers and the blank line), in bytes. Default 8192.
    pub max_head_bytes: usize,
    /// Most header lines in a request. Default 32.
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8192,
            max_headers: 32,
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket opening handshake: answer with [`write_accept_response`].
    Upgrade(UpgradeRequest),
    /// Any request without `Upgrade: websocket`: route it and answer with
    /// [`write_http_response`].
    Http(HttpRequest),
}

/// A validated WebSocket opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Path of the request target, without the query (`/ws`).
    pub path: String,
    /// Query of the request target, without the `?` (empty when there is none); see
    /// [`query_param`].
    pub query: String,
    /// `Sec-WebSocket-Key`, checked to decode to 16 bytes.
    pub key: String,
    /// `Origin`, sent by browsers.
    pub origin: Option<String>,
    /// The subprotocols the client offers (`Sec-WebSocket-Protocol`), in order.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` as sent (header lines joined by `, `); see
    /// [`super::deflate::negotiate`].
    pub extensions: Option<String>,
    /// `Host`. HTTP/1.1 requires it, but it is not needed here, so its absence is tolerated.
    pub host: Option<String>,
}

/// A plain HTTP request (no upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method (`GET`, `HEAD`, ...), as sent.
    pub method: String,
    /// Path of the request target, without the query.
    pub path: String,
    /// Query of the request target, without the `?` (empty when there is none).
    pub query: String,
    /// `Origin`, when sent (browsers send it on cross-origin and `fetch` requests).
    pub origin: Option<String>,
    /// `Last-Event-ID` (an `EventSource` reconnecting to `/sse`).
    pub last_event_id: Option<String>,
    /// `If-None-Match` (a cached static file being revalidated).
    pub if_none_match: Option<String>,
}

/// A request head the server refuses. Answer with [`HandshakeError::write_response`] (status
/// [`HandshakeError::status`]) and close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head is not complete within `max_head_bytes`; answer 431 and close.
    #[error("request head larger than the limit")]
    HeadTooLarge,
    /// More header lines than `max_headers`; answer 431 and close.
    #[error("too many header lines")]
    TooManyHeaders,
    /// The head is not valid HTTP/1.x; answer 400 and close.
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// A header that must appear at most once appeared more than once; answer 400 and close.
    #[error("duplicate {0} header")]
    DuplicateHeader(&'static str),
    /// A header this server reads has a value that is not UTF-8; answer 400 and close.
    #[error("{0} header is not UTF-8")]
    InvalidHeaderValue(&'static str),
    /// A WebSocket upgrade with a method other than GET; answer 405 (with `Allow: GET`).
    #[error("WebSocket upgrade must use GET")]
    MethodNotAllowed,
    /// A WebSocket upgrade over HTTP/1.0; answer 400 and close.
    #[error("WebSocket upgrade requires HTTP/1.1")]
    UnsupportedHttpVersion,
    /// A WebSocket upgrade whose `Connection` header lacks the `upgrade` token; answer 400.
    #[error("Connection header lacks the upgrade token")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13; answer 426 with `Sec-WebSocket-Version: 13`.
    #[error("unsupported or missing Sec-WebSocket-Version (13 is supported)")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing; answer 400 and close.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// `Sec-WebSocket-Key` does not decode (base64) to 16 bytes; answer 400 and close.
    #[error("Sec-WebSocket-Key is not 16 bytes in base64")]
    InvalidKey,
}

impl HandshakeError {
    /// The HTTP status to answer with: 400, 405, 426 or 431.
    #[must_use]
    pub const fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedVersion => 426,
            Self::Malformed(_)
            | Self::DuplicateHeader(_)
            | Self::InvalidHeaderValue(_)
            | Self::UnsupportedHttpVersion
            | Self::MissingConnectionUpgrade
            | Self::MissingKey
            | Self::InvalidKey => 400,
        }
    }

    /// Headers the response must carry besides the usual ones: `Sec-WebSocket-Version: 13`
    /// with a 426 (RFC 6455 §4.4), `Allow: GET` with a 405.
    #[must_use]
    pub const fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::UnsupportedVersion => {
                &[("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")]
            }
            Self::MethodNotAllowed => &[("Allow", "GET")],
            _ => &[],
        }
    }

    /// Writes the whole error response (status, headers, a `text/plain` body naming the
    /// problem, `Connection: close`) to `out`.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let body = format!("{self}\n");
        write_http_response(
            self.status(),
            "text/plain; charset=utf-8",
            body.as_bytes(),
            self.response_headers(),
            out,
        );
    }
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet and `buf` is still below
/// `limits.max_head_bytes` (read more and call again with the whole buffer), or the request and
/// the length of its head: bytes after it are a body or, after an upgrade, WebSocket frames.
///
/// # Errors
/// [`HandshakeError`]; its [`status`](HandshakeError::status) is the HTTP status to answer.
pub fn parse_request(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let view = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(view) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(HandshakeError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(e) => return Err(HandshakeError::Malformed(e)),
    };
    // A complete parse always fills these; treat their absence as malformed all the same.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed(httparse::Error::Token));
    };
    let (path, query) = split_target(target);
    let headers = req.headers;

    if !has_token(headers, "upgrade", "websocket") {
        let http = HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            origin: single(headers, "Origin")?.map(str::to_owned),
            last_event_id: single(headers, "Last-Event-ID")?.map(str::to_owned),
            if_none_match: single(headers, "If-None-Match")?.map(str::to_owned),
        };
        return Ok(Some((Request::Http(http), head_len)));
    }

    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if version != 1 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    match single(headers, "Sec-WebSocket-Version")? {
        Some("13") => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let key = single(headers, "Sec-WebSocket-Key")?.ok_or(HandshakeError::MissingKey)?;
    if key.len() != 24 || BASE64.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(HandshakeError::InvalidKey);
    }
    let origin = single(headers, "Origin")?.map(str::to_owned);
    let host = single(headers, "Host")?.map(str::to_owned);
    let mut protocols = Vec::new();
    for value in values(headers, "Sec-WebSocket-Protocol") {
        let value = utf8(value, "Sec-WebSocket-Protocol")?;
        protocols.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
    }
    let mut extensions: Option<String> = None;
    for value in values(headers, "Sec-WebSocket-Extensions") {
        let value = utf8(value, "Sec-WebSocket-Extensions")?.trim();
        match &mut extensions {
            Some(all) => {
                all.push_str(", ");
                all.push_str(value);
            }
            None => extensions = Some(value.to_owned()),
        }
    }
    let upgrade = UpgradeRequest {
        path: path.to_owned(),
        query: query.to_owned(),
        key: key.to_owned(),
        origin,
        protocols,
        extensions,
        host,
    };
    Ok(Some((Request::Upgrade(upgrade), head_len)))
}

/// Splits a request target into path and query; an absolute-form target
/// (`http://host/path?q`) is reduced to its path.
fn split_target(target: &str) -> (&str, &str) {
    let mut rest = target;
    for scheme in ["http://", "https://", "ws://", "wss://"] {
        if let Some(after) = strip_prefix_ignore_case(target, scheme) {
            rest = after
                .find('/')
                .map_or("/", |i| after.get(i..).unwrap_or("/"));
            break;
        }
    }
    rest.split_once('?').unwrap_or((rest, ""))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Values of every header line named `name` (case-insensitive).
fn values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether any `name` header line lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values(headers, name).any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The value of a header that may appear at most once, trimmed.
fn single<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> Result<Option<&'h str>, HandshakeError> {
    let mut found = values(headers, name);
    let Some(first) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(HandshakeError::DuplicateHeader(name));
    }
    utf8(first, name).map(|v| Some(v.trim()))
}

fn utf8<'v>(value: &'v [u8], name: &'static str) -> Result<&'v str, HandshakeError> {
    std::str::from_utf8(value).map_err(|_| HandshakeError::InvalidHeaderValue(name))
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64 of the SHA-1 of the key followed by the protocol's GUID.
#[must_use]
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Appends the `101 Switching Protocols` response accepting `req` to `out`.
///
/// `protocol` is the subprotocol chosen from `req.protocols`, if any (the caller picks it; it is
/// written as given). No extension is accepted.
pub fn write_accept_response(req: &UpgradeRequest, protocol: Option<&str>, out: &mut Vec<u8>) {
    write_accept_response_ext(req, protocol, None, out);
}

/// [`write_accept_response`] that also accepts an extension: `extensions` is written as the
/// `Sec-WebSocket-Extensions` value (e.g. a [`super::deflate::Accepted::response`]); a value
/// containing CR or LF is dropped.
pub fn write_accept_response_ext(
    req: &UpgradeRequest,
    protocol: Option<&str>,
    extensions: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(&req.key).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        push_header(out, "Sec-WebSocket-Protocol", protocol);
    }
    if let Some(extensions) = extensions {
        push_header(out, "Sec-WebSocket-Extensions", extensions);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete HTTP/1.1 response to `out`: status line with its reason phrase,
/// `Content-Type`, `Content-Length`, `Connection: close`, then `extra_headers` and `body`.
///
/// Extra headers whose name or value contains CR or LF are dropped rather than written, so that
/// they can never split the response.
pub fn write_http_response(
    status: u16,
    content_type: &str,
    body: &[u8],
    extra_headers: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    push_header(out, "Content-Type", content_type);
    push_header(out, "Content-Length", &body.len().to_string());
    push_header(out, "Connection", "close");
    for (name, value) in extra_headers {
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let breaks_line = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
    if breaks_line(name) || breaks_line(value) {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses this server uses.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The raw value of the first `name` parameter in `query` (`a=1&b=2`), or `None`.
///
/// A parameter without `=` has the value `""`. Names are compared exactly and values are
/// returned as sent, *not* percent-decoded: the values this server reads (`format`, tokens made
/// of URL-safe characters) need none. Use [`percent_decode`] for values that may be escaped.
#[must_use]
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Decodes `%XX` escapes in a query value. `+` is left as is (it is a space only in HTML form
/// encoding). Returns `None` for a malformed escape or a result that is not UTF-8; borrows when
/// there is nothing to decode.
#[must_use]
pub fn percent_decode(value: &str) -> Option<Cow<'_, str>> {
    if !value.contains('%') {
        return Some(Cow::Borrowed(value));
    }
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_digit(bytes.next()?)?;
            let lo = hex_digit(bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade_head(extra: &str) -> String {
        format!(
            "GET /ws?format=json&token=abc HTTP/1.1\r\n\
             Host: example.com:8080\r\n\
             Upgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        )
    }

    fn parse(head: &str) -> Result<Option<(Request, usize)>, HandshakeError> {
        parse_request(head.as_bytes(), &HandshakeLimits::default())
    }

    fn parse_err(head: &str) -> HandshakeError {
        parse(head).expect_err("request should be refused")
    }

    #[test]
    fn accept_key_rfc_vector() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn valid_upgrade() {
        let head = upgrade_head(
            "Origin: http://example.com\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             sec-websocket-protocol: v2\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n",
        );
        let mut bytes = head.clone().into_bytes();
        bytes.extend_from_slice(&[0x81, 0x80]); // the first frame may follow the head
        let (req, len) = parse_request(&bytes, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(len, head.len());
        let Request::Upgrade(up) = req else {
            panic!("expected an upgrade, got {req:?}");
        };
        assert_eq!(up.path, "/ws");
        assert_eq!(up.query, "format=json&token=abc");
        assert_eq!(up.key, KEY);
        assert_eq!(up.origin.as_deref(), Some("http://example.com"));
        assert_eq!(up.protocols, ["chat", "superchat", "v2"]);
        assert_eq!(up.extensions.as_deref(), Some("permessage-deflate"));
        assert_eq!(up.host.as_deref(), Some("example.com:8080"));

        let mut out = Vec::new();
        write_accept_response(&up, Some("chat"), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!text.contains("Sec-WebSocket-Extensions"));

        let mut out = Vec::new();
        write_accept_response_ext(&up, None, Some("permessage-deflate"), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"));
        assert!(!text.contains("Sec-WebSocket-Protocol"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn upgrade_tokens_are_case_insensitive_lists() {
        let head = format!(
            "GET /ws HTTP/1.1\r\nUpgrade: foo, WebSocket\r\nConnection: UPGRADE\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        assert!(matches!(parse(&head), Ok(Some((Request::Upgrade(_), _)))));
    }

    #[test]
    fn tungstenite_accepts_our_handshake_response() {
        // Cross-check the 101 response with tungstenite's client-side verification.
        use tungstenite::handshake::derive_accept_key;
        assert_eq!(derive_accept_key(KEY.as_bytes()), accept_key(KEY));
    }

    #[test]
    fn upgrade_errors_have_their_status() {
        let cases: Vec<(String, HandshakeError, u16)> = vec![
            (
                upgrade_head("").replacen("GET", "POST", 1),
                HandshakeError::MethodNotAllowed,
                405,
            ),
            (
                upgrade_head("").replacen("HTTP/1.1", "HTTP/1.0", 1),
                HandshakeError::UnsupportedHttpVersion,
                400,
            ),
            (
                upgrade_head("").replacen("keep-alive, Upgrade", "keep-alive", 1),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                upgrade_head("").replacen("Version: 13", "Version: 8", 1),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                upgrade_head("").replacen("Sec-WebSocket-Version: 13\r\n", "", 1),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                upgrade_head("").replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1),
                HandshakeError::MissingKey,
                400,
            ),
            (
                // 15 bytes in base64.
                upgrade_head("").replacen(KEY, "AAAAAAAAAAAAAAAAAAAA", 1),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                upgrade_head("").replacen(KEY, "not base64 at all!!!!!!!", 1),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                upgrade_head(&format!("Sec-WebSocket-Key: {KEY}\r\n")),
                HandshakeError::DuplicateHeader("Sec-WebSocket-Key"),
                400,
            ),
            (
                "GET /ws HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
                HandshakeError::Malformed(httparse::Error::HeaderName),
                400,
            ),
        ];
        for (head, want, status) in cases {
            let err = parse_err(&head);
            assert_eq!(err, want, "for {head:?}");
            assert_eq!(err.status(), status, "for {head:?}");
        }
    }

    #[test]
    fn version_426_response_carries_supported_version() {
        let err = parse_err(&upgrade_head("").replacen("Version: 13", "Version: 12", 1));
        let mut out = Vec::new();
        err.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn partial_head_needs_more() {
        let head = upgrade_head("");
        for cut in [0, 1, 10, head.len() / 2, head.len() - 1] {
            assert_eq!(parse(&head[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(&head).unwrap().is_some());
    }

    #[test]
    fn head_too_large_is_431() {
        let limits = HandshakeLimits {
            max_head_bytes: 256,
            max_headers: 32,
        };
        let mut head = "GET /ws HTTP/1.1\r\nX-Junk: ".to_owned();
        head.push_str(&"a".repeat(300));
        // Incomplete and already past the limit.
        let err = parse_request(head.as_bytes(), &limits).unwrap_err();
        assert_eq!(err, HandshakeError::HeadTooLarge);
        assert_eq!(err.status(), 431);
        // Below the limit it is just incomplete.
        assert_eq!(parse_request(&head.as_bytes()[..200], &limits), Ok(None));
        // A complete head exactly at the limit is fine.
        let mut exact = "GET / HTTP/1.1\r\nX: ".to_owned();
        exact.push_str(&"b".repeat(256 - exact.len() - 4));
        exact.push_str("\r\n\r\n");
        assert_eq!(exact.len(), 256);
        assert!(parse_request(exact.as_bytes(), &limits).unwrap().is_some());
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = HandshakeLimits {
            max_head_bytes: 8192,
            max_headers: 3,
        };
        let head = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        let err = parse_request(head.as_bytes(), &limits).unwrap_err();
        assert_eq!(err, HandshakeError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn plain_get_is_http() {
        let head = "GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let (req, len) = parse(head).unwrap().unwrap();
        assert_eq!(len, head.len());
        assert_eq!(
            req,
            Request::Http(HttpRequest {
                method: "GET".into(),
                path: "/metrics".into(),
                query: "x=1".into(),
                origin: None,
                last_event_id: None,
                if_none_match: None,
            })
        );
        // A different Upgrade (h2c) is not ours: plain HTTP, even with a non-GET method.
        let head = "POST /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
        let (req, _) = parse(head).unwrap().unwrap();
        assert!(matches!(req, Request::Http(HttpRequest { ref method, .. }) if method == "POST"));
        // Absolute-form target.
        let head = "GET http://example.com/healthz HTTP/1.1\r\n\r\n";
        let (req, _) = parse(head).unwrap().unwrap();
        assert!(matches!(req, Request::Http(HttpRequest { ref path, .. }) if path == "/healthz"));
    }

    #[test]
    fn http_response_format() {
        let mut out = Vec::new();
        write_http_response(
            404,
            "text/plain",
            b"nope",
            &[("X-A", "1"), ("X-Bad", "a\r\nInjected: 1")],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\
             Connection: close\r\nX-A: 1\r\n\r\nnope"
        );
    }

    #[test]
    fn query_parsing() {
        let q = "format=json&token=a%2Bb&flag&empty=&format=binary";
        assert_eq!(query_param(q, "format"), Some("json"));
        assert_eq!(query_param(q, "token"), Some("a%2Bb"));
        assert_eq!(query_param(q, "flag"), Some(""));
        assert_eq!(query_param(q, "empty"), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(q, "form"), None);
        assert_eq!(query_param("", "format"), None);
        assert_eq!(percent_decode("a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%C3%A9t%c3%a9").as_deref(), Some("été"));
        assert!(matches!(
            percent_decode("plain"),
            Some(Cow::Borrowed("plain"))
        ));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
