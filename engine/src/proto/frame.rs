//! The WebSocket frame format (RFC 6455 §5.2): header parsing and encoding, masking, and the
//! server's control frames.
//!
//! ```text
//!  0               1               2               3
//!  F R R R opcode  M len7          extended length (0, 2 or 8 bytes)
//!  I S S S (4)     A (7)           then the masking key (4 bytes) when MASK is set
//!  N V V V         S
//!    1 2 3         K
//! ```
//!
//! The parser checks what a header alone can tell (opcode, control frame rules, length
//! encoding); the rules that depend on the connection (masking, RSV bits, fragmentation, size
//! limits) are [`crate::proto::conn`]'s. Lengths not encoded in the minimal number of bytes are
//! accepted: the RFC puts that requirement on the sender, and rejecting them buys nothing.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest possible header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
/// Server frames are unmasked and use at most 10.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode (RFC 6455 §5.2). The reserved values 3–7 and 0xB–0xF have no variant: they
/// are rejected by [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: a later fragment of a fragmented message.
    Continuation,
    /// 0x1: the first (or only) frame of a text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for a reserved one.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    #[must_use]
    pub const fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// The three RSV bits, RSV1 as `0b100`, RSV2 as `0b010`, RSV3 as `0b001`.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The declared payload length (below 2^63).
    pub payload_len: u64,
}

/// A frame header that breaks RFC 6455 §5. Every variant is a protocol error: fail the
/// connection with close code 1002 ([`ProtocolError::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The opcode is one of the reserved values; fail the connection with 1002.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame declared more than 125 payload bytes; fail the connection with 1002.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN (control frames cannot be fragmented); fail with 1002.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A 64-bit payload length with the most significant bit set; fail the connection with 1002.
    #[error("payload length with the most significant bit set")]
    InvalidLength,
}

impl ProtocolError {
    /// The close code to fail the connection with (always 1002, protocol error).
    #[must_use]
    pub const fn close_code(&self) -> u16 {
        super::close_code::PROTOCOL_ERROR
    }

    /// A short reason for the close frame.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::ReservedOpcode(_) => "reserved opcode",
            Self::ControlFrameTooLong => "control frame too long",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::InvalidLength => "invalid payload length",
        }
    }
}

/// Parses a frame header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a header (nothing is consumed; call again
/// with more bytes), or the header and its length in bytes. Errors that the first two bytes
/// already show are reported without waiting for the rest of the header.
///
/// # Errors
/// A reserved opcode, a control frame with a payload over 125 bytes or without FIN, or a 64-bit
/// length with the top bit set ([`ProtocolError`]).
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let Some([b0, b1]) = array_at::<2>(buf, 0) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x07;
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let (payload_len, mut len) = match len7 {
        126 => match array_at::<2>(buf, 2) {
            Some(ext) => (u64::from(u16::from_be_bytes(ext)), 4),
            None => return Ok(None),
        },
        127 => match array_at::<8>(buf, 2) {
            Some(ext) => {
                let v = u64::from_be_bytes(ext);
                if v >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (v, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(key) = array_at::<4>(buf, len) else {
            return Ok(None);
        };
        len += 4;
        Some(key)
    } else {
        None
    };
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len,
    };
    Ok(Some((header, len)))
}

/// `N` bytes of `buf` starting at `at`, if there are that many.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Encodes an unmasked (server-to-client) frame header with no RSV bits into `out`.
///
/// Returns the header length written: 2, 4 or 10 bytes, the payload length in the minimal
/// encoding. `payload_len` must be below 2^63 (a `u64` length read from a `usize` always is).
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    payload_len: u64,
    out: &mut [u8; MAX_HEADER_LEN],
) -> usize {
    encode_header_with_rsv(fin, 0, opcode, payload_len, out)
}

/// RSV1, the bit permessage-deflate sets on the first frame of a compressed message
/// (RFC 7692 §6), in [`FrameHeader::rsv`]'s numbering.
pub const RSV1: u8 = 0b100;

/// [`encode_header`] with RSV bits (`rsv` as in [`FrameHeader::rsv`]; only the low three bits
/// are used): [`RSV1`] marks a compressed message when permessage-deflate was negotiated.
pub fn encode_header_with_rsv(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload_len: u64,
    out: &mut [u8; MAX_HEADER_LEN],
) -> usize {
    out[0] = if fin { 0x80 } else { 0 } | ((rsv & 0x07) << 4) | opcode.as_u8();
    if payload_len <= 125 {
        // Fits in 7 bits by the check above.
        out[1] = payload_len as u8;
        2
    } else if let Ok(len16) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len & (u64::MAX >> 1)).to_be_bytes());
        10
    }
}

