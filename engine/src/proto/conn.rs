//! One server-side WebSocket connection after the `101`: frames in, messages and control
//! replies out (RFC 6455 §5–7).
//!
//! [`WsConn`] enforces the receiving rules: client frames are masked, RSV bits are clear (but
//! RSV1 on the first frame of a data message when permessage-deflate was negotiated), fragments
//! follow each other (control frames may interleave), text is UTF-8 (checked as the bytes
//! arrive, so an invalid sequence fails the connection before the message completes), sizes stay
//! within [`ConnLimits`] (checked on the declared length, before anything is buffered, and for a
//! compressed message also on the inflated length as it is inflated), and the close handshake
//! follows §5.5.1 and §7.
//!
//! Compressed messages (RFC 7692) are inflated frame piece by frame piece as the bytes arrive
//! ([`Inflater`]); the caller only ever sees plain messages.
//!
//! It never sends data frames: the caller encodes those with [`frame::encode_header`] while
//! [`WsConn::can_send_data`] is true.

use super::close_code;
use super::deflate::{DeflateParams, InflateError, Inflater};
use super::frame::{self, FrameHeader, OpCode, RSV1};
use super::utf8::Utf8Validator;
use bytes::{Buf, Bytes, BytesMut};

/// Size limits for what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Largest message (all fragments together), in payload bytes. Default 1 MiB.
    pub max_message_bytes: usize,
    /// Largest single data frame, in payload bytes. Default 1 MiB (the message limit).
    pub max_frame_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_frame_bytes: 1 << 20,
        }
    }
}

/// A complete data message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message. tickcast does not accept them: close with
    /// [`close_code::UNSUPPORTED_DATA`].
    Binary(Bytes),
}

/// What [`WsConn::handle_input`] found in the client's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A ping with its payload; the pong is already queued (see [`WsConn::poll_transmit`]).
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// The client's close frame arrived. Our reply, if one was still owed, is queued; no more
    /// data may be sent. Flush [`WsConn::poll_transmit`], then close the TCP connection.
    Closed {
        /// The client's close code; `None` when its close frame had no payload.
        code: Option<u16>,
        /// The client's reason (may be empty).
        reason: String,
    },
}

/// The client broke the protocol. The connection queued a close frame with
/// [`close_code`](Self::close_code) (unless it had already sent one) and is now
/// [`ConnState::Closed`]: flush [`WsConn::poll_transmit`], then close the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket protocol violation (close code {close_code}): {reason}")]
pub struct ProtocolViolation {
    /// The close code sent to the client (1002, 1007 or 1009).
    pub close_code: u16,
    /// What went wrong, also sent as the close reason.
    pub reason: &'static str,
}

/// Where the connection is in the closing handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Both directions are open.
    Open,
    /// We queued a close frame ([`WsConn::close`]) and wait for the client's. The caller should
    /// give up after a timeout of its choosing.
    CloseSent,
    /// Closing is over (close frames exchanged, or the client failed the protocol): flush
    /// [`WsConn::poll_transmit`], then close the TCP connection. Further input is discarded.
    Closed,
}

/// Pongs queued at once. Beyond this the newest pong replaces the last queued one, which
/// RFC 6455 §5.5.3 allows, so that a ping flood cannot grow the queue.
const MAX_QUEUED_PONGS: u32 = 16;

/// First byte of an unmasked pong frame (FIN + opcode 0xA).
const PONG_B0: u8 = 0x80 | 0xA;

/// The server side of one WebSocket connection, sans-IO.
///
/// Methods by kind, in the order the shard calls them:
/// - input: [`handle_input`](Self::handle_input) in a loop after each read, until `Ok(None)`;
/// - output: [`poll_transmit`](Self::poll_transmit) until `None`, appending the frames to the
///   connection's out-buffer, after each input loop and after [`close`](Self::close);
/// - commands: [`close`](Self::close);
/// - state: [`state`](Self::state), [`can_send_data`](Self::can_send_data).
#[derive(Debug)]
pub struct WsConn {
    /// [`ConnLimits`], stored in 32 bits each (limits are at most 1 GiB).
    max_message: u32,
    max_frame: u32,
    state: ConnState,
    /// RSV bits a negotiated extension gives meaning to: RSV1 with permessage-deflate, and then
    /// only on the first frame of a data message (checked in `start_frame`).
    allowed_rsv: u8,
    /// permessage-deflate's inflater, when the extension was negotiated.
    /// Boxed: most connections never negotiate it, and it is rarely used when they do.
    inflater: Option<Box<Inflater>>,
    /// The frame whose payload is being received (boxed: an idle connection has none, and
    /// client frames are rare on `/ws`).
    frame: Option<Box<InFrame>>,
    /// The data message being received (opened by its first frame's header).
    /// Boxed so that an idle connection (no message in flight) does not carry its size.
    message: Option<Box<InMessage>>,
    /// Control frames to send (pongs, close), boxed only while some are queued: an idle
    /// connection pays 8 bytes for it instead of 28.
    transmit: Option<Box<Transmit>>,
}

/// Control frames to send, in order.
#[derive(Debug, Default)]
struct Transmit {
    /// (A `Vec`, smaller than a `VecDeque`: it holds at most a few frames, and
    /// `poll_transmit` empties it in one go.)
    frames: Vec<Bytes>,
    /// How many of `frames` are pongs.
    pongs: u32,
}

/// A frame whose header has been consumed and whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    /// Payload length.
    len: usize,
    /// Payload bytes processed so far: unmasked (and UTF-8 checked) in place at the front of
    /// the input, or, for a discarded frame, consumed.
    done: usize,
    /// A data frame after our close: consumed as it arrives and dropped.
    discard: bool,
    /// Check the payload as UTF-8 as it arrives (uncompressed text messages).
    check_utf8: bool,
    /// The payload is compressed: inflate it as it arrives (and check the inflated text).
    inflate: bool,
}

/// A data message being assembled.
#[derive(Debug)]
struct InMessage {
    text: bool,
    /// RSV1 was set on the first frame: the payload is DEFLATE data, inflated into `inflated`.
    compressed: bool,
    /// The inflated bytes of a compressed message.
    inflated: Vec<u8>,
    /// Payload bytes declared so far, over all fragments.
    len: usize,
    /// The fragments received so far.
    buf: BytesMut,
    utf8: Utf8Validator,
}

