//! The feed connection's WebSocket, client role, sans-IO (RFC 6455).
//!
//! The ingester (`feed/ingest.rs`) owns the socket and one read buffer; this module turns the
//! bytes in that buffer into messages where they lie and writes the few frames the ingester
//! sends (masked, as a client must):
//!
//! 1. [`write_request`] writes the upgrade request; [`parse_response`] checks the `101` and
//!    says where the WebSocket stream starts in the bytes read.
//! 2. [`ClientWs::next`] parses the frame at the front of the buffer: an unfragmented text
//!    message is reported as the range of the buffer its payload occupies (server frames are
//!    unmasked, so the payload is the message: no copy), to be decoded in place; a fragmented
//!    one is assembled in the connection's own buffer. Pings are answered, a close is replied
//!    to, and every rule a client checks fails the connection with the close code the RFC
//!    names (a masked server frame, RSV bits, a bad fragment order, an oversized message, a bad
//!    close frame).
//! 3. [`ClientWs::write_text`], [`ClientWs::write_ping`], [`ClientWs::write_close`] append
//!    masked frames to the caller's out-buffer.
//!
//! Text is not checked for UTF-8 here: the decoder's scanner accepts only ASCII templates, and
//! the ingester checks every other text message before simd-json parses it (see
//! `FeedDecoder::decode_text`).

use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

use crate::proto::close_code;
use crate::proto::frame::{self, MAX_HEADER_LEN, OpCode};
use crate::proto::handshake::accept_key;

/// Largest message (all fragments together) the feed may send, in bytes.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Largest response head to the upgrade request.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// The feed's answer to the upgrade request was not a WebSocket `101`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The response is not HTTP/1.1 (or is cut short by the connection closing); check that the
    /// feed URL names a WebSocket server.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The response head is larger than 16 KiB.
    #[error("HTTP response head too large")]
    TooLarge,
    /// The server answered with another status (wrong path, not a WebSocket endpoint).
    #[error("HTTP status {0} instead of 101")]
    Status(u16),
    /// `Upgrade: websocket` or `Connection: upgrade` is missing.
    #[error("the 101 response does not upgrade to websocket")]
    NotUpgraded,
    /// `Sec-WebSocket-Accept` does not answer our key.
    #[error("wrong Sec-WebSocket-Accept")]
    BadAccept,
}

/// The feed broke the WebSocket protocol. A close frame with [`close_code`](Self::close_code)
/// was queued; flush it and drop the connection (the ingester reconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket protocol violation by the feed (close code {close_code}): {reason}")]
pub struct FeedProtocolError {
    /// The close code sent to the feed (1002, 1007 or 1009).
    pub close_code: u16,
    /// What went wrong, also sent as the close reason.
    pub reason: &'static str,
}

/// The client key for 16 nonce bytes (`Sec-WebSocket-Key`).
#[must_use]
pub fn client_key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// Appends the upgrade request for `ws://{authority}{path}` with `key`.
pub fn write_request(authority: &str, path: &str, key: &str, out: &mut Vec<u8>) {
    let path = if path.is_empty() { "/" } else { path };
    out.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
}

/// Parses the response to the upgrade request sent with `key` from the bytes read so far.
///
/// Returns `Ok(None)` when the head is not complete yet, or the length of the head: the bytes
/// after it already belong to the WebSocket stream.
///
/// # Errors
/// [`HandshakeFailure`] when the response is not a valid `101` for `key`.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeFailure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HandshakeFailure::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeFailure::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeFailure::Status(code));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade || !connection {
        return Err(HandshakeFailure::NotUpgraded);
    }
    if header("sec-websocket-accept") != Some(accept_key(key).as_str()) {
        return Err(HandshakeFailure::BadAccept);
    }
    Ok(Some(head_len))
}

/// What the frame at the front of the buffer brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A whole text message: the payload is `buf[range]`, to be decoded in place.
    Text(Range<usize>),
    /// A text message assembled from fragments: in [`ClientWs::message_mut`].
    Assembled,
    /// A whole binary message (the feed sends text; count it and drop it).
    Binary,
    /// A fragment of a message, a ping (answered) or a pong: the feed is alive.
    Control,
    /// The feed's close frame (our reply is queued): the session is over.
    Close {
        /// Its close code, if it had one.
        code: Option<u16>,
        /// Its reason (may be empty).
        reason: String,
    },
}

