//! The feed decoder: `feed::decode::FeedDecoder::decode` after a valid `symbols` message.
//!
//! Two input modes, chosen by the first byte:
//! - `{` or `[`: raw text, one feed message per line (the seed corpus is protocol.md's
//!   examples), decoded in order;
//! - anything else: the rest of the input is read with `arbitrary` as a list of messages that
//!   mostly look like feed JSON (known types and fields, decimal strings, some wrong types,
//!   missing, duplicated or junk fields), rendered to text and decoded in order.
//!
//! Checks, besides "never panics": events name announced symbols only; a refused message leaves
//! the symbol list as it was; `symbols` stays within the decoder's bound; and for a structured
//! message without defects (known symbol, valid decimals, unsigned numbers) the decoded values
//! are exactly the ones rendered.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tickcast::book::Side;
use tickcast::feed::decode::{FeedDecoder, FeedEvent, SymbolSpec};

/// Symbol bound of the decoder under test, small so that the bound is reached.
const MAX_SYMBOLS: usize = 64;

const ANNOUNCE: &[u8] = br#"{"type":"symbols","symbols":[{"symbol":"BTC-USD","px_decimals":2,"qty_decimals":6},{"symbol":"ETH-USD","px_decimals":2,"qty_decimals":4},{"symbol":"DOGE-USD","px_decimals":6,"qty_decimals":0}]}"#;

fuzz_target!(|data: &[u8]| {
    let mut decoder = FeedDecoder::with_max_symbols(MAX_SYMBOLS);
    let mut announce = ANNOUNCE.to_vec();
    assert!(matches!(decoder.decode(&mut announce), Ok(FeedEvent::Symbols(s)) if s.len() == 3));
    match data.first() {
        Some(b'{' | b'[') => {
            for line in data.split(|&b| b == b'\n') {
                decode_checked(&mut decoder, line.to_vec(), None);
            }
        }
        Some(_) => {
            let mut u = Unstructured::new(&data[1..]);
            let Ok(msgs) = Vec::<Msg>::arbitrary(&mut u) else {
                return;
            };
            for msg in msgs {
                let (text, expect) = msg.render(decoder.symbols());
                decode_checked(&mut decoder, text.into_bytes(), expect);
            }
        }
        None => {}
    }
});

/// What a defect-free structured message must decode to.
#[derive(Debug, PartialEq)]
enum Expect {
    Update {
        sym: u32,
        seq: u64,
        ts: u64,
        changes: Vec<(Side, i64, i64)>,
    },
    Trade {
        sym: u32,
        ts: u64,
        trade_id: u64,
        px: i64,
        qty: i64,
        side: Side,
    },
    Snapshot {
        sym: u32,
        seq: u64,
        ts: u64,
        bids: Vec<(i64, i64)>,
        asks: Vec<(i64, i64)>,
    },
    Heartbeat {
        sym: u32,
        seq: u64,
        ts: u64,
    },
}

