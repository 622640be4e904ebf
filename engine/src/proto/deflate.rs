//! permessage-deflate (RFC 7692), sans-IO: negotiation, the server's compressor and the inflater
//! for client messages.
//!
//! # How tickcast uses the extension
//!
//! - **No context takeover on our side, ever.** Every piece of DEFLATE data the server sends is
//!   made by a compressor with an empty window ([`Deflater::compress_piece`]) and ends with a
//!   sync flush, so it is byte-aligned, never sets BFINAL and never refers to bytes outside
//!   itself. RFC 7692 always allows a sender not to use its sliding window; this is what lets
//!   one compressed piece be shared by every connection with the same window size, and lets
//!   pieces be concatenated in any order into one message (see `fanout::deflate`).
//! - **Client messages** are inflated as their frames arrive ([`Inflater`]), with the size limit
//!   applied to the *inflated* bytes (a zip bomb is refused with 1009 after at most the limit).
//!   With `client_no_context_takeover` agreed, the inflater is dropped after each message, so an
//!   idle connection holds no inflate state.
//! - **Negotiation** ([`negotiate`]) follows RFC 7692 §7.1: the first acceptable
//!   `permessage-deflate` offer wins; an offer with an unknown, repeated or invalid parameter, or
//!   one asking for a window we cannot honour (`server_max_window_bits=8`: zlib's raw deflate
//!   has no 256-byte window), is declined on its own, never failing the handshake.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The four octets a sync flush ends with. A sender removes them from the end of each
/// compressed message, a receiver appends them before inflating (RFC 7692 §7.2.1, §7.2.2).
pub const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest window the compressor supports (zlib's raw deflate cannot do 8).
pub const MIN_WINDOW_BITS: u8 = 9;
/// Largest DEFLATE window (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// The window we ask clients that offer `client_max_window_bits` to compress with (1 KiB).
///
/// Our inflater's memory follows it (about 8 KiB instead of about 40 KiB with a 32 KiB window),
/// which matters for connections that keep their inflater (no `client_no_context_takeover`).
/// Client messages are small control requests, so the smaller window costs nothing in ratio.
pub const CLIENT_MAX_WINDOW_BITS: u8 = 10;

/// The parameters agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Window of our compressor, 9..=15: the client's `server_max_window_bits`, else 15.
    /// Compressed pieces are shared between connections with the same value.
    pub server_window_bits: u8,
    /// Window our inflater needs, 9..=15: what we answered as `client_max_window_bits`
    /// (raised to 9, see [`MIN_WINDOW_BITS`]), else 15.
    pub client_window_bits: u8,
    /// `server_no_context_takeover` was agreed. We never take over context, so this changes
    /// nothing on our side.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` was agreed: the client starts every message with an empty
    /// window, so the inflater can be dropped between messages.
    pub client_no_context_takeover: bool,
}

impl Default for DeflateParams {
    /// What a bare `permessage-deflate` offer gets.
    fn default() -> Self {
        Self {
            server_window_bits: MAX_WINDOW_BITS,
            client_window_bits: MAX_WINDOW_BITS,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        }
    }
}

/// An accepted offer: the parameters and the `Sec-WebSocket-Extensions` value to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The agreed parameters.
    pub params: DeflateParams,
    /// The response header value, e.g. `permessage-deflate; client_max_window_bits=10`.
    pub response: String,
}

/// Picks the first acceptable `permessage-deflate` offer in a `Sec-WebSocket-Extensions` value
/// (all header lines joined by `, `) and returns what to answer, or `None` to use no extension.
///
/// Other extensions are ignored. An element that does not parse, and an offer that RFC 7692
/// §7.1 says to decline (unknown parameter, a parameter given twice, an invalid value, a
/// configuration we do not support), are skipped: the next offer is tried.
#[must_use]
pub fn negotiate(header: &str) -> Option<Accepted> {
    split_outside_quotes(header, b',')
        .into_iter()
        .filter_map(parse_element)
        .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|(_, params)| accept_offer(&params))
}

