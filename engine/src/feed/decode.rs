//! Feed message decoding (sans-IO): one exchange JSON message in, one [`FeedEvent`] out.
//!
//! The hot messages (`l2update`, `trade`, `heartbeat`) in exactly the form the feed sends them
//! are decoded by a scanner (`feed/scan.rs`) that reads them in one pass without copying; it
//! either decodes a message completely or declines it, never refuses one. Every message it
//! declines is parsed with simd-json into a tape that the decoder keeps between calls, so
//! simd-json alone decides what is invalid, and every error comes from it. On that path the hot
//! messages are read straight off the tape in one pass (keys matched by their bytes, fields read
//! where they are); the others go through simd-json's tape `Value`. The tape,
//! simd-json's scratch buffers and the level/change vectors the events borrow are kept between
//! calls, so that decoding a snapshot, an update or a trade does not allocate in steady state.
//! Decimal strings are scaled to integers with the symbol's decimals ([`parse_decimal`]);
//! there is no floating point.
//!
//! The decoder remembers the symbols the feed announced: a symbol's position in
//! [`FeedDecoder::symbols`] is the engine's sid. New symbols are appended, never renumbered.

// `DecodeError` owns `String`s, so `ok_or(DecodeError::..)` builds and drops an error on every
// success: a call per field on the hot path (measured ~3% of decoding). Hence `ok_or_else`.
#![allow(clippy::unnecessary_lazy_evaluations)]

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use simd_json::prelude::{ValueAsScalar, ValueIntoString};
use simd_json::tape::{Array, Node, Value};
use simd_json::{Buffers, Tape};

use crate::book::{Level, Side};
use crate::feed::scan::{self, Scanned, Sym};
use crate::wire::{DecimalError, Trade, parse_decimal};

/// Largest `px_decimals` / `qty_decimals` a symbol may declare (`10^18` still fits an `i64`).
pub const MAX_DECIMALS: u8 = 18;
/// Longest symbol name accepted, in bytes.
pub const MAX_SYMBOL_LEN: usize = 64;
/// Default bound on the number of symbols a decoder remembers (see
/// [`FeedDecoder::with_max_symbols`]).
pub const DEFAULT_MAX_SYMBOLS: usize = 65_536;

/// A symbol as announced by the feed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolSpec {
    /// Symbol name, e.g. `BTC-USD`.
    pub symbol: String,
    /// Prices are scaled by `10^px_decimals`.
    pub px_decimals: u8,
    /// Quantities are scaled by `10^qty_decimals`.
    pub qty_decimals: u8,
}

/// One level change of an `l2update`: `qty == 0` removes the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Book side (`"buy"` = bid, `"sell"` = ask).
    pub side: Side,
    /// Scaled price.
    pub px: i64,
    /// Scaled new total quantity at `px`.
    pub qty: i64,
}

/// One decoded feed message. Slices borrow the decoder's scratch space and are valid until the
/// next [`FeedDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedEvent<'a> {
    /// A `symbols` message: the full list now known to the decoder (index = sid).
    Symbols(&'a [SymbolSpec]),
    /// A full book `snapshot` of symbol `sym`, levels in feed order.
    Snapshot {
        /// Symbol id.
        sym: u32,
        /// Exchange sequence number of the last change included.
        seq: u64,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// Bid levels as sent.
        bids: &'a [Level],
        /// Ask levels as sent.
        asks: &'a [Level],
    },
    /// An `l2update` of symbol `sym`: changes to apply in order.
    Update {
        /// Symbol id.
        sym: u32,
        /// Exchange sequence number.
        seq: u64,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// The level changes.
        changes: &'a [Change],
    },
    /// A `trade` of symbol `sym`.
    Trade {
        /// Symbol id.
        sym: u32,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
        /// The trade, scaled.
        trade: Trade,
    },
    /// A `heartbeat` of symbol `sym`: the feed is alive and `sym`'s last update had `seq`.
    Heartbeat {
        /// Symbol id.
        sym: u32,
        /// Exchange sequence number of the symbol's last update.
        seq: u64,
        /// Exchange timestamp, ns since the Unix epoch.
        ts: u64,
    },
}

/// Why a feed message could not be decoded. Every variant means "this message is unusable";
/// for book messages the ingester should treat the symbol's book as suspect and resync it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not valid JSON (malformed or truncated): drop the message.
    #[error("invalid JSON: {0}")]
    Json(#[from] simd_json::Error),
    /// Valid JSON but not an object: drop the message.
    #[error("message is not a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("bad field `{0}`")]
    BadField(&'static str),
    /// A field appears twice in one object, so the message is ambiguous.
    #[error("duplicate field `{0}`")]
    DuplicateField(&'static str),
    /// The `type` is not one this decoder knows; newer feeds may add types, so log and skip.
    #[error("unknown message type")]
    UnknownType,
    /// A book or trade message names a symbol no `symbols` message announced: resubscribe.
    #[error("unknown symbol `{0}`")]
    UnknownSymbol(String),
    /// A price or quantity string is not a valid decimal for the symbol's decimals.
    #[error("bad decimal in `{field}`: {source}")]
    Decimal {
        /// The field holding the decimal.
        field: &'static str,
        /// What was wrong with it.
        source: DecimalError,
    },
    /// A `symbols` message would take the decoder past its symbol bound; nothing was added.
    #[error("too many symbols")]
    TooManySymbols,
    /// A `symbols` message re-announced a known symbol with other decimals; nothing was added.
    /// Scaled values already sent would change meaning: restart the feed session.
    #[error("symbol `{0}` changed its decimals")]
    SymbolChanged(String),
}

/// A fast hasher for symbol names (short ASCII strings chosen by the feed, which is trusted
/// with the data anyway): word-at-a-time multiply-rotate, much cheaper than SipHash per lookup.
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Decodes feed messages, remembering the announced symbols. Reuse one per feed connection.
pub struct FeedDecoder {
    symbols: Vec<SymbolSpec>,
    /// Symbol name (the bytes of the UTF-8 name) to sid.
    index: HashMap<Box<[u8]>, u32, BuildHasherDefault<NameHasher>>,
    max_symbols: usize,
    buffers: Buffers,
    /// Always empty between calls; kept only for its capacity.
    tape: Tape<'static>,
    bids: Vec<Level>,
    asks: Vec<Level>,
    changes: Vec<Change>,
    /// A copy of a message for simd-json, by [`decode_bytes`](Self::decode_bytes).
    copy: Vec<u8>,
}

impl fmt::Debug for FeedDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedDecoder")
            .field("symbols", &self.symbols.len())
            .field("max_symbols", &self.max_symbols)
            .finish_non_exhaustive()
    }
}

impl Default for FeedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What was decoded, before borrowing the scratch vectors into a [`FeedEvent`].
enum Parsed {
    Symbols,
    Snapshot { sym: u32, seq: u64, ts: u64 },
    Update { sym: u32, seq: u64, ts: u64 },
    Trade { sym: u32, ts: u64, trade: Trade },
    Heartbeat { sym: u32, seq: u64, ts: u64 },
}

/// The known top-level fields of a message, each seen at most once.
#[derive(Default)]
struct Fields<'t, 'i> {
    ty: Option<Value<'t, 'i>>,
    symbol: Option<Value<'t, 'i>>,
    symbols: Option<Value<'t, 'i>>,
    seq: Option<Value<'t, 'i>>,
    ts: Option<Value<'t, 'i>>,
    bids: Option<Value<'t, 'i>>,
    asks: Option<Value<'t, 'i>>,
    changes: Option<Value<'t, 'i>>,
    trade_id: Option<Value<'t, 'i>>,
    price: Option<Value<'t, 'i>>,
    qty: Option<Value<'t, 'i>>,
    side: Option<Value<'t, 'i>>,
}

