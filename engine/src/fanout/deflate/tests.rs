//! Shared compression: every message must inflate (with an independent inflater, following
//! RFC 7692 §7.2.2) to exactly the payload the plain path would send for the same records,
//! modulo the documented grouping by stream; pieces are compressed once, not per connection.

use std::io::IoSlice;

use bytes::Bytes;

use super::*;
use crate::fanout::batch::append_batch;

const NO_THRESHOLD: usize = 0;

fn topic(sid: u32, format: Format) -> Topic {
    Topic::book(sid, 0, format)
}

/// A binary-record look-alike: a 32-byte header (length, kind, sid, seq, timestamps) and `n`
/// 16-byte levels, with the regularities real records have.
fn record(sid: u32, seq: u64, n: usize) -> Bytes {
    let len = 40 + 16 * n;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u16).to_le_bytes());
    v.extend_from_slice(&[2, 0]);
    v.extend_from_slice(&sid.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    let ts = 1_763_700_000_000_000_000u64 + seq * 1_234_567;
    v.extend_from_slice(&ts.to_le_bytes());
    v.extend_from_slice(&(ts + 50_000).to_le_bytes());
    v.extend_from_slice(&(n as u16).to_le_bytes());
    v.extend_from_slice(&[0; 6]);
    for i in 0..n as i64 {
        v.extend_from_slice(&(6_500_010 - i * 10).to_le_bytes());
        v.extend_from_slice(&(1_500_000 + (seq as i64 * 37 + i) % 1000).to_le_bytes());
    }
    Bytes::from(v)
}

fn json_record(sid: u32, seq: u64) -> Bytes {
    Bytes::from(format!(
        ",{{\"kind\":\"delta\",\"symbol\":\"SYM-{sid}\",\"sid\":{sid},\"seq\":{seq},\"bids\":[[\"650.{:02}\",\"1.5\"]],\"asks\":[]}}",
        seq % 100
    ))
}

fn flatten(out: &mut OutBuf) -> Vec<u8> {
    let mut v = Vec::new();
    while !out.is_empty() {
        let mut s = [IoSlice::new(&[]); 64];
        let n = out.io_slices(&mut s);
        let mut w = 0;
        for x in &s[..n] {
            v.extend_from_slice(x);
            w += x.len();
        }
        out.advance(w);
    }
    v
}

/// Server frames: (rsv1, opcode, payload).
fn frames(mut b: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
    let mut v = Vec::new();
    while !b.is_empty() {
        assert_eq!(b[0] & 0x80, 0x80, "FIN");
        assert_eq!(b[0] & 0x30, 0, "RSV2/RSV3");
        let (len, h) = match b[1] {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        v.push((b[0] & 0x40 != 0, b[0] & 0x0f, b[h..h + len].to_vec()));
        b = &b[h + len..];
    }
    v
}

/// The receiver's rule (append 00 00 ff ff, inflate), with miniz_oxide as the independent
/// inflater and a fresh state per message (we never take over context).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut data = payload.to_vec();
    data.extend_from_slice(&SYNC_TAIL);
    data.extend_from_slice(&[0x03, 0x00]);
    miniz_oxide::inflate::decompress_to_vec(&data).expect("valid DEFLATE")
}

/// Every message's uncompressed payload.
fn payloads(bytes: &[u8]) -> Vec<(bool, Vec<u8>)> {
    frames(bytes)
        .into_iter()
        .map(|(z, _, p)| (z, if z { inflate(&p) } else { p }))
        .collect()
}