/// The result of [`ClientWs::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A frame was consumed: what it brought and its length in bytes (header and payload).
    Frame(Input, usize),
    /// The frame at the front is not complete: the buffer needs at least this many bytes.
    Need(usize),
}

/// The client side of the feed's WebSocket after the `101`, sans-IO.
#[derive(Debug)]
pub struct ClientWs {
    /// The fragmented message being assembled: `Some(is_text)` between its first and last
    /// frame.
    fragmented: Option<bool>,
    message: Vec<u8>,
    /// We sent a close frame: nothing more goes out.
    close_sent: bool,
    /// Masking-key generator, seeded by the caller (the IO driver, from OS randomness: RFC 6455
    /// §5.3 asks for keys a third party cannot predict; ChaCha keeps that from a 32-byte seed).
    rng: ChaCha8Rng,
}

impl ClientWs {
    /// A connection after the `101`; `seed` seeds the masking keys (give it OS randomness; tests
    /// give fixed seeds).
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            fragmented: None,
            message: Vec::new(),
            close_sent: false,
            rng: ChaCha8Rng::from_seed(seed),
        }
    }

    /// The text message reported as [`Input::Assembled`] (decode it in place).
    pub fn message_mut(&mut self) -> &mut [u8] {
        &mut self.message
    }

    /// Parses the frame at the front of `buf`. Replies it owes (pong, close) are appended to
    /// `out`.
    ///
    /// # Errors
    /// [`FeedProtocolError`] when the frame breaks the protocol; a close frame is queued in
    /// `out`.
    pub fn next(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<Next, FeedProtocolError> {
        use close_code::{PROTOCOL_ERROR, TOO_BIG};

        let (header, header_len) = match frame::parse_header(buf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(Next::Need(buf.len() + 1)),
            Err(e) => return Err(self.fail(e.close_code(), e.reason(), out)),
        };
        if header.mask.is_some() {
            return Err(self.fail(PROTOCOL_ERROR, "masked server frame", out));
        }
        if header.rsv != 0 {
            return Err(self.fail(PROTOCOL_ERROR, "RSV bits set", out));
        }
        let len = match usize::try_from(header.payload_len) {
            Ok(len) if len <= MAX_MESSAGE => len,
            _ => return Err(self.fail(TOO_BIG, "frame too large", out)),
        };
        let total = header_len + len;
        if buf.len() < total {
            return Ok(Next::Need(total));
        }
        let payload = header_len..total;
        let input = match (header.opcode, header.fin, self.fragmented) {
            (OpCode::Text, true, None) => Input::Text(payload),
            (OpCode::Binary, true, None) => Input::Binary,
            (OpCode::Text | OpCode::Binary, false, None) => {
                self.fragmented = Some(header.opcode == OpCode::Text);
                self.message.clear();
                self.message.extend_from_slice(&buf[payload]);
                Input::Control
            }
            (OpCode::Text | OpCode::Binary, _, Some(_)) => {
                return Err(self.fail(PROTOCOL_ERROR, "new message inside a fragmented one", out));
            }
            (OpCode::Continuation, _, None) => {
                return Err(self.fail(PROTOCOL_ERROR, "continuation without a message", out));
            }
            (OpCode::Continuation, fin, Some(text)) => {
                if self.message.len() + len > MAX_MESSAGE {
                    return Err(self.fail(TOO_BIG, "message too large", out));
                }
                self.message.extend_from_slice(&buf[payload]);
                if !fin {
                    Input::Control
                } else {
                    self.fragmented = None;
                    if text {
                        Input::Assembled
                    } else {
                        Input::Binary
                    }
                }
            }
            (OpCode::Ping, _, _) => {
                if !self.close_sent {
                    let data = buf[payload].to_vec();
                    self.write_frame(OpCode::Pong, &data, out);
                }
                Input::Control
            }
            (OpCode::Pong, _, _) => Input::Control,
            (OpCode::Close, _, _) => self.on_close(&buf[payload], out)?,
        };
        Ok(Next::Frame(input, total))
    }

    /// Appends a masked text frame carrying `text`.
    pub fn write_text(&mut self, text: &[u8], out: &mut Vec<u8>) {
        if !self.close_sent {
            self.write_frame(OpCode::Text, text, out);
        }
    }

    /// Appends a masked, empty ping.
    pub fn write_ping(&mut self, out: &mut Vec<u8>) {
        if !self.close_sent {
            self.write_frame(OpCode::Ping, &[], out);
        }
    }

    /// Appends a masked close frame (once); nothing more is sent after it.
    pub fn write_close(&mut self, code: u16, reason: &str, out: &mut Vec<u8>) {
        if self.close_sent {
            return;
        }
        let mut end = reason.len().min(frame::MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        self.write_frame(OpCode::Close, &payload, out);
        self.close_sent = true;
    }

    fn on_close(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<Input, FeedProtocolError> {
        let (code, reason) = match payload {
            [] => (None, String::new()),
            [_] => {
                return Err(self.fail(
                    close_code::PROTOCOL_ERROR,
                    "close payload of one byte",
                    out,
                ));
            }
            [hi, lo, rest @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !close_code::is_valid(code) {
                    return Err(self.fail(close_code::PROTOCOL_ERROR, "invalid close code", out));
                }
                let Ok(reason) = std::str::from_utf8(rest) else {
                    return Err(self.fail(
                        close_code::INVALID_PAYLOAD,
                        "close reason not UTF-8",
                        out,
                    ));
                };
                (Some(code), reason.to_owned())
            }
        };
        self.write_close(code.unwrap_or(close_code::NORMAL), "", out);
        Ok(Input::Close { code, reason })
    }

    fn fail(&mut self, code: u16, reason: &'static str, out: &mut Vec<u8>) -> FeedProtocolError {
        self.write_close(code, reason, out);
        FeedProtocolError {
            close_code: code,
            reason,
        }
    }

    /// Appends one masked, final frame.
    fn write_frame(&mut self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = frame::encode_header(true, opcode, payload.len() as u64, &mut header);
        header[1] |= 0x80;
        let mask = self.mask_key();
        out.extend_from_slice(&header[..n]);
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        frame::apply_mask(&mut out[start..], mask, 0);
    }

    fn mask_key(&mut self) -> [u8; 4] {
        self.rng.next_u32().to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; MAX_HEADER_LEN];
        let op = OpCode::from_u8(b0 & 0x0F).unwrap();
        let n = frame::encode_header(b0 & 0x80 != 0, op, payload.len() as u64, &mut header);
        let mut v = header[..n].to_vec();
        v[0] = b0;
        v.extend_from_slice(payload);
        v
    }

    /// Decodes our masked client frames with tungstenite (an independent implementation).
    fn tungstenite_reads(bytes: &[u8]) -> Vec<tungstenite::protocol::frame::Frame> {
        use tungstenite::protocol::frame::FrameHeader as TH;
        let mut cur = std::io::Cursor::new(bytes.to_vec());
        let mut frames = Vec::new();
        while (cur.position() as usize) < bytes.len() {
            let (mut h, len) = TH::parse(&mut cur).unwrap().unwrap();
            assert!(h.mask.is_some(), "client frames are masked");
            let start = cur.position() as usize;
            let mut payload = bytes[start..start + len as usize].to_vec();
            if let Some(m) = h.mask.take() {
                frame::apply_mask(&mut payload, m, 0);
            }
            cur.set_position((start + len as usize) as u64);
            frames.push(tungstenite::protocol::frame::Frame::from_payload(
                h,
                payload.into(),
            ));
        }
        frames
    }

    #[test]
    fn text_frames_are_reported_where_they_lie() {
        let mut ws = ClientWs::new([7; 32]);
        let mut buf = server_frame(0x81, b"{\"a\":1}");
        buf.extend(server_frame(0x81, &[b'x'; 300]));
        let mut out = Vec::new();
        let Next::Frame(Input::Text(r), n) = ws.next(&buf, &mut out).unwrap() else {
            panic!()
        };
        assert_eq!(&buf[r], b"{\"a\":1}");
        let rest = &buf[n..];
        assert_eq!(ws.next(&rest[..3], &mut out).unwrap(), Next::Need(4));
        assert_eq!(ws.next(&rest[..10], &mut out).unwrap(), Next::Need(304));
        let Next::Frame(Input::Text(r), n2) = ws.next(rest, &mut out).unwrap() else {
            panic!()
        };
        assert_eq!(r, 4..304);
        assert_eq!(n2, rest.len());
        assert!(out.is_empty());
    }

    #[test]
    fn fragments_are_assembled_and_pings_answered_between_them() {
        let mut ws = ClientWs::new([7; 32]);
        let mut out = Vec::new();
        let frames = [
            server_frame(0x01, b"hel"),
            server_frame(0x89, b"p"),
            server_frame(0x00, b"lo "),
            server_frame(0x80, b"world"),
        ];
        let mut got = Vec::new();
        for f in &frames {
            let Next::Frame(input, n) = ws.next(f, &mut out).unwrap() else {
                panic!()
            };
            assert_eq!(n, f.len());
            got.push(input);
        }
        assert_eq!(got[3], Input::Assembled);
        assert_eq!(ws.message_mut(), b"hello world");
        let pong = tungstenite_reads(&out);
        assert_eq!(pong.len(), 1);
        assert_eq!(
            pong[0].header().opcode,
            tungstenite::protocol::frame::coding::OpCode::Control(
                tungstenite::protocol::frame::coding::Control::Pong
            )
        );
        assert_eq!(pong[0].payload(), b"p");
    }

    #[test]
    fn protocol_violations_fail_with_their_close_codes() {
        let masked = {
            let mut f = server_frame(0x81, b"hi");
            f[1] |= 0x80;
            f.splice(2..2, [1, 2, 3, 4]);
            f
        };
        let cases: [(Vec<u8>, u16); 6] = [
            (masked, 1002),
            (server_frame(0xC1, b"x"), 1002),
            (server_frame(0x80, b"x"), 1002),
            (server_frame(0x88, &[3]), 1002),
            (server_frame(0x88, &[0x03, 0xED]), 1002),
            (server_frame(0x88, &[0x03, 0xE8, 0xFF]), 1007),
        ];
        for (bytes, code) in cases {
            let mut ws = ClientWs::new([1; 32]);
            let mut out = Vec::new();
            let e = ws.next(&bytes, &mut out).unwrap_err();
            assert_eq!(e.close_code, code, "{bytes:?}");
            let sent = tungstenite_reads(&out);
            assert_eq!(sent.len(), 1);
            assert_eq!(&sent[0].payload()[..2], &code.to_be_bytes());
        }
        let mut ws = ClientWs::new([1; 32]);
        let mut out = Vec::new();
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&((MAX_MESSAGE as u64) + 1).to_be_bytes());
        assert_eq!(ws.next(&huge, &mut out).unwrap_err().close_code, 1009);
    }

    #[test]
    fn close_is_replied_once_and_nothing_follows() {
        let mut ws = ClientWs::new([3; 32]);
        let mut out = Vec::new();
        let mut payload = 1001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let f = server_frame(0x88, &payload);
        let Next::Frame(input, _) = ws.next(&f, &mut out).unwrap() else {
            panic!()
        };
        assert_eq!(
            input,
            Input::Close {
                code: Some(1001),
                reason: "bye".into()
            }
        );
        let sent = tungstenite_reads(&out);
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].payload()[..2], &1001u16.to_be_bytes());
        let before = out.len();
        ws.write_text(b"late", &mut out);
        ws.write_ping(&mut out);
        assert_eq!(out.len(), before);
    }

    #[test]
    fn client_frames_are_masked_and_read_back_by_tungstenite() {
        let mut ws = ClientWs::new([99; 32]);
        let mut out = Vec::new();
        let text = br#"{"op":"snapshot","symbol":"BTC-USD"}"#;
        ws.write_text(text, &mut out);
        ws.write_ping(&mut out);
        let frames = tungstenite_reads(&out);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload(), text);
        assert!(frames[1].payload().is_empty());
    }

    #[test]
    fn handshake_request_and_response() {
        let key = client_key([7; 16]);
        let mut req = Vec::new();
        write_request("127.0.0.1:9001", "/feed", &key, &mut req);
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /feed HTTP/1.1\r\n"));
        assert!(req.contains(&format!("Sec-WebSocket-Key: {key}\r\n")));
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        );
        let mut with_frame = ok.clone().into_bytes();
        with_frame.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_response(&with_frame, &key), Ok(Some(ok.len())));
        assert_eq!(parse_response(&ok.as_bytes()[..20], &key), Ok(None));
        let wrong = ok.replace(&accept_key(&key), &accept_key("other"));
        assert_eq!(
            parse_response(wrong.as_bytes(), &key),
            Err(HandshakeFailure::BadAccept)
        );
        let nf = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(nf.as_bytes(), &key),
            Err(HandshakeFailure::Status(404))
        );
        let plain = ok.replace("Upgrade: websocket\r\n", "");
        assert_eq!(
            parse_response(plain.as_bytes(), &key),
            Err(HandshakeFailure::NotUpgraded)
        );
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", &key),
            Err(HandshakeFailure::Malformed(_))
        ));
    }
}