impl FeedDecoder {
    /// A decoder that knows no symbols yet, bounded to [`DEFAULT_MAX_SYMBOLS`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_symbols(DEFAULT_MAX_SYMBOLS)
    }

    /// A decoder that refuses to remember more than `max_symbols` symbols (capped at
    /// `u32::MAX`), so that a misbehaving feed cannot grow it without bound.
    #[must_use]
    pub fn with_max_symbols(max_symbols: usize) -> Self {
        Self {
            symbols: Vec::new(),
            index: HashMap::default(),
            max_symbols: max_symbols.min(u32::MAX as usize),
            buffers: Buffers::new(4096),
            tape: Tape(Vec::new()),
            bids: Vec::new(),
            asks: Vec::new(),
            changes: Vec::new(),
            copy: Vec::new(),
        }
    }

    /// The symbols announced so far; a symbol's index is its sid.
    #[must_use]
    pub fn symbols(&self) -> &[SymbolSpec] {
        &self.symbols
    }

    /// The sid of `name`, if announced.
    #[must_use]
    pub fn symbol_index(&self, name: &str) -> Option<u32> {
        self.index.get(name.as_bytes()).copied()
    }

    /// The symbol with id `sid`, if announced.
    #[must_use]
    pub fn symbol(&self, sid: u32) -> Option<&SymbolSpec> {
        self.symbols.get(usize::try_from(sid).ok()?)
    }

    /// Decodes one message. `msg` is parsed in place (simd-json rewrites it); the returned
    /// event borrows only the decoder.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]; the decoder stays usable and its symbol list unchanged.
    pub fn decode<'a>(&'a mut self, msg: &mut [u8]) -> Result<FeedEvent<'a>, DecodeError> {
        if let Some(parsed) = self.scan(msg) {
            return Ok(self.event(parsed));
        }
        let parsed = self.parse(msg)?;
        Ok(self.event(parsed))
    }

    /// Decodes one WebSocket text payload in place, as [`decode`](Self::decode) does, and
    /// checks that it is UTF-8 (RFC 6455 §8.1) where that is not already certain: a message
    /// the scanner decodes is ASCII by its templates; any other is checked before simd-json
    /// parses it.
    ///
    /// # Errors
    ///
    /// `Err(None)`: the payload is not UTF-8 (a protocol error of the feed, not a malformed
    /// message). `Err(Some(e))`: any [`DecodeError`]. The decoder stays usable either way.
    pub fn decode_text<'a>(
        &'a mut self,
        msg: &mut [u8],
    ) -> Result<FeedEvent<'a>, Option<DecodeError>> {
        if let Some(parsed) = self.scan(msg) {
            debug_assert!(msg.is_ascii(), "the scanner's templates are ASCII");
            return Ok(self.event(parsed));
        }
        if std::str::from_utf8(msg).is_err() {
            return Err(None);
        }
        let parsed = self.parse(msg)?;
        Ok(self.event(parsed))
    }

    /// Decodes one message without modifying it, as [`decode`](Self::decode) does, on a copy
    /// in the decoder's scratch buffer (simd-json parses in place). Prefer [`decode`](Self::decode)
    /// (Self::decode) when the caller owns the message.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]; the decoder stays usable and its symbol list unchanged.
    pub fn decode_bytes<'a>(&'a mut self, msg: &[u8]) -> Result<FeedEvent<'a>, DecodeError> {
        if let Some(parsed) = self.scan(msg) {
            return Ok(self.event(parsed));
        }
        self.decode_simd(msg)
    }

    /// [`decode_bytes`](Self::decode_bytes) without the scanner: simd-json parses every
    /// message. The reference the differential tests and the `feed_scan_diff` fuzz target hold
    /// the scanner to; not for production use.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]; the decoder stays usable and its symbol list unchanged.
    #[doc(hidden)]
    pub fn decode_simd<'a>(&'a mut self, msg: &[u8]) -> Result<FeedEvent<'a>, DecodeError> {
        let mut copy = std::mem::take(&mut self.copy);
        copy.clear();
        copy.extend_from_slice(msg);
        let parsed = self.parse(&mut copy);
        self.copy = copy;
        Ok(self.event(parsed?))
    }

    /// The scanner alone (`feed/scan.rs`): the event if it decoded `msg`, `None` if it
    /// declined it (simd-json would then decide). For the differential tests and the
    /// `feed_scan_diff` fuzz target.
    #[doc(hidden)]
    pub fn decode_scan(&mut self, msg: &[u8]) -> Option<FeedEvent<'_>> {
        let parsed = self.scan(msg)?;
        Some(self.event(parsed))
    }

    /// The scanner, with the decoder's symbols; `None`: declined (nothing decided).
    #[inline]
    fn scan(&mut self, msg: &[u8]) -> Option<Parsed> {
        let (index, symbols) = (&self.index, &self.symbols);
        let lookup = |name: &[u8]| {
            let sid = *index.get(name)?;
            let spec = symbols.get(sid as usize)?;
            Some(Sym {
                sid,
                px_dec: spec.px_decimals,
                qty_dec: spec.qty_decimals,
            })
        };
        Some(match scan::scan(msg, lookup, &mut self.changes)? {
            Scanned::Update { sid, seq, ts } => Parsed::Update { sym: sid, seq, ts },
            Scanned::Trade { sid, ts, trade } => Parsed::Trade {
                sym: sid,
                ts,
                trade,
            },
            Scanned::Heartbeat { sid, seq, ts } => Parsed::Heartbeat { sym: sid, seq, ts },
        })
    }

    /// simd-json's tape, then [`interpret`](Self::interpret).
    fn parse(&mut self, msg: &mut [u8]) -> Result<Parsed, DecodeError> {
        let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let parsed = match simd_json::fill_tape(msg, &mut self.buffers, &mut tape) {
            Ok(()) => match self.walk(&tape.0) {
                Some(hot) => hot,
                None => self.interpret(tape.as_value()),
            },
            Err(e) => Err(DecodeError::Json(e)),
        };
        self.tape = tape.reset();
        parsed
    }

    /// The hot messages (`l2update`, `trade`, `heartbeat`) straight from simd-json's tape, in
    /// one pass: the top-level keys are matched by their bytes and remembered as tape positions,
    /// then the message's fields are read where they are, with no `Value` or object lookups.
    /// `None` for any other type (or no usable `type`): [`interpret`](Self::interpret) then
    /// decides the message, errors included. The outcome is the same either way (tests compare
    /// the two on every message they decode).
    fn walk(&mut self, nodes: &[Node<'_>]) -> Option<Result<Parsed, DecodeError>> {
        let Some(&Node::Object { len, .. }) = nodes.first() else {
            return None;
        };
        // Tape position of each known field's value (0: absent; the root is never a value).
        let mut at = [0usize; F_COUNT];
        let mut i = 1;
        for _ in 0..len {
            let Some(Node::String(key)) = nodes.get(i) else {
                return None;
            };
            let v = i + 1;
            i = v + nodes.get(v).map_or(1, node_len);
            let f = match key.as_bytes() {
                b"type" => F_TYPE,
                b"symbol" => F_SYMBOL,
                b"symbols" => F_SYMBOLS,
                b"seq" => F_SEQ,
                b"ts" => F_TS,
                b"bids" => F_BIDS,
                b"asks" => F_ASKS,
                b"changes" => F_CHANGES,
                b"trade_id" => F_TRADE_ID,
                b"price" => F_PRICE,
                b"qty" => F_QTY,
                b"side" => F_SIDE,
                _ => continue,
            };
            if at[f] != 0 {
                return Some(Err(DecodeError::DuplicateField(F_NAMES[f])));
            }
            at[f] = v;
        }
        let field = |f: usize| field_node(nodes, &at, f);
        let Some(Node::String(ty)) = field(F_TYPE) else {
            return None;
        };
        Some(match ty.as_bytes() {
            b"l2update" => self.walk_update(nodes, &at),
            b"trade" => self.walk_trade(nodes, &at),
            b"heartbeat" => self.lookup_node(field(F_SYMBOL)).and_then(|(sym, _, _)| {
                Ok(Parsed::Heartbeat {
                    sym,
                    seq: node_u64(field(F_SEQ), "seq")?,
                    ts: node_u64(field(F_TS), "ts")?,
                })
            }),
            _ => return None,
        })
    }

    fn walk_update(
        &mut self,
        nodes: &[Node<'_>],
        at: &[usize; F_COUNT],
    ) -> Result<Parsed, DecodeError> {
        let field = |f: usize| field_node(nodes, at, f);
        let (sym, px_dec, qty_dec) = self.lookup_node(field(F_SYMBOL))?;
        let seq = node_u64(field(F_SEQ), "seq")?;
        let ts = node_u64(field(F_TS), "ts")?;
        let (n, changes) = match field(F_CHANGES) {
            None => return Err(DecodeError::MissingField("changes")),
            Some(Node::Array { len, count }) => {
                let start = at[F_CHANGES] + 1;
                (len, nodes.get(start..start + count).unwrap_or_default())
            }
            Some(_) => return Err(DecodeError::BadField("changes")),
        };
        walk_changes(changes, n, px_dec, qty_dec, &mut self.changes)?;
        Ok(Parsed::Update { sym, seq, ts })
    }

    fn walk_trade(&self, nodes: &[Node<'_>], at: &[usize; F_COUNT]) -> Result<Parsed, DecodeError> {
        let field = |f: usize| field_node(nodes, at, f);
        let (sym, px_dec, qty_dec) = self.lookup_node(field(F_SYMBOL))?;
        let ts = node_u64(field(F_TS), "ts")?;
        let trade = Trade {
            px: decimal(node_str(field(F_PRICE), "price")?, px_dec, "price")?,
            qty: decimal(node_str(field(F_QTY), "qty")?, qty_dec, "qty")?,
            trade_id: node_u64(field(F_TRADE_ID), "trade_id")?,
            taker_side: side(node_str(field(F_SIDE), "side")?, "side")?,
        };
        Ok(Parsed::Trade { sym, ts, trade })
    }

    /// [`lookup`](Self::lookup) of a tape node.
    fn lookup_node(&self, v: Option<Node<'_>>) -> Result<(u32, u8, u8), DecodeError> {
        let name = node_str(v, "symbol")?;
        let unknown = || DecodeError::UnknownSymbol(name.to_owned());
        let sym = *self.index.get(name.as_bytes()).ok_or_else(unknown)?;
        let spec = self.symbols.get(sym as usize).ok_or_else(unknown)?;
        Ok((sym, spec.px_decimals, spec.qty_decimals))
    }

    /// Decodes with the `Value`-based [`interpret`](Self::interpret) alone, not the tape walk:
    /// the reference the tests hold the walk to.
    #[cfg(test)]
    fn decode_reference<'a>(&'a mut self, msg: &mut [u8]) -> Result<FeedEvent<'a>, DecodeError> {
        let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let parsed = match simd_json::fill_tape(msg, &mut self.buffers, &mut tape) {
            Ok(()) => self.interpret(tape.as_value()),
            Err(e) => Err(DecodeError::Json(e)),
        };
        self.tape = tape.reset();
        Ok(self.event(parsed?))
    }

    fn event(&self, parsed: Parsed) -> FeedEvent<'_> {
        match parsed {
            Parsed::Symbols => FeedEvent::Symbols(&self.symbols),
            Parsed::Snapshot { sym, seq, ts } => FeedEvent::Snapshot {
                sym,
                seq,
                ts,
                bids: &self.bids,
                asks: &self.asks,
            },
            Parsed::Update { sym, seq, ts } => FeedEvent::Update {
                sym,
                seq,
                ts,
                changes: &self.changes,
            },
            Parsed::Trade { sym, ts, trade } => FeedEvent::Trade { sym, ts, trade },
            Parsed::Heartbeat { sym, seq, ts } => FeedEvent::Heartbeat { sym, seq, ts },
        }
    }

    fn interpret(&mut self, root: Value<'_, '_>) -> Result<Parsed, DecodeError> {
        let obj = root.as_object().ok_or_else(|| DecodeError::NotAnObject)?;
        let mut f = Fields::default();
        for (key, v) in obj.iter() {
            let (slot, name) = match key {
                "type" => (&mut f.ty, "type"),
                "symbol" => (&mut f.symbol, "symbol"),
                "symbols" => (&mut f.symbols, "symbols"),
                "seq" => (&mut f.seq, "seq"),
                "ts" => (&mut f.ts, "ts"),
                "bids" => (&mut f.bids, "bids"),
                "asks" => (&mut f.asks, "asks"),
                "changes" => (&mut f.changes, "changes"),
                "trade_id" => (&mut f.trade_id, "trade_id"),
                "price" => (&mut f.price, "price"),
                "qty" => (&mut f.qty, "qty"),
                "side" => (&mut f.side, "side"),
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(DecodeError::DuplicateField(name));
            }
        }
        match req_str(f.ty, "type")? {
            "l2update" => {
                let (sym, px_dec, qty_dec) = self.lookup(f.symbol)?;
                let seq = req_u64(f.seq, "seq")?;
                let ts = req_u64(f.ts, "ts")?;
                let changes = req_array(f.changes, "changes")?;
                parse_changes(changes, px_dec, qty_dec, &mut self.changes)?;
                Ok(Parsed::Update { sym, seq, ts })
            }
            "trade" => {
                let (sym, px_dec, qty_dec) = self.lookup(f.symbol)?;
                let ts = req_u64(f.ts, "ts")?;
                let trade = Trade {
                    px: decimal(req_str(f.price, "price")?, px_dec, "price")?,
                    qty: decimal(req_str(f.qty, "qty")?, qty_dec, "qty")?,
                    trade_id: req_u64(f.trade_id, "trade_id")?,
                    taker_side: side(req_str(f.side, "side")?, "side")?,
                };
                Ok(Parsed::Trade { sym, ts, trade })
            }
            "snapshot" => {
                let (sym, px_dec, qty_dec) = self.lookup(f.symbol)?;
                let seq = req_u64(f.seq, "seq")?;
                let ts = req_u64(f.ts, "ts")?;
                let bids = req_array(f.bids, "bids")?;
                let asks = req_array(f.asks, "asks")?;
                parse_levels(bids, "bids", px_dec, qty_dec, &mut self.bids)?;
                parse_levels(asks, "asks", px_dec, qty_dec, &mut self.asks)?;
                Ok(Parsed::Snapshot { sym, seq, ts })
            }
            "heartbeat" => {
                let (sym, _, _) = self.lookup(f.symbol)?;
                let seq = req_u64(f.seq, "seq")?;
                let ts = req_u64(f.ts, "ts")?;
                Ok(Parsed::Heartbeat { sym, seq, ts })
            }
            "symbols" => {
                let list = req_array(f.symbols, "symbols")?;
                self.add_symbols(list)?;
                Ok(Parsed::Symbols)
            }
            _ => Err(DecodeError::UnknownType),
        }
    }

    /// Resolves the `symbol` field to (sid, px_decimals, qty_decimals).
    fn lookup(&self, v: Option<Value<'_, '_>>) -> Result<(u32, u8, u8), DecodeError> {
        let name = req_str(v, "symbol")?;
        let sym = self
            .symbol_index(name)
            .ok_or_else(|| DecodeError::UnknownSymbol(name.to_owned()))?;
        let spec = self
            .symbol(sym)
            .ok_or_else(|| DecodeError::UnknownSymbol(name.to_owned()))?;
        Ok((sym, spec.px_decimals, spec.qty_decimals))
    }

    /// Appends the new symbols of a `symbols` list; on error rolls back to the previous list.
    fn add_symbols(&mut self, list: Array<'_, '_>) -> Result<(), DecodeError> {
        let before = self.symbols.len();
        let res = self.add_symbols_inner(list);
        if res.is_err() {
            for spec in self.symbols.drain(before..) {
                self.index.remove(spec.symbol.as_bytes());
            }
        }
        res
    }

    fn add_symbols_inner(&mut self, list: Array<'_, '_>) -> Result<(), DecodeError> {
        for item in list.iter() {
            let obj = item
                .as_object()
                .ok_or_else(|| DecodeError::BadField("symbols"))?;
            let (mut name, mut px, mut qty) = (None, None, None);
            for (key, v) in obj.iter() {
                let (slot, field) = match key {
                    "symbol" => (&mut name, "symbol"),
                    "px_decimals" => (&mut px, "px_decimals"),
                    "qty_decimals" => (&mut qty, "qty_decimals"),
                    _ => continue,
                };
                if slot.replace(v).is_some() {
                    return Err(DecodeError::DuplicateField(field));
                }
            }
            let name = req_str(name, "symbol")?;
            if name.is_empty() || name.len() > MAX_SYMBOL_LEN {
                return Err(DecodeError::BadField("symbol"));
            }
            let px_decimals = decimals_field(px, "px_decimals")?;
            let qty_decimals = decimals_field(qty, "qty_decimals")?;
            if let Some(known) = self.symbol_index(name).and_then(|i| self.symbol(i)) {
                if known.px_decimals != px_decimals || known.qty_decimals != qty_decimals {
                    return Err(DecodeError::SymbolChanged(name.to_owned()));
                }
                continue;
            }
            if self.symbols.len() >= self.max_symbols {
                return Err(DecodeError::TooManySymbols);
            }
            let sid = u32::try_from(self.symbols.len()).map_err(|_| DecodeError::TooManySymbols)?;
            self.symbols.push(SymbolSpec {
                symbol: name.to_owned(),
                px_decimals,
                qty_decimals,
            });
            self.index.insert(name.as_bytes().into(), sid);
        }
        Ok(())
    }
}

