//! What a client's WebSocket messages do: control requests on `/ws` (JSON in, a JSON reply
//! out, rate limited), every message sent back on `/echo`, pings (rate limited too), and the
//! close codes for what a client may not send.
//!
//! Entered from [`ShardCore::handle_input`] once a connection is open.

use serde_json::Value;

use crate::control::{self, ErrorCode, Request};
use crate::fanout::ConnId;
use crate::fanout::limit::Verdict;
use crate::metrics::add;
use crate::proto::close_code;
use crate::proto::conn::{Event, Message};
use crate::proto::frame::{MAX_HEADER_LEN, OpCode, RSV1, encode_header_with_rsv};

use super::conn::Endpoint;
use super::core::{ShardCore, conn_mut};

impl ShardCore {
    /// Runs the protocol over connection `idx`'s buffered input and acts on every event.
    pub(crate) fn handle_frames(&mut self, idx: u32) {
        let now = self.now;
        loop {
            let Some(c) = conn_mut(&mut self.slots, idx) else {
                return;
            };
            let Some(result) = c.poll_ws_event() else {
                return;
            };
            match result {
                Ok(None) => return,
                Ok(Some(Event::Message(msg))) if c.endpoint() == Endpoint::Echo => {
                    if c.is_open() {
                        self.echo(idx, msg);
                    }
                }
                Ok(Some(Event::Message(Message::Text(text)))) => {
                    if c.is_open() {
                        self.control(idx, &text);
                    }
                }
                Ok(Some(Event::Message(Message::Binary(_)))) => {
                    add(&self.t.metrics().closed_protocol, 1);
                    self.close_conn(
                        idx,
                        close_code::UNSUPPORTED_DATA,
                        "binary data frames are not accepted",
                        false,
                    );
                }
                Ok(Some(Event::Ping(_))) => {
                    // Pings cost a control-message token: a ping flood ends with 1008 (the
                    // protocol layer already caps the pongs it queues).
                    if c.check_rate(&self.t.control, now) == Verdict::Exceeded {
                        add(&self.t.metrics().closed_policy, 1);
                        self.close_conn(idx, close_code::POLICY, "ping rate limit exceeded", false);
                        return;
                    }
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Closed { .. })) => {
                    // Our reply is queued; stop data and drop once it is written.
                    self.enter_closing(idx);
                    return;
                }
                Err(violation) => {
                    add(&self.t.metrics().closed_protocol, 1);
                    tracing::debug!(peer = %c.peer(), code = violation.close_code, reason = violation.reason, "protocol violation");
                    self.enter_closing(idx);
                    return;
                }
            }
        }
    }

    /// Sends a message back on an `/echo` connection as one unfragmented message, compressed
    /// when permessage-deflate was negotiated, through the same out-buffer (and bound) as data.
    fn echo(&mut self, idx: u32, msg: Message) {
        let Some(c) = conn_mut(&mut self.slots, idx) else {
            return;
        };
        let (opcode, payload) = match msg {
            Message::Text(t) => (OpCode::Text, t),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        // Compressed per message with the shard's shared compressor (no context is kept, so
        // nothing is held per connection).
        let compressed = c.deflate().and_then(|p| {
            self.zshared
                .compress_message(p.server_window_bits, &payload)
        });
        let (rsv, payload) = match compressed {
            Some(z) => (RSV1, z),
            None => (0, payload),
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let h = encode_header_with_rsv(true, rsv, opcode, payload.len() as u64, &mut head);
        let out = c.out_mut();
        if out.reserve(h + payload.len()).is_err() {
            self.evict_slow(idx);
            return;
        }
        out.push_small(&head[..h], payload.is_empty());
        if !payload.is_empty() {
            out.push_shared(payload, true);
        }
    }

    /// A control request (a text message on `/ws`): rate limit, parse, answer.
    fn control(&mut self, idx: u32, text: &[u8]) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let generation = slot.generation;
        let Some(c) = slot.conn.as_mut() else { return };
        match c.check_rate(&self.t.control, now) {
            Verdict::Allow => {}
            Verdict::Limited => {
                add(&self.t.metrics().request_errors, 1);
                let id = serde_json::from_slice::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .unwrap_or(Value::Null);
                let ms = c.retry_after(&self.t.control).as_millis();
                c.queue_reply(&control::error_reply(
                    &id,
                    ErrorCode::RateLimited,
                    &format!("too many requests; retry in {ms} ms"),
                ));
                return;
            }
            Verdict::Exceeded => {
                add(&self.t.metrics().closed_policy, 1);
                self.close_conn(
                    idx,
                    close_code::POLICY,
                    "control message rate limit exceeded",
                    false,
                );
                return;
            }
        }
        let (request, resume) = match control::parse_request_v11(text) {
            Ok(r) => r,
            Err(e) => {
                add(&self.t.metrics().request_errors, 1);
                c.queue_reply(&e.to_json());
                return;
            }
        };
        let id = ConnId {
            index: idx,
            generation,
        };
        let answer = match request {
            Request::Ping { id } => Ok(Some(control::pong_reply(&id))),
            Request::Symbols { id } => {
                let table = self.t.ctx.symbols.load();
                // Only what the connection's token entitles it to (protocol §1.6).
                let grant = c.grant();
                Ok(Some(control::symbols_reply(
                    &id,
                    table
                        .symbols
                        .iter()
                        .filter(|m| crate::fanout::entitle::entitled(grant, &m.symbol)),
                )))
            }
            Request::Subscribe {
                id: rid,
                symbols,
                channels,
                depth_idx,
                max_hz,
            } => self
                .t
                .subscribe(c, id, rid, &symbols, channels, depth_idx, max_hz, resume),
            Request::Unsubscribe { id: rid, symbols } => {
                self.t.unsubscribe(c, idx, rid, &symbols).map(Some)
            }
            Request::Refresh { id: rid, token } => {
                match refresh(&self.t, c.grant().is_some(), &token, self.real_ns) {
                    Ok(grant) => {
                        let exp = grant.exp;
                        c.set_grant(Some(grant));
                        let dropped = self.t.drop_unentitled(c, idx);
                        tracing::debug!(peer = %c.peer(), exp, dropped = dropped.len(), "token refreshed");
                        c.queue_reply(&control::refreshed_reply(&rid, exp, &dropped));
                        self.schedule_expiry(idx, exp);
                        return;
                    }
                    Err(message) => Err(control::RequestError::new(
                        rid,
                        ErrorCode::InvalidToken,
                        message,
                    )),
                }
            }
        };
        match answer {
            Ok(Some(bytes)) => c.queue_reply(&bytes),
            // Held until the resume is answered (subscriptions.rs).
            Ok(None) => {}
            Err(e) => {
                add(&self.t.metrics().request_errors, 1);
                c.queue_reply(&e.to_json());
            }
        }
    }
}

/// Verifies a `refresh` token for a connection (`has_grant`: it was admitted with a JWT) at
/// `real_ns`; the old grant stays when it fails.
fn refresh(
    t: &super::core::Tables,
    has_grant: bool,
    token: &str,
    real_ns: u64,
) -> Result<crate::fanout::entitle::Grant, String> {
    let Some(key) = t.ctx.config.jwt.as_ref().filter(|_| has_grant) else {
        return Err("this server does not use expiring tokens: nothing to refresh".to_owned());
    };
    crate::fanout::entitle::verify(key, token, real_ns / 1_000_000_000).map_err(|e| e.to_string())
}
