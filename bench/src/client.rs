//! A small WebSocket client (RFC 6455, client side) for the load: connect from a
//! chosen source address, upgrade, then read frames in place from one growing
//! buffer without copying or allocating per message.
//!
//! It is written for measuring, not for general use: no extensions, no TLS. The
//! parsing half ([`FrameParser`]) is sans-IO and tested without sockets; [`WsConn`]
//! adds the socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Largest message this client assembles (peers may send anything).
pub const MAX_MESSAGE: usize = 64 << 20;
/// Largest upgrade response head.
const MAX_HEAD: usize = 16 << 10;
/// Initial read buffer; it doubles when a read fills it, up to [`MAX_READ_BUFFER`].
const INITIAL_BUFFER: usize = 8 << 10;
/// Largest read buffer used for ordinary reads (a bigger frame grows it further).
const MAX_READ_BUFFER: usize = 128 << 10;
/// The GUID of RFC 6455 §1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Frame opcodes.
const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 10;

/// Close code reported when a close frame carries none.
pub const CLOSE_NO_STATUS: u16 = 1005;

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket call failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The step did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The server refused the upgrade or answered something else.
    #[error("upgrade refused: {0}")]
    Upgrade(String),
    /// The server broke the framing rules.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection ended without a close frame.
    #[error("connection ended without a close frame")]
    Eof,
}

/// One complete message (or control frame) from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A binary message.
    Binary(&'a [u8]),
    /// A text message (not checked for UTF-8 here).
    Text(&'a [u8]),
    /// A ping; the caller answers it with [`WsConn::pong`].
    Ping(&'a [u8]),
    /// A pong (ignored by the load).
    Pong,
    /// A close frame with its code.
    Close(u16),
}

/// Frame parser over a byte buffer: hands out complete messages as slices of its
/// buffer, assembling fragmented ones on the side.
#[derive(Debug, Default)]
pub struct FrameParser {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Opcode and payload of a fragmented message being assembled.
    partial: Option<(u8, Vec<u8>)>,
    /// A fragmented message completed by the last call, handed out as a slice.
    assembled: Vec<u8>,
    /// The last read filled the buffer: the next one gets a bigger one.
    full_read: bool,
}

/// A frame header as parsed from the buffer.
struct Head {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

fn parse_head(b: &[u8]) -> Result<Option<Head>, ClientError> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ClientError::Protocol(String::from(
            "reserved bits set (no extension was negotiated)",
        )));
    }
    if b1 & 0x80 != 0 {
        return Err(ClientError::Protocol(String::from(
            "masked frame from the server",
        )));
    }
    let (header_len, payload_len) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(s) => (4, usize::from(u16::from_be_bytes([s[0], s[1]]))),
            None => return Ok(None),
        },
        127 => match b.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(s) => (
                10,
                usize::try_from(u64::from_be_bytes(s)).unwrap_or(usize::MAX),
            ),
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    if payload_len > MAX_MESSAGE {
        return Err(ClientError::Protocol(format!(
            "frame of {payload_len} bytes exceeds {MAX_MESSAGE}"
        )));
    }
    Ok(Some(Head {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        header_len,
        payload_len,
    }))
}