fn req<'t, 'i>(v: Option<Value<'t, 'i>>, name: &'static str) -> Result<Value<'t, 'i>, DecodeError> {
    v.ok_or_else(|| DecodeError::MissingField(name))
}

fn req_str<'i>(v: Option<Value<'_, 'i>>, name: &'static str) -> Result<&'i str, DecodeError> {
    req(v, name)?
        .into_string()
        .ok_or_else(|| DecodeError::BadField(name))
}

fn req_u64(v: Option<Value<'_, '_>>, name: &'static str) -> Result<u64, DecodeError> {
    req(v, name)?
        .as_u64()
        .ok_or_else(|| DecodeError::BadField(name))
}

fn req_array<'t, 'i>(
    v: Option<Value<'t, 'i>>,
    name: &'static str,
) -> Result<Array<'t, 'i>, DecodeError> {
    req(v, name)?
        .as_array()
        .ok_or_else(|| DecodeError::BadField(name))
}

fn decimals_field(v: Option<Value<'_, '_>>, name: &'static str) -> Result<u8, DecodeError> {
    let d = req_u64(v, name)?;
    u8::try_from(d)
        .ok()
        .filter(|&d| d <= MAX_DECIMALS)
        .ok_or_else(|| DecodeError::BadField(name))
}

fn decimal(s: &str, decimals: u8, field: &'static str) -> Result<i64, DecodeError> {
    parse_decimal(s.as_bytes(), decimals).map_err(|source| DecodeError::Decimal { field, source })
}

fn side(s: &str, field: &'static str) -> Result<Side, DecodeError> {
    match s {
        "buy" => Ok(Side::Bid),
        "sell" => Ok(Side::Ask),
        _ => Err(DecodeError::BadField(field)),
    }
}

/// Parses `[["px","qty"],...]` into `out` (cleared first).
fn parse_levels(
    list: Array<'_, '_>,
    name: &'static str,
    px_dec: u8,
    qty_dec: u8,
    out: &mut Vec<Level>,
) -> Result<(), DecodeError> {
    out.clear();
    for item in list.iter() {
        let pair = item.as_array().ok_or_else(|| DecodeError::BadField(name))?;
        let mut it = pair.iter();
        let (Some(px), Some(qty), None) = (it.next(), it.next(), it.next()) else {
            return Err(DecodeError::BadField(name));
        };
        let px = px.as_str().ok_or_else(|| DecodeError::BadField(name))?;
        let qty = qty.as_str().ok_or_else(|| DecodeError::BadField(name))?;
        out.push(Level {
            px: decimal(px, px_dec, name)?,
            qty: decimal(qty, qty_dec, name)?,
        });
    }
    Ok(())
}