/// One extension parameter: name and value (unquoted), if any.
type Param = (String, Option<String>);

/// Evaluates one `permessage-deflate` offer (RFC 7692 §7.1.1, §7.1.2).
fn accept_offer(params: &[Param]) -> Option<Accepted> {
    let mut server_nct = false;
    let mut client_nct = false;
    let mut server_bits: Option<u8> = None;
    // Outer Some: the parameter was offered; inner: its value, if it had one.
    let mut client_bits: Option<Option<u8>> = None;
    for (name, value) in params {
        let name = name.to_ascii_lowercase();
        match (name.as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) if !server_nct => server_nct = true,
            ("client_no_context_takeover", None) if !client_nct => client_nct = true,
            ("server_max_window_bits", Some(v)) if server_bits.is_none() => {
                server_bits = Some(window_bits(v)?);
            }
            ("client_max_window_bits", v) if client_bits.is_none() => {
                client_bits = Some(match v {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                });
            }
            // Unknown, repeated, or with a value where none is allowed (or none where one is
            // required): decline this offer.
            _ => return None,
        }
    }
    // A 256-byte window is beyond zlib's raw deflate: we cannot promise it, so we decline
    // (RFC 7692 §7.1.2.1: a smaller value than offered is not allowed either).
    if server_bits.is_some_and(|b| b < MIN_WINDOW_BITS) {
        return None;
    }
    let mut response = String::from(EXTENSION_NAME);
    let mut params = DeflateParams::default();
    if server_nct {
        response.push_str("; server_no_context_takeover");
        params.server_no_context_takeover = true;
    }
    if client_nct {
        response.push_str("; client_no_context_takeover");
        params.client_no_context_takeover = true;
    }
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
        params.server_window_bits = bits;
    }
    if let Some(offered) = client_bits {
        // §7.1.2.2: the answer may lower the client's window, never raise it.
        let bits = offered
            .unwrap_or(MAX_WINDOW_BITS)
            .min(CLIENT_MAX_WINDOW_BITS);
        response.push_str(&format!("; client_max_window_bits={bits}"));
        params.client_window_bits = bits.max(MIN_WINDOW_BITS);
    }
    Some(Accepted { params, response })
}

/// A window-bits value: a decimal integer 8..=15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.len() > 2 || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Splits `s` at `sep` where it is not inside a quoted string; pieces are trimmed.
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            out.push(s.get(start..i).unwrap_or_default().trim());
            start = i + 1;
        }
    }
    out.push(s.get(start..).unwrap_or_default().trim());
    out
}

/// Parses one extension element, `token *( ";" token [ "=" ( token / quoted-string ) ] )`
/// (RFC 6455 §9.1); `None` when it is malformed (including an empty element).
fn parse_element(element: &str) -> Option<(String, Vec<Param>)> {
    let mut parts = split_outside_quotes(element, b';').into_iter();
    let name = parts.next().filter(|n| is_token(n))?;
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            None => (part, None),
            Some((k, v)) => (k.trim_end(), Some(unquote(v.trim_start())?)),
        };
        if !is_token(key) {
            return None;
        }
        params.push((key.to_owned(), value));
    }
    Some((name.to_owned(), params))
}

/// A parameter value: a token, or a quoted string whose unescaped content is a token.
fn unquote(v: &str) -> Option<String> {
    let value = match v.strip_prefix('"') {
        None => v.to_owned(),
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?),
                    '"' => return None,
                    c => out.push(c),
                }
            }
            out
        }
    };
    is_token(&value).then_some(value)
}

/// An HTTP token (RFC 7230 §3.2.6): one or more tchars.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The header of a stored (uncompressed) DEFLATE block of `len` bytes, not final, starting at a
/// byte boundary: `00 LEN NLEN` (RFC 1951 §3.2.4). The block's bytes follow it as they are, so
/// an already encoded record can go into a compressed message without being copied.
#[must_use]
pub const fn stored_block_header(len: u16) -> [u8; 5] {
    let [lo, hi] = len.to_le_bytes();
    [0x00, lo, hi, !lo, !hi]
}