impl FrameParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self {
            buf: vec![0; INITIAL_BUFFER],
            ..Self::default()
        }
    }

    /// Room to read into: compacts the buffer, grows it after reads that filled
    /// it (up to 128 KiB) and to the size of a frame that needs more.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut cap = self.buf.len().max(INITIAL_BUFFER);
        if self.full_read && cap < MAX_READ_BUFFER {
            cap = (cap * 2).min(MAX_READ_BUFFER);
        }
        self.full_read = false;
        cap = cap.max(self.needed());
        if self.end >= cap {
            cap = self.end.saturating_mul(2).max(INITIAL_BUFFER);
        }
        if cap > self.buf.len() {
            self.buf.resize(cap, 0);
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Bytes the frame at the start of the buffer needs in total, when known.
    fn needed(&self) -> usize {
        let data = self.buf.get(self.start..self.end).unwrap_or_default();
        match parse_head(data) {
            Ok(Some(h)) => h.header_len.saturating_add(h.payload_len),
            _ => 0,
        }
    }

    /// Marks `n` bytes of [`Self::spare`] as filled.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
        self.full_read = self.end == self.buf.len();
    }

    /// Copies bytes into the buffer (tests, and bytes read past an upgrade head).
    pub fn push(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(rest.len());
            if let (Some(dst), Some(src)) = (spare.get_mut(..n), rest.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.filled(n);
            rest = rest.get(n..).unwrap_or_default();
        }
    }

    /// Bytes held and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// True when no bytes are held and no fragmented message is being assembled:
    /// the next bytes may then be parsed outside the parser with [`whole_frame`].
    pub fn is_idle(&self) -> bool {
        self.start == self.end && self.partial.is_none()
    }

    /// The next complete message or control frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ClientError> {
        loop {
            let data = self.buf.get(self.start..self.end).unwrap_or_default();
            let Some(head) = parse_head(data)? else {
                return Ok(None);
            };
            let total = head.header_len + head.payload_len;
            if data.len() < total {
                return Ok(None);
            }
            let from = self.start + head.header_len;
            let to = self.start + total;
            self.start = to;
            let is_control = head.opcode >= OP_CLOSE;
            if is_control && (!head.fin || head.payload_len > 125) {
                return Err(ClientError::Protocol(String::from(
                    "fragmented or oversized control frame",
                )));
            }
            match head.opcode {
                OP_TEXT | OP_BINARY if head.fin => {
                    if self.partial.is_some() {
                        return Err(ClientError::Protocol(String::from(
                            "new message inside a fragmented one",
                        )));
                    }
                    let payload = self.buf.get(from..to).unwrap_or_default();
                    return Ok(Some(if head.opcode == OP_TEXT {
                        Frame::Text(payload)
                    } else {
                        Frame::Binary(payload)
                    }));
                }
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(ClientError::Protocol(String::from(
                            "new message inside a fragmented one",
                        )));
                    }
                    let payload = self.buf.get(from..to).unwrap_or_default().to_vec();
                    self.partial = Some((head.opcode, payload));
                }
                OP_CONT => {
                    let Some((opcode, mut acc)) = self.partial.take() else {
                        return Err(ClientError::Protocol(String::from(
                            "continuation without a message",
                        )));
                    };
                    acc.extend_from_slice(self.buf.get(from..to).unwrap_or_default());
                    if acc.len() > MAX_MESSAGE {
                        return Err(ClientError::Protocol(String::from("message too large")));
                    }
                    if head.fin {
                        self.assembled = acc;
                        let payload = self.assembled.as_slice();
                        return Ok(Some(if opcode == OP_TEXT {
                            Frame::Text(payload)
                        } else {
                            Frame::Binary(payload)
                        }));
                    }
                    self.partial = Some((opcode, acc));
                }
                OP_CLOSE => {
                    let payload = self.buf.get(from..to).unwrap_or_default();
                    return Ok(Some(Frame::Close(close_code(payload))));
                }
                OP_PING => {
                    return Ok(Some(Frame::Ping(
                        self.buf.get(from..to).unwrap_or_default(),
                    )));
                }
                OP_PONG => return Ok(Some(Frame::Pong)),
                other => {
                    return Err(ClientError::Protocol(format!("unknown opcode {other}")));
                }
            }
        }
    }
}

/// The complete, unfragmented message or control frame at the start of `data`,
/// and its length on the wire. `Ok(None)` when `data` holds less than a frame or
/// the frame is a fragment: give the bytes to a [`FrameParser`] then, which
/// assembles fragments (and reports a continuation of nothing). Checks what
/// [`FrameParser::next_frame`] checks.
pub fn whole_frame(data: &[u8]) -> Result<Option<(Frame<'_>, usize)>, ClientError> {
    let Some(head) = parse_head(data)? else {
        return Ok(None);
    };
    let total = head.header_len + head.payload_len;
    let Some(payload) = data.get(head.header_len..total) else {
        return Ok(None);
    };
    if head.opcode >= OP_CLOSE && (!head.fin || head.payload_len > 125) {
        return Err(ClientError::Protocol(String::from(
            "fragmented or oversized control frame",
        )));
    }
    let frame = match head.opcode {
        _ if !head.fin => return Ok(None),
        OP_CONT => return Ok(None),
        OP_BINARY => Frame::Binary(payload),
        OP_TEXT => Frame::Text(payload),
        OP_CLOSE => Frame::Close(close_code(payload)),
        OP_PING => Frame::Ping(payload),
        OP_PONG => Frame::Pong,
        other => return Err(ClientError::Protocol(format!("unknown opcode {other}"))),
    };
    Ok(Some((frame, total)))
}

fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => CLOSE_NO_STATUS,
    }
}

/// Encodes one masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(byte, m)| byte ^ m),
    );
    out
}

/// The next frame mask from a xorshift state (masks need not be secret here, only vary).
pub fn next_mask(seed: &mut u32) -> [u8; 4] {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;
    x.to_le_bytes()
}

