//! The frame decoder: a `proto::conn::WsConn` fed arbitrary client bytes in arbitrary chunk
//! splits, with `poll_transmit` drained.
//!
//! Input layout: byte 0 holds flags (bit 0: small limits, so that the size checks are reached;
//! bit 1: drain `poll_transmit` after every chunk; bit 2: the server closes before any input),
//! bytes 1–2 seed the chunk splits, the rest is the client's byte stream.
//!
//! Checks, besides "never panics": the events and the error do not depend on how the stream
//! was split (one chunk versus many), and neither do the frames queued for the client when
//! both runs drain at the end; text messages are UTF-8; messages and pings respect the limits;
//! after an error the connection is closed.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tickcast::proto::close_code;
use tickcast::proto::conn::{ConnLimits, ConnState, Event, Message, WsConn};

/// What a run produced: events, then the error (if any), and the frames owed to the client.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    error: Option<(u16, &'static str)>,
    transmit: Vec<Bytes>,
}

fuzz_target!(|data: &[u8]| {
    let [flags, s0, s1, stream @ ..] = data else {
        return;
    };
    let limits = if flags & 1 != 0 {
        ConnLimits {
            max_message_bytes: 300,
            max_frame_bytes: 200,
        }
    } else {
        ConnLimits::default()
    };
    let drain_each = flags & 2 != 0;
    let close_first = flags & 4 != 0;

    let whole = run(limits, close_first, &[stream], false);
    let chunks = split(stream, u16::from_le_bytes([*s0, *s1]));
    let split_run = run(limits, close_first, &chunks, drain_each);
    assert_eq!(whole.events, split_run.events, "events depend on the split");
    assert_eq!(
        whole.error, split_run.error,
        "the error depends on the split"
    );
    if !drain_each {
        assert_eq!(
            whole.transmit, split_run.transmit,
            "replies depend on the split"
        );
    }
    for event in &whole.events {
        match event {
            Event::Message(Message::Text(t)) => {
                assert!(std::str::from_utf8(t).is_ok(), "text message not UTF-8");
                assert!(t.len() <= limits.max_message_bytes);
            }
            Event::Message(Message::Binary(b)) => assert!(b.len() <= limits.max_message_bytes),
            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
            Event::Closed { code, .. } => {
                assert!(
                    code.is_none_or(close_code::is_valid),
                    "invalid close code {code:?}"
                );
            }
        }
    }
});

/// Feeds `chunks` one after the other, reading events until the connection wants more bytes.
fn run(limits: ConnLimits, close_first: bool, chunks: &[&[u8]], drain_each: bool) -> Outcome {
    let mut conn = WsConn::new(limits);
    let mut out = Outcome {
        events: Vec::new(),
        error: None,
        transmit: Vec::new(),
    };
    if close_first {
        conn.close(close_code::GOING_AWAY, "shutting down");
        assert_eq!(conn.state(), ConnState::CloseSent);
        assert!(!conn.can_send_data());
    }
    let mut input = BytesMut::new();
    for chunk in chunks {
        input.extend_from_slice(chunk);
        loop {
            match conn.handle_input(&mut input) {
                Ok(Some(event)) => out.events.push(event),
                Ok(None) => break,
                Err(violation) => {
                    assert_eq!(conn.state(), ConnState::Closed, "open after an error");
                    assert!(close_code::is_valid(violation.close_code));
                    // Only the first error is reported; later input is discarded.
                    assert!(out.error.is_none(), "a second error after the first");
                    out.error = Some((violation.close_code, violation.reason));
                }
            }
        }
        if drain_each {
            while let Some(frame) = conn.poll_transmit() {
                out.transmit.push(frame);
            }
        }
    }
    while let Some(frame) = conn.poll_transmit() {
        out.transmit.push(frame);
    }
    out
}

/// Cuts `stream` into chunks of 1 to 64 bytes chosen by a small generator seeded with `seed`
/// (xorshift), with the occasional empty chunk.
fn split(stream: &[u8], seed: u16) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x1_0000;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 65) as usize;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}