/// The compressor failed (zlib-rs reported a stream error). Not expected; the caller sends the
/// data uncompressed instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DEFLATE compression failed")]
pub struct CompressFailed;

/// The server's compressors, one per window size, reused for every piece (reset in between).
///
/// A shard owns one; it holds no per-connection state, which is what makes compression cost per
/// distinct piece of data rather than per subscriber.
pub struct Deflater {
    level: Compression,
    /// Index `bits - MIN_WINDOW_BITS`, created on first use.
    by_bits: [Option<Compress>; (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1) as usize],
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level.level())
            .finish_non_exhaustive()
    }
}

impl Deflater {
    /// Compressors at `level` (0–9; 1 is zlib's fastest, 6 its default).
    #[must_use]
    pub fn new(level: u32) -> Self {
        Self {
            level: Compression::new(level.min(9)),
            by_bits: Default::default(),
        }
    }

    /// Compresses `parts`, taken as one concatenated input, into one independent piece appended
    /// to `out`.
    ///
    /// The piece starts at a byte boundary with an empty window, refers to nothing outside
    /// itself (distances are within the piece and below `2^window_bits`), never sets BFINAL,
    /// and ends with a sync flush: byte-aligned, its last four bytes [`SYNC_TAIL`]. Such pieces
    /// can be concatenated in any order into a valid DEFLATE stream, and any inflater whose
    /// window is at least `2^window_bits` decodes them. `window_bits` is clamped to 9..=15.
    ///
    /// # Errors
    /// [`CompressFailed`] if the compressor reports an error; `out` is then restored.
    pub fn compress_piece(
        &mut self,
        window_bits: u8,
        parts: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressFailed> {
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let level = self.level;
        let slot = self
            .by_bits
            .get_mut(usize::from(bits - MIN_WINDOW_BITS))
            .ok_or(CompressFailed)?;
        let c = slot.get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let start = out.len();
        let result = run_compress(c, parts, out);
        c.reset();
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

fn run_compress(
    c: &mut Compress,
    parts: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), CompressFailed> {
    for part in parts {
        let mut rest = *part;
        while !rest.is_empty() {
            out.reserve(rest.len() / 2 + 64);
            let before = c.total_in();
            c.compress_vec(rest, out, FlushCompress::None)
                .map_err(|_| CompressFailed)?;
            let used = usize::try_from(c.total_in() - before).map_err(|_| CompressFailed)?;
            rest = rest.get(used..).ok_or(CompressFailed)?;
        }
    }
    // Flush until the compressor leaves output space unused: then the flush is complete.
    loop {
        out.reserve(256);
        c.compress_vec(&[], out, FlushCompress::Sync)
            .map_err(|_| CompressFailed)?;
        if out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&SYNC_TAIL) {
        Ok(())
    } else {
        Err(CompressFailed)
    }
}

/// Why a compressed client message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// The inflated message passed the size limit (close with 1009).
    #[error("inflated message larger than the limit")]
    TooBig,
    /// The data is not valid DEFLATE (close with 1007).
    #[error("invalid DEFLATE data")]
    Corrupt,
}

/// Inflates a client's compressed messages, keeping the window between messages unless
/// `client_no_context_takeover` was agreed (then nothing is kept between messages).
pub struct Inflater {
    window_bits: u8,
    reset_each_message: bool,
    /// Created on the first compressed message; dropped after each one when not kept.
    inner: Option<Decompress>,
    /// The current message's data had a final block: the rest of the message is ignored and
    /// the next message starts a new stream.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("window_bits", &self.window_bits)
            .field("reset_each_message", &self.reset_each_message)
            .field("allocated", &self.inner.is_some())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Inflater {
    /// An inflater for the client side of `params`.
    #[must_use]
    pub fn new(params: &DeflateParams) -> Self {
        Self {
            window_bits: params
                .client_window_bits
                .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS),
            reset_each_message: params.client_no_context_takeover,
            inner: None,
            ended: false,
        }
    }

    /// Whether inflate state is held (between messages: only with context takeover).
    #[must_use]
    pub fn is_allocated(&self) -> bool {
        self.inner.is_some()
    }

    /// Inflates the next piece of the current message's compressed payload, appending to `out`.
    ///
    /// # Errors
    /// [`InflateError::TooBig`] as soon as `out` would pass `limit` bytes (so at most about
    /// `limit` bytes are ever produced, whatever the ratio), [`InflateError::Corrupt`] for data
    /// that is not DEFLATE.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.run(input, out, limit, FlushDecompress::None)
    }

    /// Ends the current message: inflates the [`SYNC_TAIL`] the sender removed, then drops or
    /// resets the state as the parameters require.
    ///
    /// # Errors
    /// As [`inflate`](Self::inflate).
    pub fn finish_message(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        let result = self.run(&SYNC_TAIL, out, limit, FlushDecompress::Sync);
        if self.reset_each_message {
            self.inner = None;
        } else if self.ended {
            if let Some(d) = self.inner.as_mut() {
                d.reset(false);
            }
        }
        self.ended = false;
        result
    }

    /// Forgets the current message (the connection failed or closed mid-message).
    pub fn abandon(&mut self) {
        self.inner = None;
        self.ended = false;
    }

    fn run(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        flush: FlushDecompress,
    ) -> Result<(), InflateError> {
        if self.ended {
            // Bytes after a final block belong to no stream: ignored.
            return Ok(());
        }
        let bits = self.window_bits;
        let d = self
            .inner
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        loop {
            // Room for one byte past the limit, so that passing it is seen.
            let room = (limit + 1).saturating_sub(out.len());
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            let want = (input.len().saturating_mul(4))
                .clamp(1024, 256 * 1024)
                .min(room);
            out.reserve(want);
            let before_in = d.total_in();
            let before_out = out.len();
            let status = d
                .decompress_vec(input, out, flush)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let used =
                usize::try_from(d.total_in() - before_in).map_err(|_| InflateError::Corrupt)?;
            input = input.get(used..).ok_or(InflateError::Corrupt)?;
            match status {
                Status::StreamEnd => {
                    self.ended = true;
                    return Ok(());
                }
                Status::Ok | Status::BufError => {
                    let output_full = out.len() == out.capacity();
                    if input.is_empty() && !output_full {
                        return Ok(());
                    }
                    if used == 0 && out.len() == before_out && !output_full {
                        // No progress with input left and room to write: not DEFLATE we can read.
                        return Err(InflateError::Corrupt);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(header: &str) -> Option<DeflateParams> {
        negotiate(header).map(|a| a.params)
    }

    fn response(header: &str) -> Option<String> {
        negotiate(header).map(|a| a.response)
    }

    /// An independent inflater (miniz_oxide, not the zlib-rs that makes our pieces) applying
    /// the receiver's rule of RFC 7692 §7.2.2: append the tail, inflate.
    fn reference_inflate(message_payload: &[u8]) -> Vec<u8> {
        let mut data = message_payload.to_vec();
        data.extend_from_slice(&SYNC_TAIL);
        // End the stream with an empty final block (fixed Huffman, end-of-block only) so that a
        // one-shot decoder sees a complete stream.
        data.extend_from_slice(&[0x03, 0x00]);
        miniz_oxide::inflate::decompress_to_vec(&data).expect("valid DEFLATE")
    }

    #[test]
    fn bare_offer_is_accepted_with_defaults() {
        let a = negotiate("permessage-deflate").unwrap();
        assert_eq!(a.response, "permessage-deflate");
        assert_eq!(a.params, DeflateParams::default());
    }

    #[test]
    fn browser_offer_gets_a_small_client_window() {
        // What Chrome and Firefox send.
        let a = negotiate("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(a.response, "permessage-deflate; client_max_window_bits=10");
        assert_eq!(a.params.client_window_bits, 10);
        assert_eq!(a.params.server_window_bits, 15);
        // A smaller offered value is kept; 8 is answered as 8 but inflated with 9.
        let a = negotiate("permessage-deflate; client_max_window_bits=9").unwrap();
        assert_eq!(a.response, "permessage-deflate; client_max_window_bits=9");
        let a = negotiate("permessage-deflate; client_max_window_bits=8").unwrap();
        assert_eq!(a.response, "permessage-deflate; client_max_window_bits=8");
        assert_eq!(a.params.client_window_bits, 9);
        // A larger one is lowered to ours.
        assert_eq!(
            response("permessage-deflate; client_max_window_bits=15").as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
    }

    #[test]
    fn no_context_takeover_parameters_are_echoed() {
        let a =
            negotiate("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
                .unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(a.params.server_no_context_takeover && a.params.client_no_context_takeover);
        // Without them, none is sent (some clients reject unsolicited parameters).
        assert!(!response("permessage-deflate").unwrap().contains("context"));
    }

    #[test]
    fn server_window_bits_are_honoured_from_9_to_15() {
        for bits in 9..=15u8 {
            let a = negotiate(&format!(
                "permessage-deflate; server_max_window_bits={bits}"
            ))
            .unwrap();
            assert_eq!(a.params.server_window_bits, bits);
            assert_eq!(
                a.response,
                format!("permessage-deflate; server_max_window_bits={bits}")
            );
        }
        // 8 cannot be honoured: that offer is declined (not the handshake).
        assert_eq!(params("permessage-deflate; server_max_window_bits=8"), None);
    }

    #[test]
    fn invalid_offers_are_declined() {
        for bad in [
            "permessage-deflate; server_max_window_bits", // value required
            "permessage-deflate; server_max_window_bits=16", // out of range
            "permessage-deflate; server_max_window_bits=7", // out of range
            "permessage-deflate; server_max_window_bits=010", // leading zero
            "permessage-deflate; client_max_window_bits=abc", // not a number
            "permessage-deflate; client_max_window_bits=+9", // not digits only
            "permessage-deflate; server_no_context_takeover=1", // no value allowed
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; foo",              // unknown parameter
            "permessage-deflate; x=\"unterminated", // bad quoting
            "permessage-deflate;;",                 // empty parameter
            "x-webkit-deflate-frame",               // another extension only
            "",
        ] {
            assert_eq!(params(bad), None, "{bad:?} should be declined");
        }
    }

    #[test]
    fn first_acceptable_offer_wins() {
        // Autobahn 13.7's list: the first is taken.
        let a = negotiate(
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
             server_no_context_takeover; server_max_window_bits=9, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits; \
             server_no_context_takeover, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(a.params.server_window_bits, 9);
        assert!(a.params.server_no_context_takeover);
        // A declined first offer falls through to the next one.
        let a = negotiate(
            "permessage-deflate; server_max_window_bits=8, foo; bar=1, \
             permessage-deflate; server_no_context_takeover",
        )
        .unwrap();
        assert_eq!(a.response, "permessage-deflate; server_no_context_takeover");
        // Other extensions before ours do not matter; names are case-insensitive.
        assert!(negotiate("x-foo; a=1, Permessage-Deflate").is_some());
    }

    #[test]
    fn quoted_values_and_whitespace() {
        let a = negotiate("permessage-deflate ;  server_max_window_bits = \"10\" ").unwrap();
        assert_eq!(a.params.server_window_bits, 10);
        // A comma inside quotes does not split elements (and the value is not a token).
        assert_eq!(
            params("permessage-deflate; client_max_window_bits=\"9,\""),
            None
        );
        assert!(negotiate("foo; a=\"x,y\", permessage-deflate").is_some());
    }

    #[test]
    fn stored_block_header_layout() {
        assert_eq!(stored_block_header(8), [0x00, 0x08, 0x00, 0xF7, 0xFF]);
        assert_eq!(stored_block_header(0), [0x00, 0x00, 0x00, 0xFF, 0xFF]);
        assert_eq!(stored_block_header(0x1234), [0x00, 0x34, 0x12, 0xCB, 0xED]);
    }

    #[test]
    fn pieces_concatenate_into_one_message() {
        let mut d = Deflater::new(6);
        let a = "the quick brown fox jumps over the lazy dog; ".repeat(40);
        let b = b"\x00\x01\x02\x03 binary-ish \xff\xfe".repeat(30);
        let mut pa = Vec::new();
        d.compress_piece(15, &[a.as_bytes()], &mut pa).unwrap();
        assert!(pa.ends_with(&SYNC_TAIL));
        assert!(
            pa.len() < a.len() / 4,
            "compresses: {} of {}",
            pa.len(),
            a.len()
        );
        let mut pb = Vec::new();
        d.compress_piece(15, &[&b[..100], &b[100..]], &mut pb)
            .unwrap();
        // piece, stored block, piece (tail removed): one message.
        let mut msg = pa.clone();
        msg.extend_from_slice(&stored_block_header(5));
        msg.extend_from_slice(b"12345");
        msg.extend_from_slice(&pb[..pb.len() - 4]);
        let mut want = a.as_bytes().to_vec();
        want.extend_from_slice(b"12345");
        want.extend_from_slice(&b);
        assert_eq!(reference_inflate(&msg), want);
        // The same compressor gives the same bytes again (it is reset between pieces).
        let mut again = Vec::new();
        d.compress_piece(15, &[a.as_bytes()], &mut again).unwrap();
        assert_eq!(again, pa);
        // An empty piece is just a sync flush.
        let mut empty = Vec::new();
        d.compress_piece(15, &[], &mut empty).unwrap();
        assert!(empty.ends_with(&SYNC_TAIL));
        assert_eq!(reference_inflate(&empty[..empty.len() - 4]), b"");
    }

    #[test]
    fn small_windows_stay_within_the_window() {
        // Data whose only repeats are 600 bytes apart: a 512-byte window cannot use them, and
        // an inflater with a 512-byte window must decode what a 9-bit compressor made.
        let block: Vec<u8> = (0..600u32).map(|i| (i * 7919 % 251) as u8).collect();
        let data = block.repeat(8);
        let mut d = Deflater::new(6);
        let mut p9 = Vec::new();
        d.compress_piece(9, &[&data], &mut p9).unwrap();
        let mut p15 = Vec::new();
        d.compress_piece(15, &[&data], &mut p15).unwrap();
        assert!(
            p15.len() < p9.len() / 2,
            "9 bits: {} 15 bits: {}",
            p9.len(),
            p15.len()
        );
        let mut inf = Inflater::new(&DeflateParams {
            client_window_bits: 9,
            ..DeflateParams::default()
        });
        let mut out = Vec::new();
        inf.inflate(&p9[..p9.len() - 4], &mut out, 1 << 20).unwrap();
        inf.finish_message(&mut out, 1 << 20).unwrap();
        assert_eq!(out, data);
    }

    fn compress_message(data: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        Deflater::new(6)
            .compress_piece(15, &[data], &mut p)
            .unwrap();
        p.truncate(p.len() - 4);
        p
    }

    #[test]
    fn inflater_in_pieces_and_context_takeover() {
        let text = "subscribe BTC-USD ETH-USD SOL-USD ".repeat(20);
        let msg = compress_message(text.as_bytes());
        for split in [0, 1, 7, msg.len() / 2, msg.len()] {
            let mut inf = Inflater::new(&DeflateParams::default());
            let mut out = Vec::new();
            inf.inflate(&msg[..split], &mut out, 1 << 20).unwrap();
            inf.inflate(&msg[split..], &mut out, 1 << 20).unwrap();
            inf.finish_message(&mut out, 1 << 20).unwrap();
            assert_eq!(out, text.as_bytes(), "split {split}");
            // With context takeover the state is kept for the next message.
            assert!(inf.is_allocated());
        }

        // A client that takes over context: the second message refers to the first.
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 15);
        let mut stream = Vec::new();
        let mut m = Vec::new();
        for text in ["hello hello hello world", "hello hello hello world!"] {
            let start = stream.len();
            stream.reserve(1024);
            c.compress_vec(text.as_bytes(), &mut stream, FlushCompress::Sync)
                .unwrap();
            assert!(stream.ends_with(&SYNC_TAIL));
            m.push(stream[start..stream.len() - 4].to_vec());
        }
        assert!(m[1].len() < 10, "second message uses the window");
        let mut inf = Inflater::new(&DeflateParams::default());
        for (msg, want) in m
            .iter()
            .zip(["hello hello hello world", "hello hello hello world!"])
        {
            let mut out = Vec::new();
            inf.inflate(msg, &mut out, 1000).unwrap();
            inf.finish_message(&mut out, 1000).unwrap();
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn no_context_takeover_drops_the_state() {
        let p = DeflateParams {
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let mut inf = Inflater::new(&p);
        assert!(!inf.is_allocated());
        for text in ["one message", "another message"] {
            let msg = compress_message(text.as_bytes());
            let mut out = Vec::new();
            inf.inflate(&msg, &mut out, 1000).unwrap();
            assert!(inf.is_allocated());
            inf.finish_message(&mut out, 1000).unwrap();
            assert_eq!(out, text.as_bytes());
            assert!(!inf.is_allocated(), "nothing kept between messages");
        }
    }

    #[test]
    fn zip_bomb_stops_at_the_limit() {
        // 16 MiB of zeros compress to about 16 KiB.
        let zeros = vec![0u8; 16 << 20];
        let msg = compress_message(&zeros);
        assert!(msg.len() < 64 << 10);
        let mut inf = Inflater::new(&DeflateParams::default());
        let mut out = Vec::new();
        let limit = 64 << 10;
        assert_eq!(
            inf.inflate(&msg, &mut out, limit),
            Err(InflateError::TooBig)
        );
        // Output never grew far past the limit.
        assert!(
            out.capacity() <= 2 * (limit + 256 * 1024),
            "{}",
            out.capacity()
        );
        // Exactly at the limit is fine.
        let msg = compress_message(&zeros[..1000]);
        let mut inf = Inflater::new(&DeflateParams::default());
        let mut out = Vec::new();
        inf.inflate(&msg, &mut out, 1000).unwrap();
        inf.finish_message(&mut out, 1000).unwrap();
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inf = Inflater::new(&DeflateParams::default());
        let mut out = Vec::new();
        // BTYPE = 11 (reserved).
        assert_eq!(
            inf.inflate(&[0xFF, 0xFF, 0xFF], &mut out, 1000),
            Err(InflateError::Corrupt)
        );
        // A stored block whose NLEN does not match LEN.
        let mut inf = Inflater::new(&DeflateParams::default());
        assert_eq!(
            inf.inflate(&[0x00, 0x05, 0x00, 0x00, 0x00], &mut out, 1000),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn final_block_ends_the_message_and_resets() {
        // A client that finished its stream (BFINAL) instead of sync-flushing.
        let mut c = Compress::new(Compression::default(), false);
        let mut data = Vec::with_capacity(256);
        c.compress_vec(b"final block", &mut data, FlushCompress::Finish)
            .unwrap();
        let mut inf = Inflater::new(&DeflateParams::default());
        let mut out = Vec::new();
        inf.inflate(&data, &mut out, 1000).unwrap();
        inf.finish_message(&mut out, 1000).unwrap();
        assert_eq!(out, b"final block");
        // The next message starts a new stream.
        let msg = compress_message(b"next");
        let mut out = Vec::new();
        inf.inflate(&msg, &mut out, 1000).unwrap();
        inf.finish_message(&mut out, 1000).unwrap();
        assert_eq!(out, b"next");
    }
}