/// The `Sec-WebSocket-Accept` value for a key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Checks an upgrade response head: status 101 and the right accept key.
pub fn check_upgrade(head: &str, key: &str) -> Result<(), ClientError> {
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(ClientError::Upgrade(status.to_owned()));
    }
    let expected = accept_key(key);
    let ok = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    if ok {
        Ok(())
    } else {
        Err(ClientError::Upgrade(String::from(
            "missing or wrong Sec-WebSocket-Accept",
        )))
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path with query (`/ws`, `/sub`).
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH` with a numeric IPv4/IPv6 host.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url:?}: expected ws://HOST:PORT/PATH"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                rest.get(i..).unwrap_or("/"),
            ),
            None => (rest, "/"),
        };
        let host = if authority.starts_with("localhost:") {
            authority.replacen("localhost", "127.0.0.1", 1)
        } else {
            authority.to_owned()
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| format!("{url:?}: host must be IP:PORT ({e})"))?;
        Ok(Self {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// A connected, upgraded client connection.
#[derive(Debug)]
pub struct WsConn {
    stream: TcpStream,
    parser: FrameParser,
    mask_seed: u32,
}

/// Socket options of a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// Source address to bind before connecting (any port).
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF` to set (small for subscribers that will stop reading).
    pub recv_buffer: Option<u32>,
}

impl WsConn {
    /// Connects, upgrades, and returns the connection; bytes that came with the
    /// upgrade response stay buffered.
    pub async fn connect(
        target: &Target,
        options: ConnectOptions,
        limit: Duration,
        nonce: u64,
    ) -> Result<Self, ClientError> {
        timeout(limit, Self::connect_inner(target, options, nonce))
            .await
            .map_err(|_| ClientError::Timeout("connect and upgrade"))?
    }