/// The records in a binary payload (after the 8-byte batch header), checking the count.
fn split_binary(p: &[u8]) -> Vec<Vec<u8>> {
    let count = usize::from(u16::from_le_bytes([p[2], p[3]]));
    let mut recs = Vec::new();
    let mut rest = &p[8..];
    while !rest.is_empty() {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        recs.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    assert_eq!(recs.len(), count, "batch header count");
    recs
}

fn plain(format: Format, records: &[Bytes], limits: BatchLimits) -> Vec<u8> {
    let mut out = OutBuf::new(1 << 30);
    append_batch(&mut out, format, records, limits).unwrap();
    flatten(&mut out)
}

/// One drain: `per_conn[i]` lists (topic, record) pairs conn i is owed, in ring order, with
/// topic `None` for its own records. Records of a topic are pushed once, in ring order.
struct Drain {
    shared: SharedDeflate,
    pending: Vec<Vec<Bytes>>,
    refs: Vec<Vec<RunRef>>,
}

impl Drain {
    fn new() -> Self {
        Self {
            shared: SharedDeflate::new(LEVEL),
            pending: Vec::new(),
            refs: Vec::new(),
        }
    }

    /// A ring record delivered to connections `to`.
    fn record(&mut self, t: Topic, r: &Bytes, to: &[usize]) {
        let rr = self.shared.push(t, r, BatchLimits::default());
        for &c in to {
            self.owe(c, r, rr);
        }
    }

    fn own(&mut self, c: usize, r: &Bytes) {
        self.owe(c, r, RunRef::OWN);
    }

    fn owe(&mut self, c: usize, r: &Bytes, rr: RunRef) {
        while self.pending.len() <= c {
            self.pending.push(Vec::new());
            self.refs.push(Vec::new());
        }
        self.pending[c].push(r.clone());
        self.refs[c].push(rr);
    }

    fn flush(&mut self, c: usize, format: Format, bits: u8, limits: BatchLimits) -> Vec<u8> {
        let mut out = OutBuf::new(1 << 30);
        self.shared
            .append_batch(
                &mut out,
                format,
                &self.pending[c],
                &self.refs[c],
                bits,
                limits,
                NO_THRESHOLD,
            )
            .unwrap();
        flatten(&mut out)
    }
}

#[test]
fn one_stream_inflates_to_the_plain_payload() {
    let mut d = Drain::new();
    let recs: Vec<Bytes> = (0..200)
        .map(|s| record(7, 1000 + s, 1 + (s % 4) as usize))
        .collect();
    for r in &recs {
        d.record(topic(7, Format::Binary), r, &[0]);
    }
    let wire = d.flush(0, Format::Binary, 15, BatchLimits::default());
    let plain_wire = plain(Format::Binary, &recs, BatchLimits::default());
    let got = payloads(&wire);
    assert_eq!(got.len(), 1);
    assert!(got[0].0, "compressed (RSV1)");
    assert_eq!(
        got[0].1,
        frames(&plain_wire)[0].2,
        "same bytes as the plain message"
    );
    assert!(
        wire.len() * 2 < plain_wire.len(),
        "ratio: {} of {}",
        wire.len(),
        plain_wire.len()
    );
}

#[test]
fn subscribers_share_one_compression_per_window_size() {
    let mut d = Drain::new();
    let recs: Vec<Bytes> = (0..50).map(|s| record(1, s, 3)).collect();
    for r in &recs {
        d.record(topic(1, Format::Binary), r, &[0, 1, 2, 3]);
    }
    let outs: Vec<Vec<u8>> = (0..4)
        .map(|c| d.flush(c, Format::Binary, 15, BatchLimits::default()))
        .collect();
    assert!(outs.iter().all(|o| o == &outs[0]));
    assert_eq!(
        d.shared.stats().pieces,
        1,
        "compressed once for four subscribers"
    );
    // Another window size is another parameter set: one more compression, and a 9-bit
    // inflater reads it.
    let w9 = d.flush(0, Format::Binary, 9, BatchLimits::default());
    assert_eq!(d.shared.stats().pieces, 2);
    let (z, _, p) = &frames(&w9)[0];
    assert!(*z);
    let mut inf = crate::proto::deflate::Inflater::new(&crate::proto::deflate::DeflateParams {
        client_window_bits: 9,
        ..Default::default()
    });
    let mut out = Vec::new();
    inf.inflate(p, &mut out, 1 << 20).unwrap();
    inf.finish_message(&mut out, 1 << 20).unwrap();
    assert_eq!(
        out,
        frames(&plain(Format::Binary, &recs, BatchLimits::default()))[0].2
    );
}

#[test]
fn streams_are_grouped_in_order_and_own_records_keep_their_place() {
    let mut d = Drain::new();
    let status = Bytes::from_static(&[
        40, 0, 4, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let a: Vec<Bytes> = (0..30).map(|s| record(1, s, 2)).collect();
    let b: Vec<Bytes> = (0..30).map(|s| record(2, s, 2)).collect();
    // Ring: a0 b0 a1 b1 ... with a status after the 10th pair.
    for i in 0..30 {
        d.record(topic(1, Format::Binary), &a[i], &[0]);
        d.record(topic(2, Format::Binary), &b[i], &[0]);
        if i == 10 {
            d.own(0, &status);
        }
    }
    let got = payloads(&d.flush(0, Format::Binary, 15, BatchLimits::default()));
    assert_eq!(got.len(), 1);
    let recs = split_binary(&got[0].1);
    let mut want: Vec<Vec<u8>> = a.iter().map(|r| r.to_vec()).collect();
    want.extend(b.iter().map(|r| r.to_vec()));
    want.push(status.to_vec());
    assert_eq!(recs.len(), want.len());
    // Grouped: all of stream 1 (its first record came first), then stream 2, then the status
    // (it came after both streams' first records).
    assert_eq!(recs, want);
}

#[test]
fn a_subscriber_joining_mid_drain_gets_only_what_follows_its_snapshot() {
    let mut d = Drain::new();
    let snapshot = record(5, 99, 40); // 680 bytes: compressed on its own
    let recs: Vec<Bytes> = (100..400).map(|s| record(5, s, 2)).collect();
    // Connection 0 is subscribed all along; connection 1's snapshot arrives after record 150.
    for (i, r) in recs.iter().enumerate() {
        if i == 150 {
            d.own(1, &snapshot);
        }
        let to: &[usize] = if i >= 150 { &[0, 1] } else { &[0] };
        d.record(topic(5, Format::Binary), r, to);
    }
    let full =
        split_binary(&payloads(&d.flush(0, Format::Binary, 15, BatchLimits::default()))[0].1);
    assert_eq!(full.len(), 300);
    let joined = payloads(&d.flush(1, Format::Binary, 15, BatchLimits::default()));
    assert!(joined[0].0);
    let joined = split_binary(&joined[0].1);
    assert_eq!(joined[0], snapshot.to_vec(), "snapshot first");
    let want: Vec<Vec<u8>> = recs[150..].iter().map(|r| r.to_vec()).collect();
    assert_eq!(&joined[1..], &want[..], "nothing from before the snapshot");
}

#[test]
fn refs_that_are_not_a_run_suffix_fall_back_to_plain() {
    let mut d = Drain::new();
    let recs: Vec<Bytes> = (0..40).map(|s| record(3, s, 3)).collect();
    for r in &recs {
        d.record(topic(3, Format::Binary), r, &[0]);
    }
    // Drop one record from the middle of the connection's list: not a suffix any more.
    d.pending[0].remove(20);
    d.refs[0].remove(20);
    let wire = d.flush(0, Format::Binary, 15, BatchLimits::default());
    assert_eq!(
        wire,
        plain(Format::Binary, &d.pending[0], BatchLimits::default())
    );
}

#[test]
fn below_the_threshold_the_message_is_plain() {
    let mut d = Drain::new();
    let recs: Vec<Bytes> = (0..3).map(|s| record(1, s, 1)).collect();
    for r in &recs {
        d.record(topic(1, Format::Binary), r, &[0]);
    }
    let mut out = OutBuf::new(1 << 20);
    let raw = 8 + recs.iter().map(Bytes::len).sum::<usize>();
    d.shared
        .append_batch(
            &mut out,
            Format::Binary,
            &d.pending[0],
            &d.refs[0],
            15,
            BatchLimits::default(),
            raw + 1,
        )
        .unwrap();
    assert_eq!(
        flatten(&mut out),
        plain(Format::Binary, &recs, BatchLimits::default())
    );
    assert_eq!(d.shared.stats().pieces, 0, "nothing compressed");
}

#[test]
fn incompressible_records_are_not_inflated_in_size() {
    let mut d = Drain::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let recs: Vec<Bytes> = (0..20)
        .map(|_| {
            let mut v = vec![200u8, 0];
            v.extend((0..198).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }));
            Bytes::from(v)
        })
        .collect();
    for r in &recs {
        d.record(topic(1, Format::Binary), r, &[0]);
    }
    let wire = d.flush(0, Format::Binary, 15, BatchLimits::default());
    let p = plain(Format::Binary, &recs, BatchLimits::default());
    assert_eq!(wire, p, "sent plain when compression does not pay");
}

#[test]
fn limits_cut_compressed_batches_into_valid_messages() {
    let limits = BatchLimits {
        max_records: 7,
        max_payload: 1 << 20,
    };
    let mut shared = SharedDeflate::new(LEVEL);
    let recs: Vec<Bytes> = (0..50).map(|s| record(1, s, 4)).collect();
    let refs: Vec<RunRef> = recs
        .iter()
        .map(|r| shared.push(topic(1, Format::Binary), r, limits))
        .collect();
    let mut out = OutBuf::new(1 << 20);
    let n = shared
        .append_batch(&mut out, Format::Binary, &recs, &refs, 15, limits, 0)
        .unwrap();
    let got = payloads(&flatten(&mut out));
    assert_eq!(got.len(), n);
    assert_eq!(n, 8, "7 per message");
    let all: Vec<Vec<u8>> = got.iter().flat_map(|(_, p)| split_binary(p)).collect();
    let want: Vec<Vec<u8>> = recs.iter().map(|r| r.to_vec()).collect();
    assert_eq!(all, want);
    // The out-buffer bound is honoured: nothing queued on overflow.
    let mut small = OutBuf::new(64);
    assert!(
        shared
            .append_batch(&mut small, Format::Binary, &recs, &refs, 15, limits, 0)
            .is_err()
    );
    assert!(small.is_empty());
}

#[test]
fn json_messages_are_valid_arrays() {
    let mut d = Drain::new();
    let a: Vec<Bytes> = (0..40).map(|s| json_record(1, s)).collect();
    let b: Vec<Bytes> = (0..40).map(|s| json_record(2, s)).collect();
    let status = Bytes::from_static(b",{\"kind\":\"status\",\"sid\":1,\"code\":1}");
    let snapshot = Bytes::from(format!(
        ",{{\"kind\":\"snapshot\",\"sid\":2,\"bids\":[{}]}}",
        (0..40)
            .map(|i| format!("[\"{i}.5\",\"1\"]"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    d.own(0, &status);
    d.own(1, &snapshot);
    for i in 0..40 {
        d.record(topic(1, Format::Json), &a[i], &[0]);
        d.record(topic(2, Format::Json), &b[i], &[0, 1]);
    }
    for c in 0..2 {
        let got = payloads(&d.flush(c, Format::Json, 15, BatchLimits::default()));
        assert_eq!(got.len(), 1);
        assert!(got[0].0, "compressed");
        let v: serde_json::Value = serde_json::from_slice(&got[0].1).expect("JSON array");
        let items = v.as_array().unwrap();
        let want: Vec<serde_json::Value> = if c == 0 {
            std::iter::once(&status)
                .chain(&a)
                .chain(&b)
                .map(|r| serde_json::from_slice(&r[1..]).unwrap())
                .collect()
        } else {
            std::iter::once(&snapshot)
                .chain(&b)
                .map(|r| serde_json::from_slice(&r[1..]).unwrap())
                .collect()
        };
        assert_eq!(items, &want);
    }
    // Two JSON pieces (one per stream) plus the snapshot: three compressions.
    assert_eq!(d.shared.stats().pieces, 3);
}

#[test]
fn clear_forgets_the_drain() {
    let mut d = Drain::new();
    let r = record(1, 1, 40);
    d.record(topic(1, Format::Binary), &r, &[0]);
    d.shared.clear();
    // A new drain starts new runs from index 0.
    let rr = d
        .shared
        .push(topic(1, Format::Binary), &r, BatchLimits::default());
    assert_eq!(rr, RunRef { run: 0, idx: 0 });
}

#[test]
fn echo_messages_compress_alone() {
    let mut shared = SharedDeflate::new(LEVEL);
    let msg = "Hello, hello, hello! ".repeat(50);
    let z = shared.compress_message(15, msg.as_bytes()).unwrap();
    assert!(z.len() < msg.len() / 5);
    assert_eq!(inflate(&z), msg.as_bytes());
    let empty = shared.compress_message(15, b"").unwrap();
    assert_eq!(inflate(&empty), b"");
}

#[test]
fn records_longer_than_a_stored_block_are_split() {
    // A JSON snapshot larger than 64 KiB that does not compress (random digits).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut text = String::from(",{\"kind\":\"snapshot\",\"sid\":1,\"bids\":[");
    while text.len() < 150_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("[\"{}\",\"{}\"],", x % 1_000_000_007, x >> 40));
    }
    text.push_str("[\"1\",\"1\"]]}");
    let big = Bytes::from(text);
    let mut d = Drain::new();
    d.own(0, &big);
    let recs: Vec<Bytes> = (0..40).map(|s| json_record(1, s)).collect();
    for r in &recs {
        d.record(topic(1, Format::Json), r, &[0]);
    }
    let got = payloads(&d.flush(0, Format::Json, 15, BatchLimits::default()));
    let all: Vec<serde_json::Value> = got
        .iter()
        .flat_map(|(_, p)| {
            let v: serde_json::Value = serde_json::from_slice(p).expect("JSON array");
            v.as_array().unwrap().clone()
        })
        .collect();
    let want: Vec<serde_json::Value> = std::iter::once(&big)
        .chain(&recs)
        .map(|r| serde_json::from_slice(&r[1..]).unwrap())
        .collect();
    assert_eq!(all, want);
}

#[test]
fn stored_content_longer_than_a_block_is_split() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..150_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let m = build_one(Format::Binary, 1, &[Unit::Plain(Bytes::from(data.clone()))]);
    let payload: Vec<u8> = m.segs.iter().flat_map(|s| s.as_slice().to_vec()).collect();
    let mut want = batch_header(1).to_vec();
    want.extend_from_slice(&data);
    assert_eq!(inflate(&payload), want);
    // The batch header's block, then the record over three blocks of at most 64 KiB; the
    // closing 00.
    assert_eq!(payload.len(), want.len() + 4 * 5 + 1);
}
