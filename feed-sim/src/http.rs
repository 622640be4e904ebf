//! Minimal HTTP/1.1 for the simulator's port: read one request head, answer plain requests,
//! validate WebSocket upgrades.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Most headers accepted.
const MAX_HEADERS: usize = 32;
/// How long a peer has to send its whole request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// GUID of RFC 6455 section 1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// The peer closed before sending a full head.
    #[error("connection closed before the request head was complete")]
    Eof,
    /// The head did not arrive in time.
    #[error("request head not complete within {0:?}")]
    Timeout(Duration),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// The head passed [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers.
    #[error("request head too large")]
    TooLarge,
    /// Not HTTP.
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    /// Socket error.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// A parsed request head (owned, small).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path without the query string.
    pub(crate) path: String,
    headers: Vec<(String, Vec<u8>)>,
    /// Bytes the peer sent after the head (e.g. a first WebSocket frame).
    pub(crate) rest: Vec<u8>,
}

impl Request {
    /// Value of the first header named `name` (case-insensitive), as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether header `name` holds the comma-separated token `token` (case-insensitive).
    pub(crate) fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Parses a complete head out of `buf`; `Ok(None)` while more bytes are needed.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Complete(n)) => {
            let target = req.path.unwrap_or("/");
            let path = target.split('?').next().unwrap_or(target).to_string();
            Ok(Some(Request {
                method: req.method.unwrap_or("").to_string(),
                path,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                rest: buf.get(n..).unwrap_or_default().to_vec(),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e)),
    }
}

/// Reads one request head. The stream must have a short read timeout so that `stop` and the
/// overall [`HEAD_TIMEOUT`] are checked between reads.
pub(crate) fn read_request(
    stream: &mut TcpStream,
    stop: &AtomicBool,
) -> Result<Request, HeadError> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(HeadError::Shutdown);
        }
        if started.elapsed() > HEAD_TIMEOUT {
            return Err(HeadError::Timeout(HEAD_TIMEOUT));
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(HeadError::Eof),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(req) = parse_head(&buf)? {
                    return Ok(req);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `Sec-WebSocket-Accept` for a client key.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// No `Upgrade: websocket` / `Connection: upgrade`.
    #[error("expected a WebSocket upgrade")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (only 13)")]
    Version,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64.
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
}

/// Validates a WebSocket upgrade and returns the `Sec-WebSocket-Accept` value.
pub(crate) fn check_upgrade(req: &Request) -> Result<String, UpgradeError> {
    if !req.header_has_token("upgrade", "websocket")
        || !req.header_has_token("connection", "upgrade")
    {
        return Err(UpgradeError::NotUpgrade);
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(UpgradeError::Version);
    }
    let key = req.header("sec-websocket-key").ok_or(UpgradeError::Key)?;
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(UpgradeError::Key),
    }
}

/// The 101 response completing a handshake.
pub(crate) fn switching_protocols(accept: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Writes a complete `Connection: close` response.
pub(crate) fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    stream.write_all(&msg)?;
    stream.flush()
}

/// A short `text/plain` response.
pub(crate) fn respond_text(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    text: &str,
) -> io::Result<()> {
    respond(
        stream,
        status,
        reason,
        "text/plain; charset=utf-8",
        extra_headers,
        text.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Request {
        match parse_head(s.as_bytes()) {
            Ok(Some(r)) => r,
            other => panic!("not a complete head: {other:?}"),
        }
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_is_validated() {
        let ok = parse(
            "GET /feed?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nXY",
        );
        assert_eq!(ok.path, "/feed");
        assert_eq!(ok.rest, b"XY");
        assert_eq!(
            check_upgrade(&ok).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        let plain = parse("GET /feed HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(check_upgrade(&plain), Err(UpgradeError::NotUpgrade));
        let v8 = parse(
            "GET /feed HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        assert_eq!(check_upgrade(&v8), Err(UpgradeError::Version));
        let badkey = parse(
            "GET /feed HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
        );
        assert_eq!(check_upgrade(&badkey), Err(UpgradeError::Key));
    }

    #[test]
    fn heads_partial_oversized_and_malformed() {
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None)));
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(
            parse_head(huge.as_bytes()),
            Err(HeadError::TooLarge)
        ));
        assert!(matches!(
            parse_head(b"\x00\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }
}
