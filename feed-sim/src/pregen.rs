//! The pre-generated stream (`SimConfig::pregen`): the order flow of a finite run, generated
//! and framed once at start so that sending it costs a socket write per batch and nothing per
//! message.
//!
//! [`Pregen::build`] steps the [`Exchange`] `updates` times (the same order flow as the live
//! generator under the same seed) and keeps, in one buffer, every message as an unmasked
//! WebSocket text frame: the `symbols` message and one `snapshot` per symbol (the books before
//! the stream), then the stream. After it, the exchange holds the books at the end of the
//! stream: that is the `GET /book` truth. Message timestamps follow the nominal schedule
//! (`ts0 + k / rate`), not the time of sending. Sans-IO: no clock, no socket.

use crate::exchange::Exchange;

/// A whole pre-generated stream, framed.
#[derive(Debug)]
pub(crate) struct Pregen {
    /// `symbols`, the initial snapshots, then every message of the stream; each message one
    /// unmasked text frame.
    pub(crate) bytes: Vec<u8>,
    /// Offset in `bytes` where the stream starts (just after the initial snapshots).
    pub(crate) head_len: usize,
    /// `ends[k]`: offset in `bytes` just after update `k`'s frames (its trades, then its
    /// `l2update`).
    pub(crate) ends: Vec<usize>,
    /// `heartbeat` messages of every symbol at its last seq (the end of the stream), one line
    /// each.
    pub(crate) final_heartbeats: Vec<String>,
}

impl Pregen {
    /// Generates `updates` steps of `exchange` (which ends at the books after the stream), with
    /// timestamps `ts0_ns + k / rate` seconds.
    pub(crate) fn build(exchange: &mut Exchange, updates: u64, rate: f64, ts0_ns: u64) -> Self {
        let n = usize::try_from(updates).unwrap_or(usize::MAX);
        let mut bytes = Vec::with_capacity(n.saturating_mul(176));
        let mut lines = Vec::with_capacity(64 << 10);
        exchange.symbols_json(&mut lines);
        for i in 0..exchange.symbols().len() {
            exchange.snapshot_json(i, ts0_ns, &mut lines);
        }
        push_frames(&mut bytes, &lines);
        let head_len = bytes.len();
        let mut ends = Vec::with_capacity(n);
        let step_ns = 1e9 / rate;
        for k in 0..updates {
            lines.clear();
            let ts = ts0_ns.saturating_add((k as f64 * step_ns) as u64);
            exchange.step(ts, &mut lines);
            push_frames(&mut bytes, &lines);
            ends.push(bytes.len());
        }
        let ts_end = ts0_ns.saturating_add((updates as f64 * step_ns) as u64);
        let final_heartbeats = (0..exchange.symbols().len())
            .filter_map(|i| {
                lines.clear();
                exchange.heartbeat_json(i, ts_end, &mut lines);
                let line = lines.strip_suffix(b"\n")?;
                String::from_utf8(line.to_vec()).ok()
            })
            .collect();
        Self {
            bytes,
            head_len,
            ends,
            final_heartbeats,
        }
    }

    /// Number of updates in the stream.
    pub(crate) fn updates(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Offset just after the first `k` updates (the head alone for 0).
    pub(crate) fn offset(&self, k: u64) -> usize {
        match usize::try_from(k) {
            Ok(0) => self.head_len,
            Ok(k) => self.ends.get(k - 1).copied().unwrap_or(self.bytes.len()),
            Err(_) => self.bytes.len(),
        }
    }

    /// Updates wholly inside the first `at` bytes.
    pub(crate) fn updates_within(&self, at: usize) -> u64 {
        self.ends.partition_point(|&e| e <= at) as u64
    }

    /// A frame boundary to write up to from `from`: the furthest one at or before `limit`, or,
    /// when none lies in `(from, limit]`, the first one after `from` (a single large frame).
    /// `from` itself when the stream is all written.
    pub(crate) fn boundary(&self, from: usize, limit: usize) -> usize {
        if from < self.head_len {
            return self.head_len;
        }
        let i = self.ends.partition_point(|&e| e <= limit);
        match i.checked_sub(1).and_then(|j| self.ends.get(j)) {
            Some(&e) if e > from => e,
            _ => self.ends[self.ends.partition_point(|&e| e <= from)..]
                .first()
                .copied()
                .unwrap_or(from),
        }
    }
}

/// Appends each `\n`-terminated line of `lines` as one unmasked text frame.
fn push_frames(out: &mut Vec<u8>, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        push_text_frame(out, line);
    }
}

/// Appends `payload` as one unmasked, final text frame (RFC 6455 §5.2).
pub(crate) fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let len = payload.len();
    if len <= 125 {
        out.push(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits framed bytes back into payloads (server frames: unmasked, final, text).
    fn unframe(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert_eq!(b[0], 0x81);
            let (len, hl) = match b[1] {
                126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 => {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(w) as usize, 10)
                }
                n => (usize::from(n), 2),
            };
            out.push(b[hl..hl + len].to_vec());
            b = &b[hl + len..];
        }
        out
    }

    #[test]
    fn the_stream_is_the_live_order_flow_framed() {
        let mut live = Exchange::new(5, 20, 3);
        let mut pre = live.clone();
        let p = Pregen::build(&mut pre, 500, 1e9, 1_000);
        assert_eq!(p.updates(), 500);
        // Same seed, same timestamps: the same messages, one frame each.
        let mut expected = Vec::new();
        live.symbols_json(&mut expected);
        for i in 0..5 {
            live.snapshot_json(i, 1_000, &mut expected);
        }
        for k in 0..500u64 {
            live.step(1_000 + k, &mut expected);
        }
        let expected: Vec<Vec<u8>> = expected
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(unframe(&p.bytes), expected);
        // The exchange ends where the live one does (the truth).
        for i in 0..5 {
            assert_eq!(pre.seq(i), live.seq(i));
            assert_eq!(
                pre.book_json(&pre.symbols()[i].symbol),
                live.book_json(&live.symbols()[i].symbol)
            );
        }
        assert_eq!(p.final_heartbeats.len(), 5);
        // Boundaries and offsets line up with the frames.
        assert_eq!(p.offset(0), p.head_len);
        assert_eq!(p.offset(500), p.bytes.len());
        assert_eq!(p.updates_within(p.offset(37)), 37);
        assert_eq!(p.updates_within(p.offset(37) + 1), 37);
        assert_eq!(p.boundary(0, 1), p.head_len);
        let b = p.boundary(p.head_len, p.head_len + 1000);
        assert!(b <= p.head_len + 1000 && p.ends.contains(&b));
        assert_eq!(p.boundary(p.head_len, p.head_len + 1), p.ends[0]);
        assert_eq!(p.boundary(p.bytes.len(), usize::MAX), p.bytes.len());
    }

    #[test]
    fn frame_lengths_use_every_encoding() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload = vec![b'x'; len];
            let mut out = Vec::new();
            push_text_frame(&mut out, &payload);
            assert_eq!(unframe(&out), vec![payload]);
        }
    }
}
