//! Differential: the feed decoder's scanner (`feed/scan.rs`) against simd-json.
//!
//! Two decoders see the same messages after the same `symbols` message: one decodes as the
//! ingester does (`decode_bytes`: the scanner, simd-json for whatever it declines), the other
//! with simd-json alone (`decode_simd`). On every message:
//! - the verdicts and values are the same (the same event, or errors with the same text), so
//!   the malformed-message counters cannot tell the two apart;
//! - whatever the scanner alone decodes (`decode_scan`), simd-json decodes to the same event.
//!
//! Two input modes, chosen by the first byte:
//! - `{`: raw text, one message per line (the seed corpus: feed-sim's messages and tricky
//!   variants of them);
//! - anything else: the rest is read with `arbitrary` as a list of messages in the scanner's
//!   templates (edge integers, decimals of every shape, odd symbol names, now and then a
//!   `symbols` message announcing more), each with an optional byte-level edit.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tickcast::feed::decode::FeedDecoder;

const MAX_SYMBOLS: usize = 64;

/// feed-sim's first five symbols (so that its messages in the corpus decode), and two odd ones.
const ANNOUNCE: &[u8] = br#"{"type":"symbols","symbols":[{"symbol":"BTC-USD","px_decimals":2,"qty_decimals":6},{"symbol":"ETH-USD","px_decimals":2,"qty_decimals":6},{"symbol":"SOL-USD","px_decimals":2,"qty_decimals":4},{"symbol":"XRP-USD","px_decimals":5,"qty_decimals":2},{"symbol":"DOGE-USD","px_decimals":5,"qty_decimals":1},{"symbol":"Z","px_decimals":18,"qty_decimals":18},{"symbol":"A B","px_decimals":0,"qty_decimals":0}]}"#;

struct Pair {
    fast: FeedDecoder,
    simd: FeedDecoder,
}

impl Pair {
    fn new() -> Self {
        let mut fast = FeedDecoder::with_max_symbols(MAX_SYMBOLS);
        let mut simd = FeedDecoder::with_max_symbols(MAX_SYMBOLS);
        assert!(fast.decode_bytes(ANNOUNCE).is_ok());
        assert!(simd.decode_simd(ANNOUNCE).is_ok());
        Self { fast, simd }
    }

    fn check(&mut self, msg: &[u8]) {
        let scanned = self.fast.decode_scan(msg).map(|e| format!("{e:?}"));
        let fast = self
            .fast
            .decode_bytes(msg)
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string());
        let simd = self
            .simd
            .decode_simd(msg)
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string());
        if let Some(scanned) = scanned {
            assert_eq!(
                Ok(&scanned),
                simd.as_ref(),
                "the scanner and simd-json differ on {:?}",
                String::from_utf8_lossy(msg)
            );
        }
        assert_eq!(
            fast,
            simd,
            "decode_bytes and simd-json differ on {:?}",
            String::from_utf8_lossy(msg)
        );
        assert_eq!(self.fast.symbols(), self.simd.symbols());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut pair = Pair::new();
    match data.first() {
        Some(b'{') => {
            for line in data.split(|&b| b == b'\n') {
                pair.check(line);
            }
        }
        Some(_) => {
            let mut u = Unstructured::new(&data[1..]);
            let Ok(msgs) = Vec::<Msg>::arbitrary(&mut u) else {
                return;
            };
            for m in msgs {
                pair.check(&m.render());
            }
        }
        None => {}
    }
});

