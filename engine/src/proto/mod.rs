//! The RFC 6455 WebSocket protocol, sans-IO.
//!
//! Nothing in this module touches a socket, a clock or a thread: bytes go in, bytes and events
//! come out, so every rule can be tested (and fuzzed) without a network. The shard loop owns the
//! sockets and drives these pieces in this order:
//!
//! 1. [`handshake::parse_request`] on the bytes read so far, until it returns a request (or an
//!    error, answered with [`handshake::HandshakeError::write_response`]).
//! 2. For a [`handshake::Request::Upgrade`], [`handshake::write_accept_response`] writes the
//!    `101`; bytes after the returned head length already belong to the WebSocket stream.
//! 3. A [`conn::WsConn`] then turns client bytes into [`conn::Event`]s
//!    ([`conn::WsConn::handle_input`]) and queues the control frames it owes the client
//!    ([`conn::WsConn::poll_transmit`]). Data frames are encoded by the caller with
//!    [`frame::encode_header`] so that a payload encoded once can be shared by many clients.
//!
//! permessage-deflate (RFC 7692) lives in [`deflate`]: [`deflate::negotiate`] picks the offer
//! answered in the `101` ([`handshake::write_accept_response_ext`]), [`conn::WsConn::with_deflate`]
//! inflates the client's compressed messages, and [`deflate::Deflater`] makes the independent,
//! shareable compressed pieces the fan-out sends.

pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
mod utf8;

/// Close codes (RFC 6455 §7.4.1 and the IANA "WebSocket Close Code Number Registry").
pub mod close_code {
    /// Normal closure: the purpose of the connection has been fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown, browser navigating away).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer sent a kind of data the endpoint cannot accept (for us: binary messages).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message's data did not match its type (text that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The peer violated a policy (rate limit, origin refused, bad token).
    pub const POLICY: u16 = 1008;
    /// A message was larger than the endpoint accepts.
    pub const TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Try again later: for us, a slow consumer evicted because its out-buffer passed the bound.
    pub const TRY_AGAIN_LATER: u16 = 1013;

    /// Whether `code` may appear in a close frame on the wire.
    ///
    /// Accepts 1000–1003, 1007–1014 (RFC 6455 §7.4.1 plus the codes the IANA registry added)
    /// and 3000–4999 (registered and private use). Everything else, including 1004 (reserved),
    /// 1005, 1006 and 1015 (never sent on the wire), is invalid.
    #[must_use]
    pub const fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::close_code;

    #[test]
    fn close_code_validity_follows_rfc_and_iana() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ] {
            assert!(close_code::is_valid(code), "{code} should be valid");
        }
        for code in [3000, 3999, 4000, 4999] {
            assert!(close_code::is_valid(code), "{code} should be valid");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!close_code::is_valid(code), "{code} should be invalid");
        }
    }
}