/// Parses `[["buy"|"sell","px","qty"],...]` into `out` (cleared first).
fn parse_changes(
    list: Array<'_, '_>,
    px_dec: u8,
    qty_dec: u8,
    out: &mut Vec<Change>,
) -> Result<(), DecodeError> {
    const NAME: &str = "changes";
    out.clear();
    for item in list.iter() {
        let triple = item.as_array().ok_or_else(|| DecodeError::BadField(NAME))?;
        let mut it = triple.iter();
        let (Some(s), Some(px), Some(qty), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(DecodeError::BadField(NAME));
        };
        let s = s.as_str().ok_or_else(|| DecodeError::BadField(NAME))?;
        let px = px.as_str().ok_or_else(|| DecodeError::BadField(NAME))?;
        let qty = qty.as_str().ok_or_else(|| DecodeError::BadField(NAME))?;
        out.push(Change {
            side: side(s, NAME)?,
            px: decimal(px, px_dec, NAME)?,
            qty: decimal(qty, qty_dec, NAME)?,
        });
    }
    Ok(())
}

// The top-level fields [`FeedDecoder::walk`] knows, as indexes into its position array.
const F_TYPE: usize = 0;
const F_SYMBOL: usize = 1;
const F_SYMBOLS: usize = 2;
const F_SEQ: usize = 3;
const F_TS: usize = 4;
const F_BIDS: usize = 5;
const F_ASKS: usize = 6;
const F_CHANGES: usize = 7;
const F_TRADE_ID: usize = 8;
const F_PRICE: usize = 9;
const F_QTY: usize = 10;
const F_SIDE: usize = 11;
const F_COUNT: usize = 12;
const F_NAMES: [&str; F_COUNT] = [
    "type", "symbol", "symbols", "seq", "ts", "bids", "asks", "changes", "trade_id", "price",
    "qty", "side",
];

/// The value of field `f` in `nodes`, at the position [`FeedDecoder::walk`] recorded (0: absent).
#[inline]
fn field_node<'i>(nodes: &[Node<'i>], at: &[usize; F_COUNT], f: usize) -> Option<Node<'i>> {
    match at[f] {
        0 => None,
        i => nodes.get(i).copied(),
    }
}