impl WsConn {
    /// A connection in the [`ConnState::Open`] state, right after the `101` was sent, with no
    /// extension.
    #[must_use]
    pub fn new(limits: ConnLimits) -> Self {
        Self::with_deflate(limits, None)
    }

    /// A connection whose `101` accepted permessage-deflate with `deflate` (or no extension
    /// when `None`): RSV1 marks compressed client messages, which are inflated as they arrive
    /// and reported as plain [`Message`]s.
    #[must_use]
    pub fn with_deflate(limits: ConnLimits, deflate: Option<&DeflateParams>) -> Self {
        Self {
            max_message: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
            max_frame: u32::try_from(limits.max_frame_bytes).unwrap_or(u32::MAX),
            state: ConnState::Open,
            allowed_rsv: if deflate.is_some() { RSV1 } else { 0 },
            inflater: deflate.map(|d| Box::new(Inflater::new(d))),
            frame: None,
            message: None,
            transmit: None,
        }
    }

    /// Consumes as many bytes from the front of `input` as make progress and returns the next
    /// event, or `Ok(None)` when more bytes are needed. Call it in a loop until `Ok(None)`, then
    /// drain [`poll_transmit`](Self::poll_transmit).
    ///
    /// A frame's payload is unmasked in place in `input` as it arrives and is only split off
    /// once complete, so that an unfragmented message reaches the caller without a copy.
    /// Bytes left in `input` may therefore already be unmasked: between calls, only append to
    /// `input`; never drop or reorder what is in it.
    ///
    /// Once the connection is [`ConnState::Closed`], `input` is cleared and `Ok(None)` returned.
    ///
    /// # Errors
    /// [`ProtocolViolation`] when the client broke the protocol; the close frame is queued and
    /// the connection is [`ConnState::Closed`].
    pub fn handle_input(
        &mut self,
        input: &mut BytesMut,
    ) -> Result<Option<Event>, ProtocolViolation> {
        loop {
            if self.state == ConnState::Closed {
                input.clear();
                return Ok(None);
            }
            let Some(mut frame) = self.frame.take() else {
                let (header, header_len) = match frame::parse_header(input) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(self.fail(e.close_code(), e.reason())),
                };
                self.frame = Some(Box::new(self.start_frame(&header)?));
                input.advance(header_len);
                continue;
            };

            if frame.discard {
                let n = (frame.len - frame.done).min(input.len());
                input.advance(n);
                frame.done += n;
                if frame.done < frame.len {
                    self.frame = Some(frame);
                    return Ok(None);
                }
                continue;
            }

            let end = frame.len.min(input.len());
            if let Some(fresh) = input.get_mut(frame.done..end) {
                frame::apply_mask(fresh, frame.mask, frame.done);
                if frame.inflate {
                    self.inflate_piece(fresh)?;
                }
                let bad_utf8 = frame.check_utf8
                    && self
                        .message
                        .as_mut()
                        .is_some_and(|msg| msg.utf8.feed(fresh).is_err());
                if bad_utf8 {
                    return Err(self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8 in text"));
                }
                frame.done = end;
            }
            if frame.done < frame.len || input.len() < frame.len {
                self.frame = Some(frame);
                return Ok(None);
            }
            let payload = input.split_to(frame.len);
            if let Some(event) = self.finish_frame(&frame, payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// The next control frame (pong, close) to send, in order; append it to the out-buffer.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let t = self.transmit.as_mut()?;
        let frame = (!t.frames.is_empty()).then(|| t.frames.remove(0));
        if frame.as_ref().is_some_and(|f| f.first() == Some(&PONG_B0)) {
            t.pongs = t.pongs.saturating_sub(1);
        }
        if t.frames.is_empty() {
            // Close and pong frames are rare: an idle connection keeps no storage for them.
            self.transmit = None;
        }
        frame
    }

    /// Starts a server-initiated close: queues a close frame with `code` and `reason` (cut to
    /// fit a control frame) and moves to [`ConnState::CloseSent`]. From then on no data may be
    /// sent, client data frames are dropped, and the client's close ends the connection.
    ///
    /// A `code` that may not be sent on the wire (see [`close_code::is_valid`]) is replaced by
    /// [`close_code::INTERNAL_ERROR`]. Does nothing unless the connection is open.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state != ConnState::Open {
            return;
        }
        let code = if close_code::is_valid(code) {
            code
        } else {
            close_code::INTERNAL_ERROR
        };
        self.queue_frame(frame::encode_close(code, reason));
        self.state = ConnState::CloseSent;
        self.drop_message();
    }

    /// Whether permessage-deflate was negotiated on this connection.
    #[must_use]
    pub fn deflate(&self) -> bool {
        self.inflater.is_some()
    }

    /// Where the connection is in the closing handshake.
    #[must_use]
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Whether data frames may still be sent (the connection is [`ConnState::Open`]).
    #[must_use]
    pub fn can_send_data(&self) -> bool {
        self.state == ConnState::Open
    }