    async fn connect_inner(
        target: &Target,
        options: ConnectOptions,
        nonce: u64,
    ) -> Result<Self, ClientError> {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(ip) = options.source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let key_bytes: [u8; 16] = {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&nonce.to_le_bytes());
            k[8..].copy_from_slice(&crate::runner::realtime_ns().to_le_bytes());
            k
        };
        let key = BASE64.encode(key_bytes);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        let split = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ClientError::Upgrade(String::from(
                    "connection closed during the upgrade",
                )));
            }
            head.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > MAX_HEAD {
                return Err(ClientError::Upgrade(String::from(
                    "response head too large",
                )));
            }
        };
        let text = String::from_utf8_lossy(head.get(..split).unwrap_or_default());
        check_upgrade(&text, &key)?;
        let mut parser = FrameParser::new();
        parser.push(head.get(split..).unwrap_or_default());
        Ok(Self {
            stream,
            parser,
            mask_seed: (nonce as u32) ^ 0x9e37_79b9,
        })
    }

    fn mask(&mut self) -> [u8; 4] {
        next_mask(&mut self.mask_seed)
    }

    /// Takes the connection apart for a reader that polls sockets itself: the
    /// socket (non-blocking, no longer registered with tokio), the parser with any
    /// bytes still buffered, and the mask state for [`next_mask`].
    pub fn into_parts(self) -> Result<(std::net::TcpStream, FrameParser, u32), ClientError> {
        Ok((self.stream.into_std()?, self.parser, self.mask_seed))
    }

    /// Reads more bytes from the socket; returns the time they were read
    /// (ns since the epoch). Cancel-safe: nothing is lost if the future is dropped.
    pub async fn fill(&mut self) -> Result<u64, ClientError> {
        let spare = self.parser.spare();
        let n = self.stream.read(spare).await?;
        if n == 0 {
            return Err(ClientError::Eof);
        }
        self.parser.filled(n);
        Ok(crate::runner::realtime_ns())
    }

    /// The next frame already buffered, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ClientError> {
        self.parser.next_frame()
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        let mask = self.mask();
        let frame = client_frame(OP_TEXT, text.as_bytes(), mask);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mask = self.mask();
        let frame = client_frame(OP_PONG, payload, mask);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends a close frame with `code` (does not wait for the answer).
    pub async fn close(&mut self, code: u16) -> Result<(), ClientError> {
        let mask = self.mask();
        let frame = client_frame(OP_CLOSE, &code.to_be_bytes(), mask);
        self.stream.write_all(&frame).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 65_535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_upgrade(head, "dGhlIHNhbXBsZSBub25jZQ==").is_ok());
        assert!(check_upgrade(head, "other").is_err());
        assert!(check_upgrade("HTTP/1.1 404 Not Found\r\n\r\n", "k").is_err());
    }

    #[test]
    fn frames_are_parsed_across_arbitrary_splits() -> Result<(), ClientError> {
        let big = vec![7u8; 70_000];
        let mut stream = Vec::new();
        stream.extend(server_frame(true, OP_BINARY, b"abc"));
        stream.extend(server_frame(true, OP_PING, b"p"));
        stream.extend(server_frame(false, OP_TEXT, b"hel"));
        stream.extend(server_frame(true, OP_PONG, b""));
        stream.extend(server_frame(true, OP_CONT, b"lo"));
        stream.extend(server_frame(true, OP_BINARY, &big));
        stream.extend(server_frame(true, OP_BINARY, &[1; 300]));
        stream.extend(server_frame(true, OP_CLOSE, &1013u16.to_be_bytes()));
        for chunk in [1, 3, 7, 1000, stream.len()] {
            let mut p = FrameParser::new();
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                p.push(piece);
                while let Some(f) = p.next_frame()? {
                    seen.push(match f {
                        Frame::Binary(b) => format!("bin {}", b.len()),
                        Frame::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
                        Frame::Ping(b) => format!("ping {}", b.len()),
                        Frame::Pong => String::from("pong"),
                        Frame::Close(c) => format!("close {c}"),
                    });
                }
            }
            assert_eq!(
                seen,
                [
                    "bin 3",
                    "ping 1",
                    "pong",
                    "text hello",
                    "bin 70000",
                    "bin 300",
                    "close 1013"
                ],
                "chunk {chunk}"
            );
            assert_eq!(p.buffered(), 0);
        }
        Ok(())
    }

    #[test]
    fn whole_frames_outside_the_parser_agree_with_it() -> Result<(), ClientError> {
        let mut stream = Vec::new();
        stream.extend(server_frame(true, OP_BINARY, &[3; 300]));
        stream.extend(server_frame(true, OP_PING, b"p"));
        stream.extend(server_frame(true, OP_CLOSE, &1013u16.to_be_bytes()));
        let mut data = stream.as_slice();
        let mut seen = Vec::new();
        while let Some((f, len)) = whole_frame(data)? {
            seen.push(format!("{f:?}").len());
            data = data.get(len..).unwrap_or_default();
        }
        assert!(data.is_empty());
        assert_eq!(seen.len(), 3);
        // Incomplete frames and fragments are left to the parser.
        let bin = server_frame(true, OP_BINARY, b"abc");
        assert!(whole_frame(&bin[..bin.len() - 1])?.is_none());
        assert!(whole_frame(&server_frame(false, OP_BINARY, b"a"))?.is_none());
        assert!(whole_frame(&server_frame(true, OP_CONT, b"a"))?.is_none());
        assert!(matches!(
            whole_frame(&server_frame(true, OP_CLOSE, b"")),
            Ok(Some((Frame::Close(CLOSE_NO_STATUS), 2)))
        ));
        assert!(whole_frame(&server_frame(false, OP_PING, b"x")).is_err());
        assert!(whole_frame(&[0x82, 0x81, 0, 0, 0, 0, 1]).is_err());
        assert!(whole_frame(&server_frame(true, 5, b"")).is_err());
        Ok(())
    }

    #[test]
    fn framing_violations_are_errors() {
        let cases: [Vec<u8>; 4] = [
            vec![0x82, 0x81, 0, 0, 0, 0, 1],    // masked from the server
            vec![0xC2, 0x01, 0],                // RSV1 without an extension
            server_frame(true, OP_CONT, b"x"),  // continuation of nothing
            server_frame(false, OP_PING, b"x"), // fragmented control frame
        ];
        for bytes in cases {
            let mut p = FrameParser::new();
            p.push(&bytes);
            assert!(p.next_frame().is_err(), "{bytes:?}");
        }
        let mut p = FrameParser::new();
        p.push(&server_frame(true, OP_CLOSE, b""));
        assert!(matches!(
            p.next_frame(),
            Ok(Some(Frame::Close(CLOSE_NO_STATUS)))
        ));
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(OP_TEXT, b"hi", [1, 2, 3, 4]);
        assert_eq!(f, vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        let long = client_frame(OP_TEXT, &[0; 200], [0; 4]);
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 0, 200]);
    }

    #[test]
    fn urls_parse() {
        let t = Target::parse("ws://127.0.0.1:8080/ws?format=binary");
        assert_eq!(
            t.as_ref().map(|t| (t.addr.port(), t.path.as_str())).ok(),
            Some((8080, "/ws?format=binary"))
        );
        assert!(Target::parse("ws://localhost:9/").is_ok());
        assert!(Target::parse("http://127.0.0.1:1/").is_err());
        assert!(Target::parse("ws://example.com:80/").is_err());
    }
}