/// How many tape nodes the value starting with `n` takes, itself included.
#[inline]
fn node_len(n: &Node<'_>) -> usize {
    match *n {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

fn node_str<'i>(v: Option<Node<'i>>, name: &'static str) -> Result<&'i str, DecodeError> {
    match v {
        Some(Node::String(s)) => Ok(s),
        Some(_) => Err(DecodeError::BadField(name)),
        None => Err(DecodeError::MissingField(name)),
    }
}

fn node_u64(v: Option<Node<'_>>, name: &'static str) -> Result<u64, DecodeError> {
    match v {
        Some(Node::Static(n)) => n.as_u64().ok_or_else(|| DecodeError::BadField(name)),
        Some(_) => Err(DecodeError::BadField(name)),
        None => Err(DecodeError::MissingField(name)),
    }
}

/// [`parse_changes`] on the tape: `nodes` are the `len` elements of the `changes` array.
/// A change is an array of exactly three strings, so it is four nodes.
fn walk_changes(
    nodes: &[Node<'_>],
    len: usize,
    px_dec: u8,
    qty_dec: u8,
    out: &mut Vec<Change>,
) -> Result<(), DecodeError> {
    const NAME: &str = "changes";
    out.clear();
    let mut rest = nodes;
    for _ in 0..len {
        let [
            Node::Array { len: 3, count: 3 },
            Node::String(s),
            Node::String(px),
            Node::String(qty),
            ..,
        ] = *rest
        else {
            return Err(DecodeError::BadField(NAME));
        };
        rest = &rest[4..];
        out.push(Change {
            side: side(s, NAME)?,
            px: decimal(px, px_dec, NAME)?,
            qty: decimal(qty, qty_dec, NAME)?,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Book, DEPTH_COUNT, WindowDeltas};
    use crate::wire::{RecordHeader, RecordKind, try_encode_book};

    const SYMBOLS: &str = r#"{"type":"symbols","symbols":[{"symbol":"BTC-USD","px_decimals":2,"qty_decimals":6},{"symbol":"ETH-USD","px_decimals":3,"qty_decimals":4}]}"#;
    const SNAPSHOT: &str = r#"{"type":"snapshot","symbol":"BTC-USD","seq":1000,"ts":1763700000000000000,"bids":[["65000.10","1.500000"]],"asks":[["65000.20","0.250000"]]}"#;
    const UPDATE: &str = r#"{"type":"l2update","symbol":"BTC-USD","seq":1001,"ts":1763700000000100000,"changes":[["buy","65000.10","0.000000"],["sell","65000.30","2.000000"]]}"#;
    const TRADE: &str = r#"{"type":"trade","symbol":"BTC-USD","trade_id":42,"ts":1763700000000200000,"price":"65000.20","qty":"0.010000","side":"buy"}"#;

    fn lv(px: i64, qty: i64) -> Level {
        Level { px, qty }
    }

    fn ready() -> FeedDecoder {
        let mut d = FeedDecoder::new();
        d.decode(&mut SYMBOLS.as_bytes().to_vec()).unwrap();
        d
    }

    fn decode_err(d: &mut FeedDecoder, msg: &str) -> DecodeError {
        match d.decode(&mut msg.as_bytes().to_vec()) {
            Ok(ev) => panic!("expected an error for {msg}, got {ev:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn symbols_message() {
        let mut d = FeedDecoder::new();
        let ev = d.decode(&mut SYMBOLS.as_bytes().to_vec()).unwrap();
        let FeedEvent::Symbols(list) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            list,
            &[
                SymbolSpec {
                    symbol: "BTC-USD".into(),
                    px_decimals: 2,
                    qty_decimals: 6
                },
                SymbolSpec {
                    symbol: "ETH-USD".into(),
                    px_decimals: 3,
                    qty_decimals: 4
                },
            ]
        );
        assert_eq!(d.symbol_index("ETH-USD"), Some(1));
        assert_eq!(d.symbol_index("XRP-USD"), None);
        assert_eq!(d.symbol(1).map(|s| s.px_decimals), Some(3));
        assert_eq!(d.symbol(2), None);
    }

    #[test]
    fn later_symbols_are_appended_never_renumbered() {
        let mut d = ready();
        let msg = r#"{"type":"symbols","symbols":[{"symbol":"SOL-USD","px_decimals":4,"qty_decimals":2},{"symbol":"BTC-USD","px_decimals":2,"qty_decimals":6}]}"#;
        let ev = d.decode(&mut msg.as_bytes().to_vec()).unwrap();
        let FeedEvent::Symbols(list) = ev else {
            panic!("{ev:?}")
        };
        let names: Vec<&str> = list.iter().map(|s| s.symbol.as_str()).collect();
        assert_eq!(names, ["BTC-USD", "ETH-USD", "SOL-USD"]);
        assert_eq!(d.symbol_index("BTC-USD"), Some(0));
        assert_eq!(d.symbol_index("SOL-USD"), Some(2));
    }

    #[test]
    fn snapshot_message() {
        let mut d = ready();
        let ev = d.decode(&mut SNAPSHOT.as_bytes().to_vec()).unwrap();
        assert_eq!(
            ev,
            FeedEvent::Snapshot {
                sym: 0,
                seq: 1000,
                ts: 1_763_700_000_000_000_000,
                bids: &[lv(6_500_010, 1_500_000)],
                asks: &[lv(6_500_020, 250_000)],
            }
        );
        // Empty sides and another symbol's decimals.
        let msg = r#"{"asks":[],"bids":[["1.5","2"]],"type":"snapshot","symbol":"ETH-USD","seq":0,"ts":0}"#;
        let ev = d.decode(&mut msg.as_bytes().to_vec()).unwrap();
        assert_eq!(
            ev,
            FeedEvent::Snapshot {
                sym: 1,
                seq: 0,
                ts: 0,
                bids: &[lv(1_500, 20_000)],
                asks: &[],
            }
        );
    }

    #[test]
    fn update_message() {
        let mut d = ready();
        let ev = d.decode(&mut UPDATE.as_bytes().to_vec()).unwrap();
        assert_eq!(
            ev,
            FeedEvent::Update {
                sym: 0,
                seq: 1001,
                ts: 1_763_700_000_000_100_000,
                changes: &[
                    Change {
                        side: Side::Bid,
                        px: 6_500_010,
                        qty: 0
                    },
                    Change {
                        side: Side::Ask,
                        px: 6_500_030,
                        qty: 2_000_000
                    },
                ],
            }
        );
    }

    #[test]
    fn heartbeat_message() {
        let mut d = ready();
        let msg = r#"{"type":"heartbeat","symbol":"ETH-USD","seq":77,"ts":5}"#;
        let ev = d.decode(&mut msg.as_bytes().to_vec()).unwrap();
        assert_eq!(
            ev,
            FeedEvent::Heartbeat {
                sym: 1,
                seq: 77,
                ts: 5
            }
        );
        let no_seq = r#"{"type":"heartbeat","symbol":"ETH-USD","ts":5}"#;
        assert!(matches!(
            decode_err(&mut d, no_seq),
            DecodeError::MissingField("seq")
        ));
        let unknown = r#"{"type":"heartbeat","symbol":"NOPE","seq":1,"ts":5}"#;
        assert!(matches!(
            decode_err(&mut d, unknown),
            DecodeError::UnknownSymbol(_)
        ));
    }

    #[test]
    fn trade_message() {
        let mut d = ready();
        let ev = d.decode(&mut TRADE.as_bytes().to_vec()).unwrap();
        assert_eq!(
            ev,
            FeedEvent::Trade {
                sym: 0,
                ts: 1_763_700_000_000_200_000,
                trade: Trade {
                    px: 6_500_020,
                    qty: 10_000,
                    trade_id: 42,
                    taker_side: Side::Bid
                },
            }
        );
        let sell = TRADE.replace(r#""side":"buy""#, r#""side":"sell""#);
        let ev = d.decode(&mut sell.into_bytes()).unwrap();
        assert!(matches!(
            ev,
            FeedEvent::Trade {
                trade: Trade {
                    taker_side: Side::Ask,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn escaped_strings_and_unknown_fields() {
        let mut d = ready();
        let msg = r#"{"type":"trade","venue":{"x":[1,2]},"symbol":"BTC\u002dUSD","trade_id":1,"ts":5,"price":"1","qty":"2","side":"sell"}"#;
        let ev = d.decode(&mut msg.as_bytes().to_vec()).unwrap();
        assert!(matches!(ev, FeedEvent::Trade { sym: 0, ts: 5, .. }));
    }

    #[test]
    fn json_errors() {
        let mut d = ready();
        for msg in [
            "",
            "{",
            &SNAPSHOT[..SNAPSHOT.len() - 1],
            &UPDATE[..40],
            r#"{"type":"trade",}"#,
            "{\"type\":\"trade\"} x",
        ] {
            assert!(
                matches!(decode_err(&mut d, msg), DecodeError::Json(_)),
                "{msg}"
            );
        }
        assert!(matches!(
            decode_err(&mut d, "[1,2]"),
            DecodeError::NotAnObject
        ));
        assert!(matches!(
            decode_err(&mut d, "\"x\""),
            DecodeError::NotAnObject
        ));
        // The decoder stays usable after errors.
        assert!(d.decode(&mut TRADE.as_bytes().to_vec()).is_ok());
    }

    #[test]
    fn type_errors() {
        let mut d = ready();
        assert!(matches!(
            decode_err(&mut d, r#"{"symbol":"BTC-USD"}"#),
            DecodeError::MissingField("type")
        ));
        assert!(matches!(
            decode_err(&mut d, r#"{"type":7}"#),
            DecodeError::BadField("type")
        ));
        assert!(matches!(
            decode_err(&mut d, r#"{"type":"status"}"#),
            DecodeError::UnknownType
        ));
        assert!(matches!(
            decode_err(&mut d, r#"{"type":"trade","type":"trade"}"#),
            DecodeError::DuplicateField("type")
        ));
    }

    #[test]
    fn unknown_symbol() {
        let mut d = ready();
        for msg in [
            SNAPSHOT.replace("BTC-USD", "DOGE-USD"),
            UPDATE.replace("BTC-USD", "DOGE-USD"),
            TRADE.replace("BTC-USD", "DOGE-USD"),
        ] {
            match decode_err(&mut d, &msg) {
                DecodeError::UnknownSymbol(s) => assert_eq!(s, "DOGE-USD"),
                e => panic!("{e:?}"),
            }
        }
        // Before any symbols message every symbol is unknown.
        let mut fresh = FeedDecoder::new();
        assert!(matches!(
            decode_err(&mut fresh, UPDATE),
            DecodeError::UnknownSymbol(_)
        ));
    }

    #[test]
    fn wrong_field_types() {
        let mut d = ready();
        let cases: &[(String, &str)] = &[
            (UPDATE.replace("1001", "\"1001\""), "seq"),
            (UPDATE.replace("1001", "-1"), "seq"),
            (UPDATE.replace("1001", "1.5"), "seq"),
            (UPDATE.replace("1763700000000100000", "null"), "ts"),
            (SNAPSHOT.replace("\"BTC-USD\"", "1"), "symbol"),
            (
                SNAPSHOT.replace(r#"[["65000.10","1.500000"]]"#, "{}"),
                "bids",
            ),
            (
                SNAPSHOT.replace(r#"[["65000.20","0.250000"]]"#, r#"[["65000.20"]]"#),
                "asks",
            ),
            (
                SNAPSHOT.replace(r#"[["65000.10","1.500000"]]"#, r#"[["1","2","3"]]"#),
                "bids",
            ),
            (
                SNAPSHOT.replace(r#"[["65000.10","1.500000"]]"#, r#"[[1,2]]"#),
                "bids",
            ),
            (
                SNAPSHOT.replace(r#"[["65000.10","1.500000"]]"#, "[5]"),
                "bids",
            ),
            (UPDATE.replace("\"buy\"", "\"bid\""), "changes"),
            (
                UPDATE.replace(r#"["buy","65000.10","0.000000"]"#, r#"["buy","65000.10"]"#),
                "changes",
            ),
            (
                UPDATE.replace(r#""changes":["#, r#""changes":[7,"#),
                "changes",
            ),
            (TRADE.replace("42", "\"42\""), "trade_id"),
            (TRADE.replace("\"buy\"", "true"), "side"),
            (TRADE.replace("\"buy\"", "\"BUY\""), "side"),
            (TRADE.replace("\"65000.20\"", "65000.2"), "price"),
        ];
        for (msg, field) in cases {
            match decode_err(&mut d, msg) {
                DecodeError::BadField(f) => assert_eq!(f, *field, "{msg}"),
                e => panic!("{msg}: {e:?}"),
            }
        }
    }

    #[test]
    fn missing_fields() {
        let mut d = ready();
        let cases: &[(String, &str)] = &[
            (UPDATE.replace(r#""seq":1001,"#, ""), "seq"),
            (UPDATE.replace(r#""symbol":"BTC-USD","#, ""), "symbol"),
            (
                SNAPSHOT.replace(r#","asks":[["65000.20","0.250000"]]"#, ""),
                "asks",
            ),
            (TRADE.replace(r#""price":"65000.20","#, ""), "price"),
            (TRADE.replace(r#""trade_id":42,"#, ""), "trade_id"),
            (r#"{"type":"symbols"}"#.to_owned(), "symbols"),
            (
                r#"{"type":"symbols","symbols":[{"symbol":"X","px_decimals":2}]}"#.to_owned(),
                "qty_decimals",
            ),
        ];
        for (msg, field) in cases {
            match decode_err(&mut d, msg) {
                DecodeError::MissingField(f) => assert_eq!(f, *field, "{msg}"),
                e => panic!("{msg}: {e:?}"),
            }
        }
    }

    #[test]
    fn bad_decimals() {
        let mut d = ready();
        let cases: &[(String, &str, DecimalError)] = &[
            (
                SNAPSHOT.replace("65000.10", "65000.101"),
                "bids",
                DecimalError::Precision,
            ),
            (
                SNAPSHOT.replace("0.250000", "0,25"),
                "asks",
                DecimalError::Syntax,
            ),
            (
                UPDATE.replace("2.000000", "99999999999999.0"),
                "changes",
                DecimalError::Overflow,
            ),
            (
                UPDATE.replace("65000.30", ""),
                "changes",
                DecimalError::Empty,
            ),
            (
                TRADE.replace("65000.20", "1e5"),
                "price",
                DecimalError::Syntax,
            ),
            (TRADE.replace("0.010000", "-"), "qty", DecimalError::Empty),
        ];
        for (msg, field, err) in cases {
            match decode_err(&mut d, msg) {
                DecodeError::Decimal { field: f, source } => {
                    assert_eq!((f, source), (*field, *err), "{msg}");
                }
                e => panic!("{msg}: {e:?}"),
            }
        }
    }

    #[test]
    fn bad_symbols_messages_change_nothing() {
        let mut d = ready();
        let entry = |name: &str, px: &str, qty: &str| {
            format!(r#"{{"symbol":{name},"px_decimals":{px},"qty_decimals":{qty}}}"#)
        };
        let msg = |entries: &[String]| {
            format!(r#"{{"type":"symbols","symbols":[{}]}}"#, entries.join(","))
        };
        let ok = entry("\"NEW-1\"", "2", "2");
        let long = format!("\"{}\"", "X".repeat(MAX_SYMBOL_LEN + 1));
        let cases: Vec<(String, &str)> = vec![
            (
                msg(&[ok.clone(), entry("\"NEW-2\"", "19", "2")]),
                "px_decimals",
            ),
            (
                msg(&[ok.clone(), entry("\"NEW-2\"", "2", "256")]),
                "qty_decimals",
            ),
            (
                msg(&[ok.clone(), entry("\"NEW-2\"", "-1", "2")]),
                "px_decimals",
            ),
            (msg(&[ok.clone(), entry("\"\"", "2", "2")]), "symbol"),
            (msg(&[ok.clone(), entry(&long, "2", "2")]), "symbol"),
            (msg(&[ok.clone(), entry("null", "2", "2")]), "symbol"),
            (msg(&[ok.clone(), "[]".to_owned()]), "symbols"),
            (r#"{"type":"symbols","symbols":{}}"#.to_owned(), "symbols"),
        ];
        for (m, field) in &cases {
            match decode_err(&mut d, m) {
                DecodeError::BadField(f) => assert_eq!(f, *field, "{m}"),
                e => panic!("{m}: {e:?}"),
            }
            assert_eq!(d.symbols().len(), 2, "{m}");
            assert_eq!(d.symbol_index("NEW-1"), None, "{m}");
        }

        // A known symbol re-announced with other decimals, or a new one twice with different ones.
        let changed = msg(&[ok.clone(), entry("\"BTC-USD\"", "3", "6")]);
        assert!(
            matches!(decode_err(&mut d, &changed), DecodeError::SymbolChanged(s) if s == "BTC-USD")
        );
        let twice = msg(&[ok.clone(), entry("\"NEW-1\"", "3", "2")]);
        assert!(
            matches!(decode_err(&mut d, &twice), DecodeError::SymbolChanged(s) if s == "NEW-1")
        );
        let dup = r#"{"type":"symbols","symbols":[{"symbol":"A","symbol":"B","px_decimals":1,"qty_decimals":1}]}"#;
        assert!(matches!(
            decode_err(&mut d, dup),
            DecodeError::DuplicateField("symbol")
        ));
        assert_eq!(d.symbols().len(), 2);
        assert_eq!(d.symbol_index("NEW-1"), None);

        // The same new symbol twice with equal decimals is fine and added once.
        d.decode(&mut msg(&[ok.clone(), ok]).into_bytes()).unwrap();
        assert_eq!(d.symbols().len(), 3);
    }

    #[test]
    fn symbol_bound() {
        let mut d = FeedDecoder::with_max_symbols(2);
        let three = r#"{"type":"symbols","symbols":[{"symbol":"A","px_decimals":1,"qty_decimals":1},{"symbol":"B","px_decimals":1,"qty_decimals":1},{"symbol":"C","px_decimals":1,"qty_decimals":1}]}"#;
        assert!(matches!(
            decode_err(&mut d, three),
            DecodeError::TooManySymbols
        ));
        assert!(d.symbols().is_empty());
        assert_eq!(d.symbol_index("A"), None);
        d.decode(&mut SYMBOLS.as_bytes().to_vec()).unwrap();
        assert_eq!(d.symbols().len(), 2);
    }

    #[test]
    fn decode_text_checks_utf8_only_off_the_scanner_path() {
        let mut d = ready();
        // The scanner's path: the feed's own form.
        assert!(matches!(
            d.decode_text(&mut UPDATE.as_bytes().to_vec()),
            Ok(FeedEvent::Update { seq: 1001, .. })
        ));
        // simd-json's path (a space before a colon): decoded.
        let odd = UPDATE.replace("\"seq\":", "\"seq\" :");
        assert!(d.decode_text(&mut odd.into_bytes()).is_ok());
        // Not UTF-8: refused as such (a protocol error), not counted as malformed JSON.
        let mut bad = UPDATE.as_bytes().to_vec();
        bad.extend_from_slice(b" \xff");
        assert!(matches!(d.decode_text(&mut bad), Err(None)));
        // Malformed but UTF-8: simd-json's error.
        assert!(matches!(
            d.decode_text(&mut b"{\"type\":".to_vec()),
            Err(Some(_))
        ));
    }

    #[test]
    fn scratch_is_reused_across_messages() {
        let mut d = ready();
        d.decode(&mut SNAPSHOT.as_bytes().to_vec()).unwrap();
        d.decode(&mut UPDATE.as_bytes().to_vec()).unwrap();
        let escaped_update = UPDATE.replace("\"seq\"", "\"s\\u0065q\"");
        d.decode(&mut escaped_update.as_bytes().to_vec()).unwrap();
        let (tape_cap, changes_ptr) = (d.tape.0.capacity(), d.changes.as_ptr());
        assert!(tape_cap > 0);
        for _ in 0..100 {
            d.decode(&mut UPDATE.as_bytes().to_vec()).unwrap();
            d.decode(&mut escaped_update.as_bytes().to_vec()).unwrap();
            d.decode(&mut TRADE.as_bytes().to_vec()).unwrap();
        }
        assert_eq!(d.tape.0.capacity(), tape_cap);
        assert_eq!(d.changes.as_ptr(), changes_ptr);
        assert!(d.tape.0.is_empty());
    }

    /// Deterministic xorshift, so the throughput run is reproducible without extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Decode + apply + encode throughput over synthetic l2updates (8 symbols, 200 levels per
    /// side, 1-4 changes per update, binary records for every depth that changed). No timing in
    /// code: run `TICKCAST_THROUGHPUT_ROUNDS=N cargo test --release -p tickcast --lib
    /// feed::decode::tests::throughput -- --ignored --nocapture` for two values of N and divide
    /// the extra updates by the extra wall time libtest reports.
    #[test]
    #[ignore = "throughput run; measure in release"]
    fn throughput() {
        const SYMS: usize = 8;
        const MSGS: usize = 100_000;
        // Rounds over the same updates; difference two runs to cancel the generation cost.
        let rounds: usize = std::env::var("TICKCAST_THROUGHPUT_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        let mut syms = String::from(r#"{"type":"symbols","symbols":["#);
        for s in 0..SYMS {
            if s > 0 {
                syms.push(',');
            }
            syms.push_str(&format!(
                r#"{{"symbol":"SYM-{s}","px_decimals":2,"qty_decimals":6}}"#
            ));
        }
        syms.push_str("]}");
        msgs.push(syms.into_bytes());
        let mid = 6_500_000i64;
        for s in 0..SYMS {
            let lvls = |f: &dyn Fn(i64) -> i64| {
                (1..=200)
                    .map(|i| format!(r#"["{}.{:02}","1.000000"]"#, f(i) / 100, f(i) % 100))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            msgs.push(
                format!(
                    r#"{{"type":"snapshot","symbol":"SYM-{s}","seq":1,"ts":1,"bids":[{}],"asks":[{}]}}"#,
                    lvls(&|i| mid - i),
                    lvls(&|i| mid + i)
                )
                .into_bytes(),
            );
        }
        let first_update = msgs.len();
        for n in 0..MSGS {
            let s = rng.below(SYMS as u64);
            let k = 1 + rng.below(4);
            let mut changes = Vec::new();
            for _ in 0..k {
                let bid = rng.below(2) == 0;
                let off = 1 + rng.below(250) as i64;
                let px = if bid { mid - off } else { mid + off };
                let qty = if rng.below(4) == 0 {
                    0
                } else {
                    rng.below(5_000_000)
                };
                changes.push(format!(
                    r#"["{}","{}.{:02}","{}.{:06}"]"#,
                    if bid { "buy" } else { "sell" },
                    px / 100,
                    px % 100,
                    qty / 1_000_000,
                    qty % 1_000_000
                ));
            }
            msgs.push(
                format!(
                    r#"{{"type":"l2update","symbol":"SYM-{s}","seq":{},"ts":1763700000000000000,"changes":[{}]}}"#,
                    n + 2,
                    changes.join(",")
                )
                .into_bytes(),
            );
        }

        let mut dec = FeedDecoder::new();
        let mut books = vec![Book::new(); SYMS];
        let mut w = WindowDeltas::new();
        let mut out = bytes::BytesMut::with_capacity(1 << 16);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let (mut updates, mut records, mut bytes_out) = (0u64, 0u64, 0u64);
        for round in 0..rounds {
            let start = if round == 0 { 0 } else { first_update };
            for m in &msgs[start..] {
                buf.clear();
                buf.extend_from_slice(m);
                match dec.decode(&mut buf).unwrap() {
                    FeedEvent::Symbols(_)
                    | FeedEvent::Trade { .. }
                    | FeedEvent::Heartbeat { .. } => {}
                    FeedEvent::Snapshot {
                        sym, bids, asks, ..
                    } => books[sym as usize].load_snapshot(bids, asks).unwrap(),
                    FeedEvent::Update {
                        sym,
                        seq,
                        ts,
                        changes,
                    } => {
                        updates += 1;
                        let book = &mut books[sym as usize];
                        w.clear();
                        for c in changes {
                            book.apply(c.side, c.px, c.qty, &mut w).unwrap();
                        }
                        w.finish();
                        for di in 0..DEPTH_COUNT {
                            if w.is_empty(di) {
                                continue;
                            }
                            let hdr = RecordHeader {
                                kind: RecordKind::Delta,
                                flags: 0,
                                sid: sym,
                                seq,
                                exch_ts: ts,
                                recv_ts: ts,
                            };
                            try_encode_book(&mut out, &hdr, w.bids(di), w.asks(di)).unwrap();
                            records += 1;
                        }
                        if out.len() > 1 << 15 {
                            bytes_out += out.len() as u64;
                            out.clear();
                        }
                    }
                }
            }
        }
        bytes_out += out.len() as u64;
        println!("throughput: {updates} updates, {records} records, {bytes_out} bytes encoded");
        assert_eq!(updates, (MSGS * rounds) as u64);
        assert!(records >= updates);
    }

    // ---- the same outcome whichever way a message is decoded ----

    const HEARTBEAT: &str = r#"{"type":"heartbeat","symbol":"ETH-USD","seq":7,"ts":9}"#;

    /// Decodes `msg` with `decode` (in place), with `decode_bytes` (on a copy) and with the
    /// `Value`-based reference interpreter, and requires the same outcome: the same event, or
    /// errors with the same message.
    fn same_outcome(msg: &[u8]) -> Result<String, String> {
        let (mut owned, mut borrowed, mut reference) = (ready(), ready(), ready());
        let a = owned
            .decode(&mut msg.to_vec())
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string());
        let b = reference
            .decode_reference(&mut msg.to_vec())
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string());
        assert_eq!(a, b, "{}", String::from_utf8_lossy(msg));
        let c = borrowed
            .decode_bytes(msg)
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string());
        assert_eq!(a, c, "{}", String::from_utf8_lossy(msg));
        let simd = reference
            .decode_simd(msg)
            .map(|e| format!("{e:?}"))
            .map_err(|e| e.to_string());
        assert_eq!(a, simd, "{}", String::from_utf8_lossy(msg));
        // Whatever the scanner decides, simd-json decides alike.
        if let Some(scanned) = borrowed.decode_scan(msg).map(|e| format!("{e:?}")) {
            assert_eq!(Ok(scanned), simd, "{}", String::from_utf8_lossy(msg));
        }
        a
    }

    /// Whether the scanner alone decodes `msg` (after [`SYMBOLS`]).
    fn scanned(msg: &str) -> bool {
        ready().decode_scan(msg.as_bytes()).is_some()
    }

    /// The feed's own messages, as feed-sim sends them, all take the scanner, with the values
    /// simd-json reads.
    #[test]
    fn scanner_takes_the_feeds_messages() {
        for msg in [UPDATE, TRADE, HEARTBEAT] {
            assert!(scanned(msg), "{msg}");
            assert!(same_outcome(msg.as_bytes()).is_ok());
        }
        let mut ex = feed_sim::Exchange::new(12, 40, 3);
        let mut setup = Vec::new();
        ex.symbols_json(&mut setup);
        let (mut fast, mut slow) = (FeedDecoder::new(), FeedDecoder::new());
        fast.decode_bytes(setup.strip_suffix(b"\n").unwrap())
            .unwrap();
        slow.decode_simd(setup.strip_suffix(b"\n").unwrap())
            .unwrap();
        let mut live = Vec::new();
        for i in 0..3_000u64 {
            ex.step(1_763_700_000_000_000_000 + i * 1_000, &mut live);
            if i % 500 == 0 {
                ex.heartbeat_json((i % 12) as usize, 1_763_700_000_000_000_000 + i, &mut live);
            }
        }
        let (mut updates, mut trades, mut heartbeats) = (0, 0, 0);
        for msg in live.split(|&b| b == b'\n').filter(|m| !m.is_empty()) {
            let want = format!("{:?}", slow.decode_simd(msg).unwrap());
            let got = fast.decode_scan(msg).map(|e| {
                match e {
                    FeedEvent::Update { .. } => updates += 1,
                    FeedEvent::Trade { .. } => trades += 1,
                    FeedEvent::Heartbeat { .. } => heartbeats += 1,
                    _ => {}
                }
                format!("{e:?}")
            });
            assert_eq!(
                got.as_ref(),
                Some(&want),
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
        assert_eq!(updates, 3_000);
        assert!(trades > 0 && heartbeats == 6, "{trades} {heartbeats}");
    }

    /// Anything but the exact templates is left to simd-json (and decided alike).
    #[test]
    fn scanner_declines_the_unusual() {
        let declined: Vec<String> = vec![
            format!("{UPDATE}\n"),
            format!(" {UPDATE}"),
            UPDATE.replace(",\"seq\"", ", \"seq\""),
            UPDATE.replace("\"seq\":", "\"seq\" :"),
            UPDATE.replace("[[", "[ ["),
            UPDATE.replace("{\"type\":\"l2update\",", "{\"type\":\"l2update\",\"x\":1,"),
            UPDATE.replace(",\"changes\"", ",\"venue\":\"x\",\"changes\""),
            format!("{}{}", &UPDATE[..UPDATE.len() - 1], ",\"x\":1}"),
            // Other orders of the same fields.
            r#"{"symbol":"BTC-USD","type":"l2update","seq":1,"ts":2,"changes":[]}"#.into(),
            r#"{"type":"l2update","symbol":"BTC-USD","ts":2,"seq":1,"changes":[]}"#.into(),
            r#"{"type":"heartbeat","symbol":"BTC-USD","ts":2,"seq":1}"#.into(),
            // Repeated fields.
            UPDATE.replace(",\"ts\"", ",\"seq\":5,\"ts\""),
            HEARTBEAT.replace("}", ",\"ts\":9}"),
            // Escapes and non-ASCII bytes.
            UPDATE.replace("BTC-USD", "BTC\\u002dUSD"),
            UPDATE.replace("\"buy\"", "\"b\\u0075y\""),
            UPDATE.replace("65000.10", "6500\\u0030.10"),
            UPDATE.replace("l2update", "l2upd\\u0061te"),
            UPDATE.replace("BTC-USD", "BTC-USDé"),
            // Numbers that are not plain unsigned integers.
            UPDATE.replace("1001", "1001.0"),
            UPDATE.replace("1001", "1e3"),
            UPDATE.replace("1001", "1E3"),
            UPDATE.replace("1001", "-1"),
            UPDATE.replace("1001", "01"),
            UPDATE.replace("1001", "00"),
            UPDATE.replace("1001", "\"1001\""),
            UPDATE.replace("1001", "9223372036854775808"),
            UPDATE.replace("1001", "18446744073709551615"),
            UPDATE.replace("1001", "100000000000000000000"),
            UPDATE.replace("1763700000000100000", ""),
            // Decimals the scanner is not sure of, valid or not.
            UPDATE.replace("65000.10", "6.5e4"),
            UPDATE.replace("65000.10", "65000.1x"),
            UPDATE.replace("65000.10", "65000.123"),
            UPDATE.replace("65000.10", ""),
            UPDATE.replace("65000.10", "-"),
            UPDATE.replace("65000.10", "1."),
            UPDATE.replace("65000.10", ".5"),
            UPDATE.replace("65000.10", "+5"),
            UPDATE.replace("65000.10", "--5"),
            UPDATE.replace("65000.10", "99999999999999999999"),
            UPDATE.replace("2.000000", "9223372036854.775808"),
            UPDATE.replace("\"65000.10\"", "65000.10"),
            // Structure, types, symbols.
            UPDATE.replace("\"buy\"", "\"bid\""),
            UPDATE.replace("\"buy\"", "\"BUY\""),
            UPDATE.replace("BTC-USD", "XRP-USD"),
            UPDATE.replace(",\"2.000000\"]", "]"),
            UPDATE.replace(",\"2.000000\"]", ",\"2\",\"3\"]"),
            UPDATE.replace("]]}", "],]}"),
            UPDATE.replace("]]}", "]],}"),
            UPDATE[..UPDATE.len() - 1].to_owned(),
            format!("{UPDATE}{{}}"),
            format!("{UPDATE}x"),
            TRADE.replace("\"side\":\"buy\"", "\"side\":1"),
            TRADE.replace(",\"trade_id\":42", ""),
            r#"{"type":"l3update","symbol":"BTC-USD","seq":1,"ts":2,"changes":[]}"#.into(),
            SNAPSHOT.into(),
            SYMBOLS.into(),
        ];
        for msg in &declined {
            assert!(!scanned(msg), "the scanner took {msg}");
            let _ = same_outcome(msg.as_bytes());
        }
        // Edge values it does take.
        let taken: Vec<String> = vec![
            UPDATE.replace("1001", "0"),
            UPDATE.replace("1001", "9223372036854775807"),
            r#"{"type":"l2update","symbol":"BTC-USD","seq":1,"ts":2,"changes":[]}"#.into(),
            UPDATE.replace("65000.10", "-0.5"),
            UPDATE.replace("65000.10", "0065000"),
            UPDATE.replace("65000.10", "-92233720368547758.08"),
            UPDATE.replace("2.000000", "9223372036854.775807"),
            UPDATE.replace("65000.10", "65000.100"),
            UPDATE.replace("65000.10", "-0"),
        ];
        for msg in &taken {
            assert!(scanned(msg), "the scanner declined {msg}");
            assert!(same_outcome(msg.as_bytes()).is_ok(), "{msg}");
        }
    }

    /// The hot messages in any valid form: whitespace, key order, unknown keys of every JSON
    /// type, unused known keys, extreme decimals and integers.
    #[test]
    fn hot_messages_decode_in_any_form() {
        let ws = "{ \"type\" :\t\"l2update\" ,\r\n \"symbol\":\"BTC-USD\", \"seq\": 1001 ,\"ts\":1763700000000100000,\n\"changes\" : [ [ \"buy\" , \"65000.10\" , \"0.000000\" ] ,[\"sell\",\"65000.30\",\"2.000000\"] ] }\n";
        let reordered = r#"{"symbol":"ETH-USD","changes":[["sell","65000.30","2"]],"ts":5,"seq":9,"type":"l2update"}"#;
        let unknown = r#"{"type":"l2update","x":null,"y":[true,false,{"a":[-0.5,1,{}],"b":[]}],"z":-12,"w":"v","symbol":"BTC-USD","seq":1,"ts":2,"changes":[]}"#;
        let unused_known = r#"{"type":"trade","bids":[1],"asks":{"a":1},"symbol":"BTC-USD","changes":[["buy","1","2"]],"seq":"x","trade_id":0,"ts":5,"price":"-1.5","qty":"2","side":"sell"}"#;
        let decimals = r#"{"type":"l2update","symbol":"BTC-USD","seq":1,"ts":2,"changes":[["buy","-0.5","7"],["sell","0065000","12.000001"],["buy","-92233720368547758.08","9223372036854.775807"]]}"#;
        let big = r#"{"type":"heartbeat","symbol":"BTC-USD","seq":9223372036854775807,"ts":0}"#;
        for msg in [
            UPDATE,
            TRADE,
            HEARTBEAT,
            ws,
            reordered,
            unknown,
            unused_known,
            big,
            decimals,
        ] {
            let out = same_outcome(msg.as_bytes());
            assert!(out.is_ok(), "{msg}: {out:?}");
        }
    }

    /// Unusual valid messages and wrong ones: decided alike in place, on a copy and by the
    /// `Value`-based reference.
    #[test]
    fn unusual_and_wrong_messages() {
        let cases: Vec<String> = vec![
            // The changes before the symbol: valid.
            r#"{"changes":[["sell","65000.30","2"]],"ts":5,"seq":9,"symbol":"ETH-USD","type":"l2update"}"#.into(),
            // Escapes and non-ASCII text: valid.
            r#"{"type":"trade","symbol":"BTC\u002dUSD","trade_id":1,"ts":5,"price":"1","qty":"2","side":"sell"}"#.into(),
            UPDATE.replace("\"seq\"", "\"s\\u0065q\""),
            UPDATE.replace("\"buy\"", "\"b\\u0075y\""),
            UPDATE.replace("65000.10", "6500\\u0030.10"),
            r#"{"type":"l2update","note":"é","symbol":"BTC-USD","seq":1,"ts":2,"changes":[]}"#.into(),
            r#"{"type":"l2update","noté":1,"symbol":"BTC-USD","seq":1,"ts":2,"changes":[]}"#.into(),
            // Unusual numbers, valid or not.
            UPDATE.replace("1001", "1001.0"),
            UPDATE.replace("1001", "1e3"),
            UPDATE.replace("1001", "-1"),
            UPDATE.replace("1001", "01"),
            UPDATE.replace("1001", "9223372036854775808"),
            UPDATE.replace("1001", "18446744073709551615"),
            UPDATE.replace("1001", "18446744073709551616"),
            UPDATE.replace("1001", "100000000000000000000"),
            UPDATE.replace("1001", "\"1001\""),
            UPDATE.replace("\"seq\"", "\"x\":1e5,\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":01,\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":-,\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":1.,\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":.5,\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":1234567890123456789012,\"seq\""),
            // Bad decimals.
            UPDATE.replace("65000.10", "65000.1x"),
            UPDATE.replace("65000.10", "65000.123"),
            UPDATE.replace("65000.10", ""),
            UPDATE.replace("65000.10", "99999999999999999999"),
            TRADE.replace("0.010000", "0.0100001"),
            UPDATE.replace("65000.10", "-92233720368547758.09"),
            UPDATE.replace("65000.10", "-"),
            UPDATE.replace("65000.10", "1."),
            UPDATE.replace("65000.10", ".5"),
            UPDATE.replace("65000.10", "--5"),
            UPDATE.replace("65000.10", "1e5"),
            UPDATE.replace("65000.10", "+5"),
            UPDATE.replace("65000.10", " 5"),
            UPDATE.replace("2.000000", "9223372036854.775808"),
            // Structure and types.
            UPDATE.replace("\"sell\",", "\"hold\","),
            UPDATE.replace(",\"2.000000\"]", "]"),
            UPDATE.replace(",\"2.000000\"]", ",\"2\",\"3\"]"),
            UPDATE.replace("[[", "[{\"a\":1},["),
            UPDATE.replace("[[", "[5,["),
            UPDATE.replace("]]}", "],[]]}"),
            UPDATE.replace("\"65000.10\"", "[\"65000.10\"]"),
            UPDATE.replace("\"65000.10\"", "{\"a\":[1,2]}"),
            UPDATE.replace("\"0.000000\"", "0"),
            UPDATE.replace("\"changes\":[", "\"changes\":[[\"buy\",[[1]],{}],"),
            UPDATE.replace("\"type\":\"l2update\",", "\"type\":\"l2update\",\"type\":\"trade\","),
            UPDATE.replace("\"type\":\"l2update\",", "\"type\":7,"),
            TRADE.replace("\"price\"", "\"x\":{\"price\":1},\"price\""),
            TRADE.replace("\"price\":\"65000.20\",", ""),
            HEARTBEAT.replace("7", "-7"),
            HEARTBEAT.replace("7", "7.0"),
            UPDATE.replace("\"changes\"", "\"changes\":[],\"changes\""),
            UPDATE.replace("\"symbol\":\"BTC-USD\"", "\"symbol\":\"XRP-USD\""),
            UPDATE.replace("\"symbol\":\"BTC-USD\",", ""),
            UPDATE.replace("\"type\":\"l2update\",", ""),
            UPDATE.replace("l2update", "l3update"),
            UPDATE.replace("\"ts\":1763700000000100000,", "\"ts\":null,"),
            UPDATE.replace("\"changes\":[", "\"changes\":{\"a\":["),
            TRADE.replace("\"side\":\"buy\"", "\"side\":1"),
            TRADE.replace("\"trade_id\":42,", ""),
            HEARTBEAT.replace("\"seq\":7,", ""),
            format!("{UPDATE} x"),
            format!("{UPDATE}{{}}"),
            format!("[{UPDATE}]"),
            UPDATE[..UPDATE.len() - 1].to_owned(),
            UPDATE.replace("]]}", "]],}"),
            UPDATE.replace("]]}", "],]}"),
            UPDATE.replace("\"seq\"", "\"x\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]],\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":tru,\"seq\""),
            UPDATE.replace("\"seq\"", "\"x\":\"a\tb\",\"seq\""),
            "{}".into(),
            " ".into(),
            SNAPSHOT.into(),
            SYMBOLS.into(),
        ];
        for msg in &cases {
            let _ = same_outcome(msg.as_bytes());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Random edits of hot messages (bytes replaced, inserted or removed, often JSON
        /// punctuation): never a panic, the same outcome in place, on a copy and by the reference.
        #[test]
        fn mutations_decide_alike(
            base in 0usize..4,
            edits in proptest::collection::vec((0usize..512, 0u8..4, 0usize..24), 1..4),
        ) {
            const ALPHABET: &[u8] = b"{}[]:,\" \\-.0123456789eE\t";
            let mut msg = [UPDATE, TRADE, HEARTBEAT, r#"{"type":"l2update","symbol":"ETH-USD","seq":5,"ts":6,"changes":[["buy","1.5","0"]],"x":[1,{"y":null}]}"#][base]
                .as_bytes()
                .to_vec();
            for (pos, op, ch) in edits {
                let pos = pos % (msg.len() + 1);
                let b = ALPHABET[ch % ALPHABET.len()];
                match op {
                    0 if pos < msg.len() => msg[pos] = b,
                    1 => msg.insert(pos, b),
                    2 if pos < msg.len() => {
                        msg.remove(pos);
                    }
                    _ => msg.insert(pos, b' '),
                }
            }
            let _ = same_outcome(&msg);
        }

        /// Hot messages in the scanner's templates, with values drawn from the edges (integers
        /// near the bounds, decimals of every length and sign, other sides, unknown symbols),
        /// sometimes with one byte changed: the scanner and simd-json decide alike.
        #[test]
        fn templates_decide_alike(
            kind in 0usize..3,
            sym in 0usize..3,
            nums in proptest::collection::vec(num(), 2),
            decs in proptest::collection::vec(dec(), 0..8),
            sides in proptest::collection::vec(0usize..3, 4),
            edit in proptest::option::of((0usize..512, 0u8..=255)),
        ) {
            let sym = ["BTC-USD", "ETH-USD", "DOGE-USD"][sym];
            let side = |i: usize| ["buy", "sell", "hold"][sides[i % sides.len()]];
            let mut msg = match kind {
                0 => {
                    let changes: Vec<String> = decs
                        .chunks_exact(2)
                        .enumerate()
                        .map(|(i, d)| format!(r#"["{}","{}","{}"]"#, side(i), d[0], d[1]))
                        .collect();
                    format!(
                        r#"{{"type":"l2update","symbol":"{sym}","seq":{},"ts":{},"changes":[{}]}}"#,
                        nums[0], nums[1], changes.join(",")
                    )
                }
                1 => {
                    let d = |i: usize| decs.get(i).map_or("1", String::as_str);
                    format!(
                        r#"{{"type":"trade","symbol":"{sym}","trade_id":{},"ts":{},"price":"{}","qty":"{}","side":"{}"}}"#,
                        nums[0], nums[1], d(0), d(1), side(0)
                    )
                }
                _ => format!(
                    r#"{{"type":"heartbeat","symbol":"{sym}","seq":{},"ts":{}}}"#,
                    nums[0], nums[1]
                ),
            }
            .into_bytes();
            if let Some((pos, b)) = edit {
                let pos = pos % msg.len();
                msg[pos] = b;
            }
            let _ = same_outcome(&msg);
        }
    }

    /// Integer texts near the edges of what the scanner and simd-json read.
    fn num() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..1000).prop_map(|n| n.to_string()),
            (0u64..64).prop_map(|k| (i64::MAX as u64 - 32 + k).to_string()),
            (0u64..40).prop_map(|k| (u64::MAX - 20 + k.min(20)).to_string()),
            "-?0[0-9]{0,3}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            "[0-9]{18,21}",
        ]
    }

    /// Decimal texts: usual ones, long ones, and odd ones.
    fn dec() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "-?[0-9]{1,6}(\\.[0-9]{1,6})?",
            "-?[0-9]{10,20}(\\.[0-9]{0,8})?",
            "-?0*[0-9]{0,3}\\.?[0-9]{0,12}",
            "[-+.eE0-9]{0,6}",
        ]
    }
}