fn decode_checked(decoder: &mut FeedDecoder, mut msg: Vec<u8>, expect: Option<Expect>) {
    let before: Vec<SymbolSpec> = decoder.symbols().to_vec();
    let got = match decoder.decode(&mut msg) {
        Ok(FeedEvent::Symbols(list)) => {
            assert!(list.len() >= before.len() && list.len() <= MAX_SYMBOLS);
            assert_eq!(&list[..before.len()], &before[..], "symbols renumbered");
            None
        }
        Ok(FeedEvent::Snapshot {
            sym,
            seq,
            ts,
            bids,
            asks,
        }) => Some(Expect::Snapshot {
            sym,
            seq,
            ts,
            bids: bids.iter().map(|l| (l.px, l.qty)).collect(),
            asks: asks.iter().map(|l| (l.px, l.qty)).collect(),
        }),
        Ok(FeedEvent::Update {
            sym,
            seq,
            ts,
            changes,
        }) => Some(Expect::Update {
            sym,
            seq,
            ts,
            changes: changes.iter().map(|c| (c.side, c.px, c.qty)).collect(),
        }),
        Ok(FeedEvent::Trade { sym, ts, trade }) => Some(Expect::Trade {
            sym,
            ts,
            trade_id: trade.trade_id,
            px: trade.px,
            qty: trade.qty,
            side: trade.taker_side,
        }),
        Ok(FeedEvent::Heartbeat { sym, seq, ts }) => Some(Expect::Heartbeat { sym, seq, ts }),
        Err(e) => {
            let _ = e.to_string();
            assert_eq!(
                decoder.symbols(),
                &before[..],
                "a refused message changed the symbols"
            );
            if let Some(expect) = &expect {
                panic!("well-formed message refused: {e}; expected {expect:?}");
            }
            return;
        }
    };
    if let Some(got) = &got {
        let (Expect::Snapshot { sym, .. }
        | Expect::Update { sym, .. }
        | Expect::Trade { sym, .. }
        | Expect::Heartbeat { sym, .. }) = got;
        assert!(
            (*sym as usize) < decoder.symbols().len(),
            "unannounced sid {sym}"
        );
    }
    if let Some(expect) = expect {
        assert_eq!(
            got,
            Some(expect),
            "decoded values differ from the rendered ones"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Structured messages.

#[derive(Arbitrary, Debug)]
enum Msg {
    Symbols(Vec<Sym>),
    Snapshot {
        sym: SymRef,
        seq: Num,
        ts: Num,
        bids: Vec<(Dec, Dec)>,
        asks: Vec<(Dec, Dec)>,
    },
    Update {
        sym: SymRef,
        seq: Num,
        ts: Num,
        changes: Vec<(SideV, Dec, Dec)>,
    },
    Trade {
        sym: SymRef,
        ts: Num,
        trade_id: Num,
        price: Dec,
        qty: Dec,
        side: SideV,
    },
    Heartbeat {
        sym: SymRef,
        seq: Num,
        ts: Num,
    },
    /// Any JSON value at all.
    Junk(Jv),
    /// A well-formed message with one defect.
    Defect(Box<Msg>, Defect),
}

#[derive(Arbitrary, Debug)]
struct Sym {
    name: Name,
    px_decimals: Num,
    qty_decimals: Num,
}

#[derive(Arbitrary, Debug)]
enum Name {
    /// A plausible ticker made of the given letters.
    Ticker(u8, u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum SymRef {
    /// The announced symbol at this index (modulo the list).
    Known(u8),
    Other(Name),
}

#[derive(Arbitrary, Debug, Clone)]
enum Num {
    U(u64),
    Small(u8),
    I(i64),
    F(f64),
    S(String),
}

/// A decimal string: `mantissa` with `frac` fraction digits, or any text.
#[derive(Arbitrary, Debug)]
enum Dec {
    Good { mantissa: i64, frac: u8 },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum SideV {
    Buy,
    Sell,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Defect {
    DropField(u8),
    DuplicateField(u8),
    ReplaceValue(u8, Jv),
    ExtraField(String, Jv),
    Truncate(u16),
}

#[derive(Arbitrary, Debug)]
enum Jv {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    /// A number literal out of any float's range.
    Huge(u8),
    S(String),
    Arr(Vec<Jv>),
    Obj(Vec<(String, Jv)>),
}

/// A message being rendered: fields in order, each a key and its JSON text.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn text(&self) -> String {
        let body: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

impl Msg {
    /// The message's text, and what it must decode to when it has no defect.
    fn render(&self, known: &[SymbolSpec]) -> (String, Option<Expect>) {
        match self {
            Self::Junk(v) => (v.render(), None),
            Self::Defect(inner, defect) => {
                let (mut fields, _) = inner.fields(known);
                let n = fields.0.len().max(1);
                match defect {
                    Defect::DropField(i) => {
                        if !fields.0.is_empty() {
                            fields.0.remove(usize::from(*i) % n);
                        }
                    }
                    Defect::DuplicateField(i) => {
                        if let Some(f) = fields.0.get(usize::from(*i) % n).cloned() {
                            fields.0.push(f);
                        }
                    }
                    Defect::ReplaceValue(i, v) => {
                        if let Some(f) = fields.0.get_mut(usize::from(*i) % n) {
                            f.1 = v.render();
                        }
                    }
                    Defect::ExtraField(k, v) => fields.0.push((k.clone(), v.render())),
                    Defect::Truncate(at) => {
                        let mut text = fields.text();
                        let mut cut = usize::from(*at) % text.len().max(1);
                        while !text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        text.truncate(cut);
                        return (text, None);
                    }
                }
                (fields.text(), None)
            }
            _ => {
                let (fields, expect) = self.fields(known);
                (fields.text(), expect)
            }
        }
    }

    fn fields(&self, known: &[SymbolSpec]) -> (Fields, Option<Expect>) {
        let ty = |t: &str| ("type".to_owned(), json_str(t));
        match self {
            Self::Symbols(list) => {
                let items: Vec<String> = list
                    .iter()
                    .map(|s| {
                        format!(
                            r#"{{"symbol":{},"px_decimals":{},"qty_decimals":{}}}"#,
                            json_str(&s.name.text()),
                            s.px_decimals.render(),
                            s.qty_decimals.render()
                        )
                    })
                    .collect();
                let symbols = ("symbols".to_owned(), format!("[{}]", items.join(",")));
                (Fields(vec![ty("symbols"), symbols]), None)
            }
            Self::Snapshot {
                sym,
                seq,
                ts,
                bids,
                asks,
            } => {
                let (name, spec) = sym.resolve(known);
                let levels = |side: &[(Dec, Dec)]| {
                    let text: Vec<String> = side
                        .iter()
                        .map(|(p, q)| format!("[{},{}]", json_str(&p.text()), json_str(&q.text())))
                        .collect();
                    format!("[{}]", text.join(","))
                };
                let scaled = |side: &[(Dec, Dec)], s: &(u32, u8, u8)| -> Option<Vec<(i64, i64)>> {
                    side.iter()
                        .map(|(p, q)| Some((p.scaled(s.1)?, q.scaled(s.2)?)))
                        .collect()
                };
                let expect = (|| {
                    let s = spec?;
                    Some(Expect::Snapshot {
                        sym: s.0,
                        seq: seq.exact()?,
                        ts: ts.exact()?,
                        bids: scaled(bids, &s)?,
                        asks: scaled(asks, &s)?,
                    })
                })();
                let fields = vec![
                    ty("snapshot"),
                    ("symbol".to_owned(), json_str(&name)),
                    ("seq".to_owned(), seq.render()),
                    ("ts".to_owned(), ts.render()),
                    ("bids".to_owned(), levels(bids)),
                    ("asks".to_owned(), levels(asks)),
                ];
                (Fields(fields), expect)
            }
            Self::Update {
                sym,
                seq,
                ts,
                changes,
            } => {
                let (name, spec) = sym.resolve(known);
                let text: Vec<String> = changes
                    .iter()
                    .map(|(s, p, q)| {
                        format!(
                            "[{},{},{}]",
                            json_str(s.text()),
                            json_str(&p.text()),
                            json_str(&q.text())
                        )
                    })
                    .collect();
                let expect = (|| {
                    let s = spec?;
                    let changes = changes
                        .iter()
                        .map(|(side, p, q)| Some((side.side()?, p.scaled(s.1)?, q.scaled(s.2)?)))
                        .collect::<Option<Vec<_>>>()?;
                    Some(Expect::Update {
                        sym: s.0,
                        seq: seq.exact()?,
                        ts: ts.exact()?,
                        changes,
                    })
                })();
                let fields = vec![
                    ty("l2update"),
                    ("symbol".to_owned(), json_str(&name)),
                    ("seq".to_owned(), seq.render()),
                    ("ts".to_owned(), ts.render()),
                    ("changes".to_owned(), format!("[{}]", text.join(","))),
                ];
                (Fields(fields), expect)
            }
            Self::Trade {
                sym,
                ts,
                trade_id,
                price,
                qty,
                side,
            } => {
                let (name, spec) = sym.resolve(known);
                let expect = (|| {
                    let s = spec?;
                    Some(Expect::Trade {
                        sym: s.0,
                        ts: ts.exact()?,
                        trade_id: trade_id.exact()?,
                        px: price.scaled(s.1)?,
                        qty: qty.scaled(s.2)?,
                        side: side.side()?,
                    })
                })();
                let fields = vec![
                    ty("trade"),
                    ("symbol".to_owned(), json_str(&name)),
                    ("trade_id".to_owned(), trade_id.render()),
                    ("ts".to_owned(), ts.render()),
                    ("price".to_owned(), json_str(&price.text())),
                    ("qty".to_owned(), json_str(&qty.text())),
                    ("side".to_owned(), json_str(side.text())),
                ];
                (Fields(fields), expect)
            }
            Self::Heartbeat { sym, seq, ts } => {
                let (name, spec) = sym.resolve(known);
                let expect = (|| {
                    Some(Expect::Heartbeat {
                        sym: spec?.0,
                        seq: seq.exact()?,
                        ts: ts.exact()?,
                    })
                })();
                let fields = vec![
                    ty("heartbeat"),
                    ("symbol".to_owned(), json_str(&name)),
                    ("seq".to_owned(), seq.render()),
                    ("ts".to_owned(), ts.render()),
                ];
                (Fields(fields), expect)
            }
            Self::Junk(_) | Self::Defect(..) => (Fields(Vec::new()), None),
        }
    }
}

impl Name {
    fn text(&self) -> String {
        match self {
            Self::Ticker(a, b) => {
                let letter = |x: u8| char::from(b'A' + x % 26);
                format!("{}{}-USD", letter(*a), letter(*b))
            }
            Self::Any(s) => s.clone(),
        }
    }
}

impl SymRef {
    /// The name to send and, for an announced symbol, (sid, px_decimals, qty_decimals).
    fn resolve(&self, known: &[SymbolSpec]) -> (String, Option<(u32, u8, u8)>) {
        match self {
            Self::Known(i) if !known.is_empty() => {
                let sid = usize::from(*i) % known.len();
                let s = &known[sid];
                (
                    s.symbol.clone(),
                    Some((sid as u32, s.px_decimals, s.qty_decimals)),
                )
            }
            Self::Known(_) => ("BTC-USD".to_owned(), None),
            Self::Other(name) => {
                let name = name.text();
                let spec = known
                    .iter()
                    .position(|s| s.symbol == name)
                    .map(|sid| (sid as u32, known[sid].px_decimals, known[sid].qty_decimals));
                (name, spec)
            }
        }
    }
}

impl Num {
    fn render(&self) -> String {
        match self {
            Self::U(n) => n.to_string(),
            Self::Small(n) => n.to_string(),
            Self::I(n) => n.to_string(),
            Self::F(f) if f.is_finite() => format!("{f:?}"),
            Self::F(_) => "1.5".to_owned(),
            Self::S(s) => json_str(s),
        }
    }

    /// The value the decoder must read when it is an unsigned integer.
    fn exact(&self) -> Option<u64> {
        match self {
            Self::U(n) => Some(*n),
            Self::Small(n) => Some(u64::from(*n)),
            Self::I(n) => u64::try_from(*n).ok(),
            Self::F(_) | Self::S(_) => None,
        }
    }
}

impl Dec {
    fn text(&self) -> String {
        match self {
            Self::Good { mantissa, frac } => {
                let frac = usize::from(*frac % 24);
                let digits = format!("{:0>width$}", mantissa.unsigned_abs(), width = frac + 1);
                let (int, fraction) = digits.split_at(digits.len() - frac);
                let sign = if *mantissa < 0 { "-" } else { "" };
                if frac == 0 {
                    format!("{sign}{int}")
                } else {
                    format!("{sign}{int}.{fraction}")
                }
            }
            Self::Raw(s) => s.clone(),
        }
    }

    /// The value scaled by `10^decimals`, when the text is a decimal that fits.
    fn scaled(&self, decimals: u8) -> Option<i64> {
        let Self::Good { mantissa, frac } = self else {
            return None;
        };
        let frac = u32::from(*frac % 24);
        let decimals = u32::from(decimals);
        if frac <= decimals {
            mantissa.checked_mul(10i64.checked_pow(decimals - frac)?)
        } else {
            // Extra fraction digits are accepted only when they are zeros.
            let div = 10i64.checked_pow(frac - decimals)?;
            (mantissa % div == 0).then(|| mantissa / div)
        }
    }
}

impl SideV {
    fn text(&self) -> &str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
            Self::Other(s) => s,
        }
    }

    fn side(&self) -> Option<Side> {
        match self {
            Self::Buy => Some(Side::Bid),
            Self::Sell => Some(Side::Ask),
            Self::Other(_) => None,
        }
    }
}

impl Jv {
    fn render(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => b.to_string(),
            Self::U(n) => n.to_string(),
            Self::I(n) => n.to_string(),
            Self::F(f) if f.is_finite() => format!("{f:?}"),
            Self::F(_) => "0.0".to_owned(),
            Self::Huge(e) => format!("1e{}", 300 + u16::from(*e)),
            Self::S(s) => json_str(s),
            Self::Arr(items) => {
                let items: Vec<String> = items.iter().map(Self::render).collect();
                format!("[{}]", items.join(","))
            }
            Self::Obj(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", json_str(k), v.render()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}