/// XORs `buf` with the masking key `mask` (RFC 6455 §5.3), in place; masking twice restores
/// the original.
///
/// `offset` is the position of `buf[0]` within the frame payload, so that a payload can be
/// unmasked piece by piece as it arrives: calling this on `p[..k]` with offset 0 and on `p[k..]`
/// with offset `k` equals calling it on `p` with offset 0.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let shift = offset % 4;
    let key = [
        mask[shift],
        mask[(shift + 1) % 4],
        mask[(shift + 2) % 4],
        mask[(shift + 3) % 4],
    ];
    // Word at a time: every 8-byte chunk starts at a multiple of 4 from `buf[0]`, so the rotated
    // key lines up with each chunk.
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// A whole server close frame with `code` and `reason`.
///
/// The reason is truncated at a char boundary so that the payload fits the 125 bytes of a
/// control frame. `code` is written as given: pass a code that
/// [`close_code::is_valid`](super::close_code::is_valid) accepts.
#[must_use]
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.as_bytes().get(..end).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + reason.len());
    out.put_u8(0x80 | OpCode::Close.as_u8());
    // At most 125 by the truncation above.
    out.put_u8((2 + reason.len()) as u8);
    out.put_u16(code);
    out.put_slice(reason);
    out.freeze()
}