#[derive(Arbitrary, Debug)]
enum Msg {
    Update {
        sym: Name,
        seq: Int,
        ts: Int,
        changes: Vec<(SideT, Dec, Dec)>,
        edit: Option<Edit>,
    },
    Trade {
        sym: Name,
        trade_id: Int,
        ts: Int,
        price: Dec,
        qty: Dec,
        side: SideT,
        edit: Option<Edit>,
    },
    Heartbeat {
        sym: Name,
        seq: Int,
        ts: Int,
        edit: Option<Edit>,
    },
    /// Announces one more symbol (any name and decimals).
    Symbol { name: Name, px: u8, qty: u8 },
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Int {
    U(u64),
    Small(u8),
    NearI64Max(u8),
    NearU64Max(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Dec {
    /// `mantissa` with `frac` digits after the point, optional leading zeros.
    Good {
        mantissa: i64,
        frac: u8,
        zeros: u8,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum SideT {
    Buy,
    Sell,
    Raw(String),
}

/// A byte-level change to the rendered message.
#[derive(Arbitrary, Debug)]
enum Edit {
    Set(u16, u8),
    Insert(u16, u8),
    Remove(u16),
    Truncate(u16),
}

const KNOWN: [&str; 7] = [
    "BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "Z", "A B",
];

impl Name {
    fn text(&self) -> String {
        match self {
            Self::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
            Self::Raw(s) => s.clone(),
        }
    }
}

impl Int {
    fn text(&self) -> String {
        match self {
            Self::U(n) => n.to_string(),
            Self::Small(n) => n.to_string(),
            Self::NearI64Max(k) => (i64::MAX as u64 - 8 + u64::from(*k % 16)).to_string(),
            Self::NearU64Max(k) => (u64::MAX - u64::from(*k % 16)).to_string(),
            Self::Raw(s) => s.clone(),
        }
    }
}

impl Dec {
    fn text(&self) -> String {
        match self {
            Self::Good {
                mantissa,
                frac,
                zeros,
            } => {
                let frac = usize::from(*frac % 24);
                let digits = format!("{:0>width$}", mantissa.unsigned_abs(), width = frac + 1);
                let (int, fraction) = digits.split_at(digits.len() - frac);
                let sign = if *mantissa < 0 { "-" } else { "" };
                let pad = "0".repeat(usize::from(*zeros % 4));
                if frac == 0 {
                    format!("{sign}{pad}{int}")
                } else {
                    format!("{sign}{pad}{int}.{fraction}")
                }
            }
            Self::Raw(s) => s.clone(),
        }
    }
}

impl SideT {
    fn text(&self) -> &str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
            Self::Raw(s) => s,
        }
    }
}

impl Msg {
    fn render(&self) -> Vec<u8> {
        let (text, edit) = match self {
            Self::Update {
                sym,
                seq,
                ts,
                changes,
                edit,
            } => {
                let changes: Vec<String> = changes
                    .iter()
                    .map(|(s, p, q)| format!(r#"["{}","{}","{}"]"#, s.text(), p.text(), q.text()))
                    .collect();
                (
                    format!(
                        r#"{{"type":"l2update","symbol":"{}","seq":{},"ts":{},"changes":[{}]}}"#,
                        sym.text(),
                        seq.text(),
                        ts.text(),
                        changes.join(",")
                    ),
                    edit,
                )
            }
            Self::Trade {
                sym,
                trade_id,
                ts,
                price,
                qty,
                side,
                edit,
            } => (
                format!(
                    r#"{{"type":"trade","symbol":"{}","trade_id":{},"ts":{},"price":"{}","qty":"{}","side":"{}"}}"#,
                    sym.text(),
                    trade_id.text(),
                    ts.text(),
                    price.text(),
                    qty.text(),
                    side.text()
                ),
                edit,
            ),
            Self::Heartbeat { sym, seq, ts, edit } => (
                format!(
                    r#"{{"type":"heartbeat","symbol":"{}","seq":{},"ts":{}}}"#,
                    sym.text(),
                    seq.text(),
                    ts.text()
                ),
                edit,
            ),
            Self::Symbol { name, px, qty } => (
                format!(
                    r#"{{"type":"symbols","symbols":[{{"symbol":{},"px_decimals":{},"qty_decimals":{}}}]}}"#,
                    serde_json::to_string(&name.text()).unwrap_or_default(),
                    px % 20,
                    qty % 20
                ),
                &None,
            ),
        };
        let mut b = text.into_bytes();
        if let Some(edit) = edit {
            let at = |p: &u16, len: usize| usize::from(*p) % (len + 1);
            match edit {
                Edit::Set(p, v) => {
                    let i = at(p, b.len());
                    if i < b.len() {
                        b[i] = *v;
                    }
                }
                Edit::Insert(p, v) => {
                    let i = at(p, b.len());
                    b.insert(i, *v);
                }
                Edit::Remove(p) => {
                    let i = at(p, b.len());
                    if i < b.len() {
                        b.remove(i);
                    }
                }
                Edit::Truncate(p) => {
                    let i = at(p, b.len());
                    b.truncate(i);
                }
            }
        }
        b
    }
}