    /// Checks a new frame's header against the connection's rules and opens or continues the
    /// data message it belongs to.
    fn start_frame(&mut self, header: &FrameHeader) -> Result<InFrame, ProtocolViolation> {
        use close_code::{PROTOCOL_ERROR, TOO_BIG};

        let Some(mask) = header.mask else {
            return Err(self.fail(PROTOCOL_ERROR, "client frame not masked"));
        };
        if header.rsv & !self.allowed_rsv != 0 {
            return Err(self.fail(PROTOCOL_ERROR, "reserved bits set"));
        }
        let rsv1 = header.rsv & RSV1 != 0;
        if rsv1 && header.opcode.is_control() {
            return Err(self.fail(PROTOCOL_ERROR, "compressed control frame"));
        }
        if rsv1 && header.opcode == OpCode::Continuation {
            return Err(self.fail(PROTOCOL_ERROR, "RSV1 on a continuation frame"));
        }
        let len = match usize::try_from(header.payload_len) {
            Ok(len) if header.opcode.is_control() || len <= self.max_frame as usize => len,
            _ => return Err(self.fail(TOO_BIG, "frame too big")),
        };
        let mut frame = InFrame {
            opcode: header.opcode,
            fin: header.fin,
            mask,
            len,
            done: 0,
            discard: false,
            check_utf8: false,
            inflate: false,
        };
        match header.opcode {
            // parse_header already bounded control frames to 125 bytes with FIN.
            OpCode::Close | OpCode::Ping | OpCode::Pong => {}
            _ if self.state != ConnState::Open => frame.discard = true,
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(self.fail(PROTOCOL_ERROR, "new message inside a fragmented one"));
                }
                if len > self.max_message as usize {
                    return Err(self.fail(TOO_BIG, "message too big"));
                }
                let text = header.opcode == OpCode::Text;
                frame.check_utf8 = text && !rsv1;
                frame.inflate = rsv1;
                self.message = Some(Box::new(InMessage {
                    text,
                    compressed: rsv1,
                    inflated: Vec::new(),
                    len,
                    buf: BytesMut::new(),
                    utf8: Utf8Validator::default(),
                }));
            }
            OpCode::Continuation => {
                let Some(msg) = &mut self.message else {
                    return Err(self.fail(PROTOCOL_ERROR, "continuation without a message"));
                };
                msg.len = msg.len.saturating_add(len);
                frame.check_utf8 = msg.text && !msg.compressed;
                frame.inflate = msg.compressed;
                if msg.len > self.max_message as usize {
                    return Err(self.fail(TOO_BIG, "message too big"));
                }
            }
        }
        Ok(frame)
    }

    /// Acts on a frame whose whole (unmasked) payload has arrived.
    fn finish_frame(
        &mut self,
        frame: &InFrame,
        payload: BytesMut,
    ) -> Result<Option<Event>, ProtocolViolation> {
        let open = self.state == ConnState::Open;
        match frame.opcode {
            OpCode::Close => self.on_close(&payload).map(Some),
            OpCode::Ping if open => {
                self.queue_pong(&payload);
                Ok(Some(Event::Ping(payload.freeze())))
            }
            OpCode::Pong if open => Ok(Some(Event::Pong(payload.freeze()))),
            // After our close, pings are not answered and pongs are not reported.
            OpCode::Ping | OpCode::Pong => Ok(None),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.on_data(frame.fin, payload)
            }
        }
    }

    /// Adds a data frame's payload to the open message; returns the message on its last frame.
    fn on_data(
        &mut self,
        fin: bool,
        payload: BytesMut,
    ) -> Result<Option<Event>, ProtocolViolation> {
        // No message when it was dropped by `close()` while this frame was arriving.
        let Some(msg) = &mut self.message else {
            return Ok(None);
        };
        if msg.compressed {
            // The payload was inflated as it arrived; `payload` is the spent DEFLATE data.
            return if fin {
                self.finish_compressed()
            } else {
                Ok(None)
            };
        }
        if msg.buf.is_empty() {
            // The first (often only) fragment: keep the split-off input buffer, no copy.
            msg.buf = payload;
        } else {
            msg.buf.extend_from_slice(&payload);
        }
        if !fin {
            return Ok(None);
        }
        let Some(mut msg) = self.message.take() else {
            return Ok(None);
        };
        if !msg.text {
            return Ok(Some(Event::Message(Message::Binary(msg.buf.freeze()))));
        }
        if msg.utf8.finish().is_err() {
            return Err(self.fail(
                close_code::INVALID_PAYLOAD,
                "text ends inside a UTF-8 sequence",
            ));
        }
        Ok(Some(Event::Message(Message::Text(msg.buf.freeze()))))
    }

    /// Inflates a newly arrived (unmasked) piece of a compressed message's payload, checking the
    /// inflated size and, for text, the inflated bytes as UTF-8.
    fn inflate_piece(&mut self, data: &[u8]) -> Result<(), ProtocolViolation> {
        let limit = self.max_message as usize;
        let (Some(msg), Some(inflater)) = (self.message.as_mut(), self.inflater.as_mut()) else {
            return Ok(());
        };
        let start = msg.inflated.len();
        let result = inflater.inflate(data, &mut msg.inflated, limit);
        let bad_utf8 = msg.text
            && msg
                .utf8
                .feed(msg.inflated.get(start..).unwrap_or_default())
                .is_err();
        self.check_inflated(result, bad_utf8)
    }

    /// Completes a compressed message: inflates the removed tail, finishes the UTF-8 check.
    fn finish_compressed(&mut self) -> Result<Option<Event>, ProtocolViolation> {
        let limit = self.max_message as usize;
        let (Some(mut msg), Some(inflater)) = (self.message.take(), self.inflater.as_mut()) else {
            return Ok(None);
        };
        let start = msg.inflated.len();
        let result = inflater.finish_message(&mut msg.inflated, limit);
        let bad_utf8 = msg.text
            && (msg
                .utf8
                .feed(msg.inflated.get(start..).unwrap_or_default())
                .is_err()
                || msg.utf8.finish().is_err());
        self.check_inflated(result, bad_utf8)?;
        let data = bytes::Bytes::from(msg.inflated);
        Ok(Some(Event::Message(if msg.text {
            Message::Text(data)
        } else {
            Message::Binary(data)
        })))
    }

    fn check_inflated(
        &mut self,
        result: Result<(), InflateError>,
        bad_utf8: bool,
    ) -> Result<(), ProtocolViolation> {
        match result {
            Err(InflateError::TooBig) => Err(self.fail(close_code::TOO_BIG, "message too big")),
            Err(InflateError::Corrupt) => Err(self.fail(
                close_code::INVALID_PAYLOAD,
                "invalid permessage-deflate data",
            )),
            Ok(()) if bad_utf8 => {
                Err(self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8 in text"))
            }
            Ok(()) => Ok(()),
        }
    }

    /// Drops the message being received (and the inflater's state for it).
    fn drop_message(&mut self) {
        if self.message.take().is_some_and(|m| m.compressed) {
            if let Some(inflater) = self.inflater.as_mut() {
                inflater.abandon();
            }
        }
    }

    /// The client's close frame: validate it, echo it if we have not sent ours, and finish.
    fn on_close(&mut self, payload: &[u8]) -> Result<Event, ProtocolViolation> {
        let (code, reason) = match payload.split_first_chunk::<2>() {
            None if payload.is_empty() => (None, String::new()),
            None => {
                return Err(self.fail(close_code::PROTOCOL_ERROR, "close payload of one byte"));
            }
            Some((code, reason)) => {
                let code = u16::from_be_bytes(*code);
                if !close_code::is_valid(code) {
                    return Err(self.fail(close_code::PROTOCOL_ERROR, "invalid close code"));
                }
                let Ok(reason) = std::str::from_utf8(reason) else {
                    return Err(self.fail(close_code::INVALID_PAYLOAD, "close reason not UTF-8"));
                };
                (Some(code), reason.to_owned())
            }
        };
        if self.state == ConnState::Open {
            let echo = code.unwrap_or(close_code::NORMAL);
            self.queue_frame(frame::encode_close(echo, ""));
        }
        self.state = ConnState::Closed;
        self.drop_message();
        Ok(Event::Closed { code, reason })
    }

    fn queue_pong(&mut self, payload: &[u8]) {
        let pong = frame::encode_control(OpCode::Pong, payload);
        let t = self.transmit.get_or_insert_with(Box::default);
        if t.pongs >= MAX_QUEUED_PONGS {
            // While open, only pongs are queued, so the last frame is a pong.
            if let Some(last) = t.frames.last_mut() {
                *last = pong;
                return;
            }
        }
        t.frames.push(pong);
        t.pongs += 1;
    }

    /// Queues a control frame for [`Self::poll_transmit`].
    fn queue_frame(&mut self, frame: Bytes) {
        self.transmit
            .get_or_insert_with(Box::default)
            .frames
            .push(frame);
    }

    /// Fails the connection (RFC 6455 §7.1.7): queue a close with `code` unless one was sent,
    /// drop all receive state, and stop processing input.
    fn fail(&mut self, code: u16, reason: &'static str) -> ProtocolViolation {
        if self.state == ConnState::Open {
            self.queue_frame(frame::encode_close(code, reason));
        }
        self.state = ConnState::Closed;
        self.frame = None;
        self.drop_message();
        ProtocolViolation {
            close_code: code,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame built by hand (masking written out bytewise, independent of
    /// `apply_mask`). `b0` is FIN/RSV/opcode.
    fn raw_frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let bit = if mask.is_some() { 0x80 } else { 0 };
        let mut out = vec![b0];
        let len = payload.len();
        if len <= 125 {
            out.push(bit | len as u8);
        } else if len <= 0xFFFF {
            out.push(bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        match mask {
            Some(m) => {
                out.extend_from_slice(&m);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        raw_frame(if fin { 0x80 } else { 0 } | opcode, payload, Some(MASK))
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    type Outcome = Result<Event, ProtocolViolation>;

    /// Appends `bytes` and collects events until more input is needed or an error.
    fn feed(conn: &mut WsConn, input: &mut BytesMut, bytes: &[u8]) -> Vec<Outcome> {
        input.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match conn.handle_input(input) {
                Ok(Some(ev)) => out.push(Ok(ev)),
                Ok(None) => return out,
                Err(v) => {
                    out.push(Err(v));
                    return out;
                }
            }
        }
    }

    fn feed_all(bytes: &[u8]) -> (WsConn, Vec<Outcome>) {
        let mut conn = WsConn::new(ConnLimits::default());
        let out = feed(&mut conn, &mut BytesMut::new(), bytes);
        (conn, out)
    }

    fn transmitted(conn: &mut WsConn) -> Vec<Bytes> {
        std::iter::from_fn(|| conn.poll_transmit()).collect()
    }

    fn text(s: &str) -> Outcome {
        Ok(Event::Message(Message::Text(Bytes::copy_from_slice(
            s.as_bytes(),
        ))))
    }

    fn violation(code: u16) -> impl Fn(&Outcome) -> bool {
        move |o| matches!(o, Err(v) if v.close_code == code)
    }

    #[test]
    fn masked_text_and_binary() {
        let mut bytes = frame(true, 0x1, b"hello");
        bytes.extend(frame(true, 0x2, &[1, 2, 3]));
        bytes.extend(frame(true, 0x1, b""));
        let (mut conn, events) = feed_all(&bytes);
        assert_eq!(
            events,
            vec![
                text("hello"),
                Ok(Event::Message(Message::Binary(Bytes::from_static(&[
                    1, 2, 3
                ])))),
                text(""),
            ]
        );
        assert!(transmitted(&mut conn).is_empty());
        assert_eq!(conn.state(), ConnState::Open);
    }

    #[test]
    fn unfragmented_message_is_not_copied() {
        let payload = vec![b'x'; 1000];
        let bytes = frame(true, 0x1, &payload);
        let header_len = bytes.len() - payload.len();
        let mut input = BytesMut::from(&bytes[..]);
        let payload_addr = input.as_ptr() as usize + header_len;
        let mut conn = WsConn::new(ConnLimits::default());
        let Ok(Some(Event::Message(Message::Text(got)))) = conn.handle_input(&mut input) else {
            panic!("expected a text message");
        };
        assert_eq!(got.as_ptr() as usize, payload_addr);
        assert_eq!(&got[..], &payload[..]);
        assert!(input.is_empty());
    }

    #[test]
    fn fragmentation_with_interleaved_control_frames() {
        let mut bytes = frame(false, 0x1, b"Hel");
        bytes.extend(frame(true, 0x9, b"p1"));
        bytes.extend(frame(false, 0x0, b"lo "));
        bytes.extend(frame(true, 0xA, b"unsolicited"));
        bytes.extend(frame(false, 0x0, b""));
        bytes.extend(frame(true, 0x0, b"world"));
        bytes.extend(frame(true, 0x9, b"p2"));
        let (mut conn, events) = feed_all(&bytes);
        assert_eq!(
            events,
            vec![
                Ok(Event::Ping(Bytes::from_static(b"p1"))),
                Ok(Event::Pong(Bytes::from_static(b"unsolicited"))),
                text("Hello world"),
                Ok(Event::Ping(Bytes::from_static(b"p2"))),
            ]
        );
        assert_eq!(
            transmitted(&mut conn),
            vec![
                frame::encode_control(OpCode::Pong, b"p1"),
                frame::encode_control(OpCode::Pong, b"p2"),
            ]
        );
    }

    #[test]
    fn fragmented_binary_message() {
        let mut bytes = frame(false, 0x2, &[1, 2]);
        bytes.extend(frame(false, 0x0, &[3]));
        bytes.extend(frame(true, 0x0, &[4, 5]));
        let (_, events) = feed_all(&bytes);
        assert_eq!(
            events,
            vec![Ok(Event::Message(Message::Binary(Bytes::from_static(&[
                1, 2, 3, 4, 5
            ]))))]
        );
    }

    #[test]
    fn each_violation_closes_with_its_code() {
        let mut long_len = vec![0x82, 0x80 | 127];
        long_len.extend_from_slice(&(1u64 << 63).to_be_bytes());
        long_len.extend_from_slice(&MASK);
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", raw_frame(0x81, b"hi", None), 1002),
            (
                "rsv1",
                raw_frame(0x80 | 0x40 | 0x1, b"hi", Some(MASK)),
                1002,
            ),
            (
                "rsv2",
                raw_frame(0x80 | 0x20 | 0x2, b"hi", Some(MASK)),
                1002,
            ),
            (
                "rsv3 on ping",
                raw_frame(0x80 | 0x10 | 0x9, b"", Some(MASK)),
                1002,
            ),
            ("reserved data opcode", frame(true, 0x3, b""), 1002),
            ("reserved control opcode", frame(true, 0xB, b""), 1002),
            ("continuation without start", frame(true, 0x0, b"x"), 1002),
            (
                "text inside fragmented",
                [frame(false, 0x1, b"a"), frame(true, 0x1, b"b")].concat(),
                1002,
            ),
            (
                "binary inside fragmented",
                [frame(false, 0x2, b"a"), frame(true, 0x2, b"b")].concat(),
                1002,
            ),
            ("fragmented ping", frame(false, 0x9, b""), 1002),
            ("ping over 125", frame(true, 0x9, &[0; 126]), 1002),
            ("close of one byte", frame(true, 0x8, &[3]), 1002),
            ("64-bit length top bit", long_len, 1002),
            ("invalid utf-8 text", frame(true, 0x1, &[b'a', 0xFF]), 1007),
            (
                "cut utf-8 at end",
                frame(true, 0x1, &[b'a', 0xE2, 0x82]),
                1007,
            ),
            (
                "close reason not utf-8",
                frame(true, 0x8, &[0x03, 0xE8, 0xC0]),
                1007,
            ),
        ];
        for (name, bytes, code) in cases {
            let (mut conn, events) = feed_all(&bytes);
            assert!(
                events.last().is_some_and(violation(code)),
                "{name}: got {events:?}"
            );
            assert_eq!(conn.state(), ConnState::Closed, "{name}");
            assert!(!conn.can_send_data(), "{name}");
            let out = transmitted(&mut conn);
            assert_eq!(out.len(), 1, "{name}");
            assert_eq!(out[0][0], 0x88, "{name}");
            assert_eq!(u16::from_be_bytes([out[0][2], out[0][3]]), code, "{name}");
            // Nothing more is processed afterwards.
            let mut input = BytesMut::from(&frame(true, 0x1, b"late")[..]);
            assert_eq!(conn.handle_input(&mut input), Ok(None), "{name}");
            assert!(input.is_empty(), "{name}");
        }
    }

    #[test]
    fn utf8_split_across_fragments() {
        // "€" = E2 82 AC, one byte per fragment, with a ping in between.
        let mut bytes = frame(false, 0x1, &[b'x', 0xE2]);
        bytes.extend(frame(false, 0x0, &[0x82]));
        bytes.extend(frame(true, 0x9, b""));
        bytes.extend(frame(true, 0x0, &[0xAC]));
        let (_, events) = feed_all(&bytes);
        assert_eq!(events, vec![Ok(Event::Ping(Bytes::new())), text("x€")]);
    }

    #[test]
    fn invalid_utf8_fails_before_message_completes() {
        let mut conn = WsConn::new(ConnLimits::default());
        let mut input = BytesMut::new();
        // F4 is a valid lead byte; F4 90 is not (above U+10FFFF).
        assert!(feed(&mut conn, &mut input, &frame(false, 0x1, &[b'a', 0xF4])).is_empty());
        let events = feed(
            &mut conn,
            &mut input,
            &frame(false, 0x0, &[0x90, 0x80, 0x80]),
        );
        assert!(events.last().is_some_and(violation(1007)), "{events:?}");
    }

    #[test]
    fn invalid_utf8_fails_before_frame_completes() {
        // One 40-byte frame; the invalid byte is at payload offset 3; feed the frame in chops.
        let mut payload = b"abc".to_vec();
        payload.push(0xC0);
        payload.resize(40, b'z');
        let bytes = frame(true, 0x1, &payload);
        let header_len = bytes.len() - payload.len();
        let mut conn = WsConn::new(ConnLimits::default());
        let mut input = BytesMut::new();
        assert!(feed(&mut conn, &mut input, &bytes[..header_len + 3]).is_empty());
        let events = feed(
            &mut conn,
            &mut input,
            &bytes[header_len + 3..header_len + 5],
        );
        assert!(events.last().is_some_and(violation(1007)), "{events:?}");
    }

    #[test]
    fn peer_close_is_echoed() {
        let (mut conn, events) = feed_all(&frame(true, 0x8, &close_payload(1001, "bye")));
        assert_eq!(
            events,
            vec![Ok(Event::Closed {
                code: Some(1001),
                reason: "bye".into()
            })]
        );
        assert_eq!(conn.state(), ConnState::Closed);
        assert!(!conn.can_send_data());
        assert_eq!(transmitted(&mut conn), vec![frame::encode_close(1001, "")]);

        // Without a code: reported as None, answered with 1000.
        let (mut conn, events) = feed_all(&frame(true, 0x8, b""));
        assert_eq!(
            events,
            vec![Ok(Event::Closed {
                code: None,
                reason: String::new()
            })]
        );
        assert_eq!(transmitted(&mut conn), vec![frame::encode_close(1000, "")]);
    }

    #[test]
    fn close_codes_are_validated() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 3999, 4000, 4999,
        ] {
            let (mut conn, events) = feed_all(&frame(true, 0x8, &close_payload(code, "")));
            assert!(
                matches!(&events[..], [Ok(Event::Closed { code: Some(c), .. })] if *c == code),
                "{code}: {events:?}"
            );
            assert_eq!(transmitted(&mut conn), vec![frame::encode_close(code, "")]);
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let (_, events) = feed_all(&frame(true, 0x8, &close_payload(code, "")));
            assert!(
                events.last().is_some_and(violation(1002)),
                "{code}: {events:?}"
            );
        }
    }

    #[test]
    fn server_close_then_peer_reply() {
        let mut conn = WsConn::new(ConnLimits::default());
        let mut input = BytesMut::new();
        // A text message is half received when we close.
        assert!(feed(&mut conn, &mut input, &frame(false, 0x1, b"half")).is_empty());
        conn.close(close_code::TRY_AGAIN_LATER, "slow consumer");
        assert_eq!(conn.state(), ConnState::CloseSent);
        assert!(!conn.can_send_data());
        assert_eq!(
            transmitted(&mut conn),
            vec![frame::encode_close(1013, "slow consumer")]
        );
        conn.close(1000, "again"); // no-op
        assert!(transmitted(&mut conn).is_empty());

        // Data (even a continuation and a new message), pings and pongs are dropped.
        let mut bytes = frame(true, 0x0, b"rest");
        bytes.extend(frame(true, 0x1, &[0xFF; 300]));
        bytes.extend(frame(true, 0x9, b"ping"));
        bytes.extend(frame(true, 0xA, b"pong"));
        assert!(feed(&mut conn, &mut input, &bytes).is_empty());
        assert!(transmitted(&mut conn).is_empty());

        // The reply closes without another frame from us.
        let events = feed(
            &mut conn,
            &mut input,
            &frame(true, 0x8, &close_payload(1000, "")),
        );
        assert_eq!(
            events,
            vec![Ok(Event::Closed {
                code: Some(1000),
                reason: String::new()
            })]
        );
        assert_eq!(conn.state(), ConnState::Closed);
        assert!(transmitted(&mut conn).is_empty());
    }

    #[test]
    fn invalid_server_close_code_is_replaced() {
        let mut conn = WsConn::new(ConnLimits::default());
        conn.close(1005, "");
        assert_eq!(transmitted(&mut conn), vec![frame::encode_close(1011, "")]);
    }

    #[test]
    fn size_limits_use_declared_length() {
        let limits = ConnLimits {
            max_message_bytes: 10,
            max_frame_bytes: 8,
        };
        // A frame declaring 9 bytes fails on its header alone.
        let bytes = frame(true, 0x2, &[0; 9]);
        let mut conn = WsConn::new(limits);
        let events = feed(&mut conn, &mut BytesMut::new(), &bytes[..6]);
        assert!(events.last().is_some_and(violation(1009)), "{events:?}");

        // 6 + 5 fragments pass the frame limit but not the message limit.
        let mut conn = WsConn::new(limits);
        let mut input = BytesMut::new();
        assert!(feed(&mut conn, &mut input, &frame(false, 0x1, b"aaaaaa")).is_empty());
        let events = feed(&mut conn, &mut input, &frame(false, 0x0, b"bbbbb")[..6]);
        assert!(events.last().is_some_and(violation(1009)), "{events:?}");

        // Exactly at the limits is fine.
        let mut conn = WsConn::new(limits);
        let mut bytes = frame(false, 0x1, b"aaaaaaaa");
        bytes.extend(frame(true, 0x0, b"bb"));
        let events = feed(&mut conn, &mut BytesMut::new(), &bytes);
        assert_eq!(events, vec![text("aaaaaaaabb")]);

        // A 64-bit declared length is refused before any payload is buffered.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&MASK);
        let (_, events) = feed_all(&huge);
        assert!(events.last().is_some_and(violation(1009)), "{events:?}");
    }

    #[test]
    fn ping_flood_keeps_the_pong_queue_bounded() {
        let bytes: Vec<u8> = (0..40u8).flat_map(|i| frame(true, 0x9, &[i])).collect();
        let (mut conn, events) = feed_all(&bytes);
        assert_eq!(events.len(), 40);
        let out = transmitted(&mut conn);
        assert_eq!(out.len(), MAX_QUEUED_PONGS as usize);
        assert_eq!(out[0], frame::encode_control(OpCode::Pong, &[0]));
        // The most recent ping is always answered.
        assert_eq!(
            out.last(),
            Some(&frame::encode_control(OpCode::Pong, &[39]))
        );
    }

    #[test]
    fn byte_at_a_time() {
        let mut bytes = frame(false, 0x1, "κό".as_bytes());
        bytes.extend(frame(true, 0x9, b"p"));
        bytes.extend(frame(true, 0x0, "σμε".as_bytes()));
        bytes.extend(frame(true, 0x8, &close_payload(1000, "ok")));
        let mut conn = WsConn::new(ConnLimits::default());
        let mut input = BytesMut::new();
        let events: Vec<Outcome> = bytes
            .iter()
            .flat_map(|b| feed(&mut conn, &mut input, std::slice::from_ref(b)))
            .collect();
        assert_eq!(
            events,
            vec![
                Ok(Event::Ping(Bytes::from_static(b"p"))),
                text("κόσμε"),
                Ok(Event::Closed {
                    code: Some(1000),
                    reason: "ok".into()
                }),
            ]
        );
    }

    /// A client's compressed message payload (RFC 7692 §7.2.1: sync flush, tail removed),
    /// made with flate2 directly, independently of our `Deflater`.
    fn deflated(data: &[u8]) -> Vec<u8> {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    fn deflate_conn(params: DeflateParams, limits: ConnLimits) -> WsConn {
        WsConn::with_deflate(limits, Some(&params))
    }

    #[test]
    fn compressed_messages_are_inflated() {
        let words = "subscribe to everything, everything, everything ".repeat(10);
        let z = deflated(words.as_bytes());
        assert!(z.len() < words.len() / 4);
        // Single frame, RSV1 + text; then a fragmented binary message with a ping inside,
        // RSV1 on the first frame only; then an uncompressed message (RSV1 is per message).
        let mut bytes = raw_frame(0x80 | 0x40 | 0x1, &z, Some(MASK));
        let bin: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        let zb = deflated(&bin);
        let cut = zb.len() / 2;
        bytes.extend(raw_frame(0x40 | 0x2, &zb[..cut], Some(MASK)));
        bytes.extend(frame(true, 0x9, b"p"));
        bytes.extend(frame(false, 0x0, &zb[cut..cut + 1]));
        bytes.extend(frame(true, 0x0, &zb[cut + 1..]));
        bytes.extend(frame(true, 0x1, b"plain"));
        // An empty compressed message is the single byte 00.
        bytes.extend(raw_frame(0x80 | 0x40 | 0x1, &[0x00], Some(MASK)));
        let want = vec![
            text(&words),
            Ok(Event::Ping(Bytes::from_static(b"p"))),
            Ok(Event::Message(Message::Binary(Bytes::from(bin)))),
            text("plain"),
            text(""),
        ];
        for params in [
            DeflateParams::default(),
            DeflateParams {
                client_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ] {
            let mut conn = deflate_conn(params, ConnLimits::default());
            assert!(conn.deflate());
            assert_eq!(feed(&mut conn, &mut BytesMut::new(), &bytes), want);
            // Byte at a time gives the same.
            let mut conn = deflate_conn(params, ConnLimits::default());
            let mut input = BytesMut::new();
            let got: Vec<Outcome> = bytes
                .iter()
                .flat_map(|b| feed(&mut conn, &mut input, std::slice::from_ref(b)))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn compression_violations() {
        let z = deflated(b"hello");
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            (
                "rsv1 on a continuation",
                [
                    raw_frame(0x40 | 0x1, &z, Some(MASK)),
                    raw_frame(0x80 | 0x40, &z, Some(MASK)),
                ]
                .concat(),
                1002,
            ),
            (
                "rsv1 on an uncompressed message's continuation",
                [
                    frame(false, 0x1, b"a"),
                    raw_frame(0x80 | 0x40, b"b", Some(MASK)),
                ]
                .concat(),
                1002,
            ),
            (
                "rsv1 on a ping",
                raw_frame(0x80 | 0x40 | 0x9, b"", Some(MASK)),
                1002,
            ),
            (
                "rsv1 on a close",
                raw_frame(0x80 | 0x40 | 0x8, &[3, 232], Some(MASK)),
                1002,
            ),
            ("rsv2", raw_frame(0x80 | 0x20 | 0x1, b"x", Some(MASK)), 1002),
            (
                "corrupt data",
                raw_frame(0x80 | 0x40 | 0x2, &[0xff, 0xff, 0xff, 0xff], Some(MASK)),
                1007,
            ),
            (
                "inflated text is not UTF-8",
                raw_frame(
                    0x80 | 0x40 | 0x1,
                    &deflated(&[b'a', 0xff, b'b']),
                    Some(MASK),
                ),
                1007,
            ),
            (
                "inflated text ends inside a sequence",
                raw_frame(
                    0x80 | 0x40 | 0x1,
                    &deflated(&[b'a', 0xe2, 0x82]),
                    Some(MASK),
                ),
                1007,
            ),
        ];
        for (name, bytes, code) in cases {
            let mut conn = deflate_conn(DeflateParams::default(), ConnLimits::default());
            let events = feed(&mut conn, &mut BytesMut::new(), &bytes);
            assert!(
                events.last().is_some_and(violation(code)),
                "{name}: {events:?}"
            );
            assert_eq!(conn.state(), ConnState::Closed, "{name}");
        }
    }

    #[test]
    fn compressed_invalid_utf8_fails_before_the_message_ends() {
        // First fragment inflates to invalid UTF-8: fail without waiting for the rest.
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut z = Vec::with_capacity(256);
        c.compress_vec(
            &[b'o', b'k', 0xc0, 0x80],
            &mut z,
            flate2::FlushCompress::Sync,
        )
        .unwrap();
        let mut conn = deflate_conn(DeflateParams::default(), ConnLimits::default());
        let events = feed(
            &mut conn,
            &mut BytesMut::new(),
            &raw_frame(0x40 | 0x1, &z, Some(MASK)),
        );
        assert!(events.last().is_some_and(violation(1007)), "{events:?}");
    }

    #[test]
    fn zip_bomb_is_refused_on_the_inflated_size() {
        let limits = ConnLimits {
            max_message_bytes: 64 << 10,
            max_frame_bytes: 64 << 10,
        };
        // 10 MiB of zeros: about 10 KiB compressed, well within the frame limit.
        let z = deflated(&vec![0u8; 10 << 20]);
        assert!(z.len() < limits.max_frame_bytes);
        let mut conn = deflate_conn(DeflateParams::default(), limits);
        let events = feed(
            &mut conn,
            &mut BytesMut::new(),
            &raw_frame(0x80 | 0x40 | 0x2, &z, Some(MASK)),
        );
        assert!(events.last().is_some_and(violation(1009)), "{events:?}");
        // At the limit exactly: accepted.
        let z = deflated(&vec![0u8; 64 << 10]);
        let mut conn = deflate_conn(DeflateParams::default(), limits);
        let events = feed(
            &mut conn,
            &mut BytesMut::new(),
            &raw_frame(0x80 | 0x40 | 0x2, &z, Some(MASK)),
        );
        assert!(
            matches!(&events[..], [Ok(Event::Message(Message::Binary(b)))] if b.len() == 64 << 10)
        );
    }

    #[test]
    fn without_negotiation_rsv1_is_a_protocol_error() {
        let (_, events) = feed_all(&raw_frame(0x80 | 0x40 | 0x1, &deflated(b"x"), Some(MASK)));
        assert!(events.last().is_some_and(violation(1002)), "{events:?}");
    }

    /// Cross-check against an independent implementation: client frames encoded by tungstenite.
    #[test]
    fn decodes_frames_encoded_by_tungstenite() {
        use tungstenite::protocol::CloseFrame;
        use tungstenite::protocol::frame::{
            Frame,
            coding::{CloseCode, Data, OpCode as TgOp},
        };

        let masked = |mut f: Frame, mask: [u8; 4]| {
            f.header_mut().mask = Some(mask);
            let mut out = Vec::new();
            f.format(&mut out).unwrap();
            out
        };
        let big = "x".repeat(70_000);
        let mut bytes = masked(
            Frame::message("héllo ", TgOp::Data(Data::Text), false),
            [1, 2, 3, 4],
        );
        bytes.extend(masked(Frame::ping("are you there"), [9, 9, 9, 9]));
        bytes.extend(masked(
            Frame::message("wörld", TgOp::Data(Data::Continue), true),
            [5, 6, 7, 8],
        ));
        bytes.extend(masked(
            Frame::message(big.clone(), TgOp::Data(Data::Binary), true),
            [0xAA, 0xBB, 0xCC, 0xDD],
        ));
        bytes.extend(masked(
            Frame::close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "gone".into(),
            })),
            [4, 3, 2, 1],
        ));
        let (mut conn, events) = feed_all(&bytes);
        assert_eq!(
            events,
            vec![
                Ok(Event::Ping(Bytes::from_static(b"are you there"))),
                text("héllo wörld"),
                Ok(Event::Message(Message::Binary(Bytes::from(big)))),
                Ok(Event::Closed {
                    code: Some(1001),
                    reason: "gone".into()
                }),
            ]
        );
        assert_eq!(
            transmitted(&mut conn),
            vec![
                frame::encode_control(OpCode::Pong, b"are you there"),
                frame::encode_close(1001, ""),
            ]
        );
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled); returns outcomes and sent bytes.
    fn run_chunked(bytes: &[u8], sizes: &[usize]) -> (Vec<Outcome>, Vec<u8>) {
        let mut conn = WsConn::new(ConnLimits {
            max_message_bytes: 200,
            max_frame_bytes: 100,
        });
        let mut input = BytesMut::new();
        let mut events = Vec::new();
        let mut sent = Vec::new();
        let mut rest = bytes;
        let mut sizes = sizes.iter().copied().cycle();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let got = feed(&mut conn, &mut input, chunk);
            let failed = got.last().is_some_and(Result::is_err);
            events.extend(got);
            while let Some(f) = conn.poll_transmit() {
                sent.extend_from_slice(&f);
            }
            if failed {
                break;
            }
        }
        (events, sent)
    }

    /// A client message for the property test: text split into fragments at byte positions
    /// (possibly inside a character), binary, or a ping; each fragment may be followed by a ping.
    #[derive(Debug, Clone)]
    enum Item {
        Text(String, Vec<usize>, Vec<bool>),
        Binary(Vec<u8>, Vec<usize>, Vec<bool>),
        Ping(Vec<u8>),
    }

    fn item() -> impl Strategy<Value = Item> {
        let cuts = || proptest::collection::vec(0usize..60, 0..4);
        let pings = || proptest::collection::vec(any::<bool>(), 0..4);
        prop_oneof![
            ("\\PC{0,15}", cuts(), pings()).prop_map(|(s, c, p)| Item::Text(s, c, p)),
            (
                proptest::collection::vec(any::<u8>(), 0..60),
                cuts(),
                pings()
            )
                .prop_map(|(b, c, p)| Item::Binary(b, c, p)),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Item::Ping),
        ]
    }

    /// Encodes the items as a client stream and lists the events they must produce.
    fn encode_items(items: &[Item], close: bool) -> (Vec<u8>, Vec<Outcome>) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for item in items {
            let (opcode, payload, cuts, pings) = match item {
                Item::Ping(p) => {
                    bytes.extend(frame(true, 0x9, p));
                    want.push(Ok(Event::Ping(Bytes::copy_from_slice(p))));
                    continue;
                }
                Item::Text(s, c, p) => (0x1, s.as_bytes(), c, p),
                Item::Binary(b, c, p) => (0x2, &b[..], c, p),
            };
            let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(payload.len())).collect();
            cuts.sort_unstable();
            let mut start = 0;
            let ends = cuts.iter().copied().chain([payload.len()]);
            for (i, end) in ends.enumerate() {
                let fin = end == payload.len() && i == cuts.len();
                let op = if i == 0 { opcode } else { 0x0 };
                bytes.extend(frame(fin, op, &payload[start..end]));
                start = end;
                if !fin && pings.get(i).copied().unwrap_or(false) {
                    bytes.extend(frame(true, 0x9, &[i as u8]));
                    want.push(Ok(Event::Ping(Bytes::copy_from_slice(&[i as u8]))));
                }
            }
            let data = Bytes::copy_from_slice(payload);
            want.push(Ok(Event::Message(if opcode == 0x1 {
                Message::Text(data)
            } else {
                Message::Binary(data)
            })));
        }
        if close {
            bytes.extend(frame(true, 0x8, &close_payload(4000, "done")));
            want.push(Ok(Event::Closed {
                code: Some(4000),
                reason: "done".into(),
            }));
        }
        (bytes, want)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any chunking of a valid stream yields exactly the events the stream encodes.
        #[test]
        fn chunking_does_not_change_events(
            items in proptest::collection::vec(item(), 0..8),
            close in any::<bool>(),
            sizes in proptest::collection::vec(1usize..40, 1..20),
        ) {
            let (bytes, want) = encode_items(&items, close);
            let (whole, whole_sent) = run_chunked(&bytes, &[bytes.len().max(1)]);
            prop_assert_eq!(&whole, &want);
            let (chunked, chunked_sent) = run_chunked(&bytes, &sizes);
            prop_assert_eq!(chunked, whole);
            prop_assert_eq!(chunked_sent, whole_sent);
        }

        /// Arbitrary masked frames (random opcodes, flags, payloads, including violations and
        /// invalid UTF-8): chunking changes neither the events nor the error nor the output.
        #[test]
        fn chunking_does_not_change_outcome_of_arbitrary_frames(
            frames in proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..130), any::<[u8; 4]>()),
                0..12,
            ),
            sizes in proptest::collection::vec(1usize..40, 1..20),
        ) {
            let bytes: Vec<u8> = frames
                .iter()
                .flat_map(|(b0, payload, mask)| {
                    // Mostly valid-looking first bytes: keep RSV clear three times out of four.
                    let b0 = if b0 & 0x30 == 0 { *b0 } else { b0 & 0x8F };
                    raw_frame(b0, payload, Some(*mask))
                })
                .collect();
            let whole = run_chunked(&bytes, &[bytes.len().max(1)]);
            let chunked = run_chunked(&bytes, &sizes);
            prop_assert_eq!(chunked, whole);
        }
    }
}