/// A whole unmasked control frame (ping or pong; a close with a raw payload) carrying
/// `payload`, truncated to 125 bytes.
#[must_use]
pub fn encode_control(opcode: OpCode, payload: &[u8]) -> Bytes {
    let payload = payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload);
    let mut out = BytesMut::with_capacity(2 + payload.len());
    out.put_u8(0x80 | opcode.as_u8());
    // At most 125 by the truncation above.
    out.put_u8(payload.len() as u8);
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPCODES: [OpCode; 6] = [
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ];

    /// A client header built by hand (independently of `encode_header`).
    fn client_header(b0: u8, len: u64, mask: [u8; 4]) -> Vec<u8> {
        let mut h = vec![b0];
        if len <= 125 {
            h.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&mask);
        h
    }

    #[test]
    fn opcode_round_trip_and_reserved() {
        for op in OPCODES {
            assert_eq!(OpCode::from_u8(op.as_u8()), Some(op));
        }
        for v in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(OpCode::from_u8(v), None);
        }
    }

    #[test]
    fn encode_parse_round_trip_for_each_length_form() {
        for (len, header_len) in [
            (0u64, 2usize),
            (1, 2),
            (125, 2),
            (126, 4),
            (0xFFFF, 4),
            (0x1_0000, 10),
            (u64::MAX >> 1, 10),
        ] {
            for op in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
                for fin in [true, false] {
                    let mut out = [0u8; MAX_HEADER_LEN];
                    let n = encode_header(fin, op, len, &mut out);
                    assert_eq!(n, header_len, "len {len}");
                    let (h, used) = parse_header(&out[..n]).unwrap().unwrap();
                    assert_eq!(used, n);
                    assert_eq!(
                        h,
                        FrameHeader {
                            fin,
                            rsv: 0,
                            opcode: op,
                            mask: None,
                            payload_len: len
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn rsv1_header_round_trip() {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = encode_header_with_rsv(true, RSV1, OpCode::Text, 300, &mut out);
        assert_eq!(out[0], 0xC1);
        let (h, used) = parse_header(&out[..n]).unwrap().unwrap();
        assert_eq!((h.rsv, h.payload_len, used), (RSV1, 300, 4));
    }

    #[test]
    fn parses_masked_client_headers_with_rsv() {
        let mask = [1, 2, 3, 4];
        for (len, expect_len) in [(5u64, 6usize), (300, 8), (70_000, 14)] {
            // FIN + RSV1 + RSV3 + binary.
            let bytes = client_header(0x80 | 0x40 | 0x10 | 0x2, len, mask);
            let (h, n) = parse_header(&bytes).unwrap().unwrap();
            assert_eq!(n, expect_len);
            assert_eq!(h.rsv, 0b101);
            assert_eq!(h.mask, Some(mask));
            assert_eq!(h.payload_len, len);
            assert_eq!(h.opcode, OpCode::Binary);
            assert!(h.fin);
        }
    }

    #[test]
    fn every_truncated_prefix_needs_more() {
        for len in [0u64, 125, 126, 0xFFFF, 0x1_0000] {
            let bytes = client_header(0x82, len, [9, 8, 7, 6]);
            for cut in 0..bytes.len() {
                assert_eq!(parse_header(&bytes[..cut]), Ok(None), "len {len} cut {cut}");
            }
            // Trailing payload bytes are not part of the header.
            let mut more = bytes.clone();
            more.extend_from_slice(b"payload");
            assert_eq!(parse_header(&more).unwrap().unwrap().1, bytes.len());
        }
    }

    #[test]
    fn header_errors() {
        for op in [3u8, 7, 0xB, 0xF] {
            assert_eq!(
                parse_header(&[0x80 | op, 0x80]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
        // Ping without FIN.
        assert_eq!(
            parse_header(&[0x09, 0x80]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        // Close with 126 bytes (16-bit form): rejected before the extended length arrives.
        assert_eq!(
            parse_header(&[0x88, 0x80 | 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        // 64-bit length with the top bit set.
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(parse_header(&bytes), Err(ProtocolError::InvalidLength));
        assert_eq!(ProtocolError::InvalidLength.close_code(), 1002);
    }

    #[test]
    fn mask_matches_bytewise_definition_at_any_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..=255u8).cycle().take(67).collect();
        for offset in [0usize, 1, 2, 3, 5, 7, 13] {
            let mut buf = data.clone();
            apply_mask(&mut buf, mask, offset);
            for (i, (&got, &orig)) in buf.iter().zip(&data).enumerate() {
                assert_eq!(got, orig ^ mask[(offset + i) % 4], "offset {offset} i {i}");
            }
        }
    }

    #[test]
    fn mask_in_pieces_equals_mask_whole() {
        let mask = [0xde, 0xad, 0xbe, 0xef];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for split in [1usize, 3, 9, 17, 50, 99] {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(pieces, whole, "split {split}");
        }
        // RFC 6455 §5.7 example: "Hello" masked with 37 fa 21 3d.
        let mut hello = *b"Hello";
        apply_mask(&mut hello, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(hello, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn close_frame_encoding_and_truncation() {
        let f = encode_close(1000, "bye");
        assert_eq!(&f[..], &[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        // 62 two-byte chars = 124 bytes: must be cut to 122 (61 chars), not mid-char.
        let long = "é".repeat(62);
        let f = encode_close(1001, &long);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert!(f.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert_eq!(&f[2..4], &1001u16.to_be_bytes());
        assert_eq!(std::str::from_utf8(&f[4..]).unwrap(), "é".repeat(61));
    }

    #[test]
    fn control_frame_encoding() {
        let f = encode_control(OpCode::Pong, b"abc");
        assert_eq!(&f[..], &[0x8A, 3, b'a', b'b', b'c']);
        let f = encode_control(OpCode::Ping, &[7u8; 200]);
        assert_eq!(f.len(), 2 + 125);
        assert_eq!(f[1], 125);
    }

    /// Cross-check against an independent implementation: tungstenite parses our server frames.
    #[test]
    fn tungstenite_parses_our_server_frames() {
        use std::io::Cursor;
        use tungstenite::protocol::frame::{
            FrameHeader as TgHeader,
            coding::{Control, Data, OpCode as TgOp},
        };

        for len in [0usize, 125, 126, 65_535, 65_536, 200_000] {
            let mut hdr = [0u8; MAX_HEADER_LEN];
            let n = encode_header(false, OpCode::Binary, len as u64, &mut hdr);
            let mut cursor = Cursor::new(hdr[..n].to_vec());
            let (h, tg_len) = TgHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(tg_len, len as u64);
            assert_eq!(cursor.position() as usize, n);
            assert!(!h.is_final && !h.rsv1 && !h.rsv2 && !h.rsv3);
            assert_eq!(h.opcode, TgOp::Data(Data::Binary));
            assert_eq!(h.mask, None);
        }

        let close = encode_close(4001, "later");
        let mut cursor = Cursor::new(close.to_vec());
        let (h, len) = TgHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(h.is_final);
        assert_eq!(h.opcode, TgOp::Control(Control::Close));
        let payload = &close[cursor.position() as usize..];
        assert_eq!(payload.len() as u64, len);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
        assert_eq!(&payload[2..], b"later");

        let pong = encode_control(OpCode::Pong, b"p");
        let mut cursor = Cursor::new(pong.to_vec());
        let (h, len) = TgHeader::parse(&mut cursor).unwrap().unwrap();
        assert_eq!(h.opcode, TgOp::Control(Control::Pong));
        assert_eq!(len, 1);
    }
}
