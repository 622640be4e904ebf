//! The deterministic, sans-IO exchange core: books, order flow and message formatting.
//!
//! [`Exchange`] owns every symbol's book and one ChaCha random stream. It reads no clock and
//! touches no socket: the caller passes the timestamp of each event. Two exchanges built with
//! the same `(symbols, depth, seed)` and stepped the same number of times produce byte-identical
//! messages when handed the same timestamps.
//!
//! # Output framing
//!
//! Every `*_json` writer and [`Exchange::step`] append complete messages to a caller-owned
//! `Vec<u8>`: each message is one single-line JSON object followed by one `\n` byte (the JSON
//! itself never contains a raw newline). [`Exchange::step`] appends zero or more `trade`
//! messages (one per fill, in fill order) followed by exactly one `l2update` that applies the
//! fills and any other changes; a consumer that splits on `\n` gets one WebSocket text frame per
//! message.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::book::{Level, SideBook};
use crate::symbols::{SymbolSpec, universe};
use crate::wire::{write_decimal_str, write_levels, write_plain_str, write_u64};

/// Side of a book level or of a trade's taker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Bids; for a trade, the taker bought (lifted the asks).
    Buy,
    /// Asks; for a trade, the taker sold (hit the bids).
    Sell,
}

impl Side {
    /// Wire spelling: `"buy"` or `"sell"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }

    /// The other side.
    pub fn opposite(self) -> Self {
        match self {
            Self::Buy => Self::Sell,
            Self::Sell => Self::Buy,
        }
    }
}

/// What one [`Exchange::step`] produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepInfo {
    /// Index of the symbol that changed (into [`Exchange::symbols`]).
    pub symbol_index: usize,
    /// Messages appended (`trades + updates`).
    pub messages: usize,
    /// `l2update` messages appended: 1, or 0 for an exchange without symbols.
    pub updates: usize,
    /// `trade` messages appended.
    pub trades: usize,
    /// Level changes carried by the `l2update` (1..=4).
    pub changes: usize,
}

/// Most changes one `l2update` carries.
pub const MAX_CHANGES: usize = 4;

/// Share of updates that are trades (a taker crossing the spread).
const P_TRADE: f64 = 0.08;
/// Share of actions that steer a side's depth back to the target (far end add/remove).
const P_MAINTAIN: f64 = 0.10;
/// Share of actions that add a level (after maintenance).
const P_ADD: f64 = 0.25;
/// Share of actions that remove a level (after adds); the rest change a quantity.
const P_REMOVE: f64 = 0.20;
/// Most of the flow lands within this many levels of the touch.
const HOT_LEVELS: usize = 40;
/// Zipf exponent of symbol popularity (symbol 0 busiest).
const ZIPF_S: f64 = 1.0;
/// Typical notional of a resting level, in quote currency units.
const LEVEL_NOTIONAL: f64 = 20_000.0;

/// One level change inside an update: the quantity after the change (0 removes the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    side: Side,
    px: i64,
    qty: i64,
}

/// One fill of a taker against a resting level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fill {
    px: i64,
    qty: i64,
}

/// Per-symbol book and counters.
#[derive(Debug, Clone)]
struct SymState {
    bids: SideBook,
    asks: SideBook,
    /// Seq of the last update applied (the seq a snapshot carries).
    seq: u64,
    /// Id the next trade gets.
    next_trade_id: u64,
    /// Reference price (scaled) the mid is pulled back to.
    ref_px: i64,
    /// Typical resting quantity (scaled).
    typical_qty: i64,
    /// Tick size (scaled), >= 1.
    tick: i64,
}

/// Depth targets shared by every symbol.
#[derive(Debug, Clone, Copy)]
struct DepthParams {
    target: usize,
    min: usize,
    max: usize,
}

/// The simulated exchange: every symbol's book, the order-flow generator, and the JSON
/// writers for the feed messages. Sans-IO: no sockets, no clocks.
#[derive(Debug, Clone)]
pub struct Exchange {
    specs: Vec<SymbolSpec>,
    states: Vec<SymState>,
    index: HashMap<String, usize>,
    /// Cumulative popularity weights, for picking the symbol of each update.
    cum_weights: Vec<f64>,
    rng: ChaCha8Rng,
    depth: DepthParams,
    updates: u64,
    trades: u64,
    changes: Vec<Change>,
    fills: Vec<Fill>,
}

impl Exchange {
    /// Builds `symbols` symbols (see the crate docs for the universe) with books of about
    /// `depth` levels per side (at least 1), all drawn from `seed`.
    ///
    /// With `symbols == 0` the exchange is empty and [`step`](Self::step) produces nothing.
    pub fn new(symbols: usize, depth: usize, seed: u64) -> Self {
        let target = depth.max(1);
        let depth = DepthParams {
            target,
            min: (target - target / 5).max(1),
            max: target + target / 5 + 1,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let defs = universe(symbols);
        let mut specs = Vec::with_capacity(defs.len());
        let mut states = Vec::with_capacity(defs.len());
        for def in defs {
            states.push(initial_state(&def.spec, def.price, depth, &mut rng));
            specs.push(def.spec);
        }
        let index = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.symbol.clone(), i))
            .collect();
        let mut total = 0.0;
        let cum_weights = (0..specs.len())
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(ZIPF_S);
                total
            })
            .collect();
        Self {
            specs,
            states,
            index,
            cum_weights,
            rng,
            depth,
            updates: 0,
            trades: 0,
            changes: Vec::with_capacity(MAX_CHANGES),
            fills: Vec::with_capacity(MAX_CHANGES),
        }
    }

    /// The symbols, in index order (index 0 is the busiest).
    pub fn symbols(&self) -> &[SymbolSpec] {
        &self.specs
    }

    /// Index of `symbol`, if it exists.
    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        self.index.get(symbol).copied()
    }

    /// Seq of the last update applied to symbol `symbol_index`.
    pub fn seq(&self, symbol_index: usize) -> Option<u64> {
        self.states.get(symbol_index).map(|s| s.seq)
    }

    /// Total `l2update`s generated so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Total `trade`s generated so far.
    pub fn trades(&self) -> u64 {
        self.trades
    }

    /// The levels of one side of a book, best first, as `(price, qty)` scaled integers.
    /// Empty for an unknown index.
    pub fn levels(&self, symbol_index: usize, side: Side) -> Vec<(i64, i64)> {
        self.states
            .get(symbol_index)
            .map(|s| {
                s.side(side)
                    .iter_best_first()
                    .map(|l| (l.px, l.qty))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Best bid and best ask prices of a symbol.
    pub fn best(&self, symbol_index: usize) -> Option<(i64, i64)> {
        let s = self.states.get(symbol_index)?;
        Some((s.bids.best()?.px, s.asks.best()?.px))
    }

    /// Generates the next event: picks a symbol by popularity, changes its book and appends
    /// the messages (zero or more `trade`s, then one `l2update`, each a JSON line ending in
    /// `\n`) to `out`. `ts_ns` is the event time in nanoseconds since the Unix epoch.
    pub fn step(&mut self, ts_ns: u64, out: &mut Vec<u8>) -> StepInfo {
        let Some(i) = self.pick_symbol() else {
            return StepInfo::default();
        };
        self.changes.clear();
        self.fills.clear();
        let st = &mut self.states[i];
        let rng = &mut self.rng;
        let mut taker = None;
        if rng.random::<f64>() < P_TRADE {
            taker = trade(st, rng, self.depth, &mut self.changes, &mut self.fills);
        }
        if self.changes.is_empty() {
            let n = match rng.random_range(0..20u32) {
                0..10 => 1,
                10..15 => 2,
                15..18 => 3,
                _ => 4,
            };
            for _ in 0..n {
                if let Some(c) = plan_action(st, rng, self.depth) {
                    apply(st, c, &mut self.changes);
                }
            }
        }
        if self.changes.is_empty() {
            // Every side holds at least one level, so a quantity change is always possible.
            let side = if rng.random() { Side::Buy } else { Side::Sell };
            if let Some(c) = plan_modify(st, rng, side) {
                apply(st, c, &mut self.changes);
            }
        }
        st.seq += 1;
        self.updates += 1;

        let spec = &self.specs[i];
        if let Some(taker) = taker {
            for f in &self.fills {
                out.extend_from_slice(b"{\"type\":\"trade\",\"symbol\":");
                write_plain_str(out, &spec.symbol);
                out.extend_from_slice(b",\"trade_id\":");
                write_u64(out, st.next_trade_id);
                out.extend_from_slice(b",\"ts\":");
                write_u64(out, ts_ns);
                out.extend_from_slice(b",\"price\":");
                write_decimal_str(out, f.px, spec.px_decimals);
                out.extend_from_slice(b",\"qty\":");
                write_decimal_str(out, f.qty, spec.qty_decimals);
                out.extend_from_slice(b",\"side\":");
                write_plain_str(out, taker.as_str());
                out.extend_from_slice(b"}\n");
                st.next_trade_id += 1;
            }
        }
        let trades = if taker.is_some() { self.fills.len() } else { 0 };
        self.trades += trades as u64;

        out.extend_from_slice(b"{\"type\":\"l2update\",\"symbol\":");
        write_plain_str(out, &spec.symbol);
        out.extend_from_slice(b",\"seq\":");
        write_u64(out, st.seq);
        out.extend_from_slice(b",\"ts\":");
        write_u64(out, ts_ns);
        out.extend_from_slice(b",\"changes\":[");
        for (n, c) in self.changes.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'[');
            write_plain_str(out, c.side.as_str());
            out.push(b',');
            write_decimal_str(out, c.px, spec.px_decimals);
            out.push(b',');
            write_decimal_str(out, c.qty, spec.qty_decimals);
            out.push(b']');
        }
        out.extend_from_slice(b"]}\n");

        StepInfo {
            symbol_index: i,
            messages: trades + 1,
            updates: 1,
            trades,
            changes: self.changes.len(),
        }
    }

    /// Appends the `snapshot` message (full book, best first, seq of the last update applied)
    /// of symbol `symbol_index`, terminated by `\n`. Appends nothing for an unknown index.
    pub fn snapshot_json(&self, symbol_index: usize, ts_ns: u64, out: &mut Vec<u8>) {
        let (Some(spec), Some(st)) = (self.specs.get(symbol_index), self.states.get(symbol_index))
        else {
            return;
        };
        out.extend_from_slice(b"{\"type\":\"snapshot\",\"symbol\":");
        write_plain_str(out, &spec.symbol);
        out.extend_from_slice(b",\"seq\":");
        write_u64(out, st.seq);
        out.extend_from_slice(b",\"ts\":");
        write_u64(out, ts_ns);
        write_book_sides(out, spec, st);
        out.extend_from_slice(b"}\n");
    }

    /// Appends a `heartbeat` message of symbol `symbol_index`
    /// (`{"type":"heartbeat","symbol":..,"seq":..,"ts":..}`, the seq of its last update),
    /// terminated by `\n`. Appends nothing for an unknown index.
    pub fn heartbeat_json(&self, symbol_index: usize, ts_ns: u64, out: &mut Vec<u8>) {
        let (Some(spec), Some(st)) = (self.specs.get(symbol_index), self.states.get(symbol_index))
        else {
            return;
        };
        out.extend_from_slice(b"{\"type\":\"heartbeat\",\"symbol\":");
        write_plain_str(out, &spec.symbol);
        out.extend_from_slice(b",\"seq\":");
        write_u64(out, st.seq);
        out.extend_from_slice(b",\"ts\":");
        write_u64(out, ts_ns);
        out.extend_from_slice(b"}\n");
    }

    /// Appends the `symbols` message, terminated by `\n`.
    pub fn symbols_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"symbols\",\"symbols\":[");
        for (n, s) in self.specs.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"symbol\":");
            write_plain_str(out, &s.symbol);
            out.extend_from_slice(b",\"px_decimals\":");
            write_u64(out, u64::from(s.px_decimals));
            out.extend_from_slice(b",\"qty_decimals\":");
            write_u64(out, u64::from(s.qty_decimals));
            out.push(b'}');
        }
        out.extend_from_slice(b"]}\n");
    }

    /// The `GET /book/SYMBOL` body: `{"symbol":..,"seq":..,"bids":[..],"asks":[..]}` with the
    /// full book best first (no trailing newline). `None` for an unknown symbol.
    pub fn book_json(&self, symbol: &str) -> Option<String> {
        let i = self.symbol_index(symbol)?;
        let (spec, st) = (self.specs.get(i)?, self.states.get(i)?);
        let mut out = Vec::with_capacity(64 + 48 * (st.bids.len() + st.asks.len()));
        out.extend_from_slice(b"{\"symbol\":");
        write_plain_str(&mut out, &spec.symbol);
        out.extend_from_slice(b",\"seq\":");
        write_u64(&mut out, st.seq);
        write_book_sides(&mut out, spec, st);
        out.push(b'}');
        String::from_utf8(out).ok()
    }

    fn pick_symbol(&mut self) -> Option<usize> {
        let total = *self.cum_weights.last()?;
        let r = self.rng.random::<f64>() * total;
        let i = self.cum_weights.partition_point(|&c| c <= r);
        Some(i.min(self.cum_weights.len() - 1))
    }
}

fn write_book_sides(out: &mut Vec<u8>, spec: &SymbolSpec, st: &SymState) {
    let pair = |l: Level| (l.px, l.qty);
    out.extend_from_slice(b",\"bids\":");
    write_levels(
        out,
        st.bids.iter_best_first().map(pair),
        spec.px_decimals,
        spec.qty_decimals,
    );
    out.extend_from_slice(b",\"asks\":");
    write_levels(
        out,
        st.asks.iter_best_first().map(pair),
        spec.px_decimals,
        spec.qty_decimals,
    );
}

impl SymState {
    fn side(&self, side: Side) -> &SideBook {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut SideBook {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Probability that a price-moving action pushes the mid up: 0.5, leaning back towards
    /// the reference price as the mid wanders off it.
    fn p_up(&self) -> f64 {
        let (Some(b), Some(a)) = (self.bids.best(), self.asks.best()) else {
            return 0.5;
        };
        let mid = (b.px as f64 + a.px as f64) / 2.0;
        let dev = (mid - self.ref_px as f64) / self.ref_px as f64;
        0.5 - (dev * 15.0).clamp(-0.25, 0.25)
    }
}

/// A random resting quantity around the symbol's typical size (always >= 1).
fn random_qty(typical: i64, rng: &mut ChaCha8Rng) -> i64 {
    let u: f64 = rng.random();
    let f = 0.02 + 2.0 * u * u;
    ((typical as f64 * f) as i64).max(1)
}

/// Gap, in ticks, between neighbouring levels of a fresh book.
fn random_gap(rng: &mut ChaCha8Rng) -> i64 {
    match rng.random_range(0..20u32) {
        0..12 => 1,
        12..17 => 2,
        _ => 3,
    }
}

/// Distance from the touch of a level to act on: mostly near the top, sometimes anywhere.
fn hot_index(len: usize, rng: &mut ChaCha8Rng) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.random::<f64>() < 0.1 {
        return rng.random_range(0..len);
    }
    let u: f64 = rng.random();
    let window = len.min(HOT_LEVELS);
    ((u * u * u * window as f64) as usize).min(window - 1)
}

fn initial_state(
    spec: &SymbolSpec,
    price: f64,
    depth: DepthParams,
    rng: &mut ChaCha8Rng,
) -> SymState {
    let tick = spec.tick.max(1);
    let jitter = rng.random_range(0.9..1.1);
    let scaled = price * jitter * 10f64.powi(i32::from(spec.px_decimals));
    let ref_px = (((scaled / tick as f64).round() as i64).max(1)) * tick;
    let typical_qty = ((LEVEL_NOTIONAL / price) * 10f64.powi(i32::from(spec.qty_decimals)))
        .round()
        .max(10.0) as i64;
    let mut bids = SideBook::new(Side::Buy, depth.max + MAX_CHANGES);
    let mut asks = SideBook::new(Side::Sell, depth.max + MAX_CHANGES);
    let best_bid = ref_px - tick * rng.random_range(0..2i64);
    let best_ask = best_bid + tick * rng.random_range(1..=3i64);
    let mut px = best_bid;
    for _ in 0..depth.target {
        if px < tick {
            break;
        }
        bids.push_worse(px, random_qty(typical_qty, rng));
        px -= tick * random_gap(rng);
    }
    let mut px = best_ask;
    for _ in 0..depth.target {
        asks.push_worse(px, random_qty(typical_qty, rng));
        px += tick * random_gap(rng);
    }
    SymState {
        bids,
        asks,
        seq: rng.random_range(1_000..1_000_000u64),
        next_trade_id: rng.random_range(1..100_000u64),
        ref_px,
        typical_qty,
        tick,
    }
}

/// A taker crossing the spread: fills against the opposite side from the touch outwards,
/// at most [`MAX_CHANGES`] levels, never taking a side below its minimum depth. Records the
/// fills and the level changes; returns the taker side, or `None` if nothing filled.
fn trade(
    st: &mut SymState,
    rng: &mut ChaCha8Rng,
    depth: DepthParams,
    changes: &mut Vec<Change>,
    fills: &mut Vec<Fill>,
) -> Option<Side> {
    let taker = if rng.random::<f64>() < st.p_up() {
        Side::Buy
    } else {
        Side::Sell
    };
    let maker = taker.opposite();
    let touch = st.side(maker).best()?;
    let f: f64 = match rng.random_range(0..10u32) {
        0..6 => rng.random_range(0.05..0.95),
        6..9 => rng.random_range(1.0..2.0),
        _ => rng.random_range(2.0..4.0),
    };
    let mut remaining = ((touch.qty as f64 * f) as i64).max(1);
    for _ in 0..MAX_CHANGES {
        let book = st.side_mut(maker);
        let Some(level) = book.best() else { break };
        let mut fill = remaining.min(level.qty);
        if fill == level.qty && book.len() <= depth.min {
            // Leave the level standing rather than thin the side below its floor.
            fill = level.qty - 1;
        }
        if fill <= 0 {
            break;
        }
        let left = level.qty - fill;
        book.set(level.px, left);
        changes.push(Change {
            side: maker,
            px: level.px,
            qty: left,
        });
        fills.push(Fill {
            px: level.px,
            qty: fill,
        });
        remaining -= fill;
        if remaining == 0 || left > 0 {
            break;
        }
    }
    if fills.is_empty() { None } else { Some(taker) }
}

/// Applies a planned change unless it touches a level already changed in this update.
fn apply(st: &mut SymState, c: Change, changes: &mut Vec<Change>) {
    if changes.len() >= MAX_CHANGES || changes.iter().any(|x| x.side == c.side && x.px == c.px) {
        return;
    }
    st.side_mut(c.side).set(c.px, c.qty);
    changes.push(c);
}

fn plan_action(st: &SymState, rng: &mut ChaCha8Rng, depth: DepthParams) -> Option<Change> {
    let random_side = |rng: &mut ChaCha8Rng| if rng.random() { Side::Buy } else { Side::Sell };
    let mut a: f64 = rng.random();
    if a < P_MAINTAIN {
        let side = random_side(rng);
        let len = st.side(side).len();
        return if len < depth.target {
            plan_add_far(st, rng, side)
        } else if len > depth.target && len > depth.min {
            st.side(side).worst().map(|w| Change {
                side,
                px: w.px,
                qty: 0,
            })
        } else {
            plan_modify(st, rng, side)
        };
    }
    a -= P_MAINTAIN;
    if a < P_ADD {
        return plan_add(st, rng, depth);
    }
    a -= P_ADD;
    if a < P_REMOVE {
        return plan_remove(st, rng, depth);
    }
    let side = random_side(rng);
    plan_modify(st, rng, side)
}

/// Changes the quantity of a level near the touch.
fn plan_modify(st: &SymState, rng: &mut ChaCha8Rng, side: Side) -> Option<Change> {
    let book = st.side(side);
    let level = book.nth_best(hot_index(book.len(), rng))?;
    let mut qty = random_qty(st.typical_qty, rng);
    if qty == level.qty {
        qty += 1;
    }
    Some(Change {
        side,
        px: level.px,
        qty,
    })
}

/// Adds a level: inside the spread (moving the touch), between levels near the top, or, when
/// neither has room, beyond the far end.
fn plan_add(st: &SymState, rng: &mut ChaCha8Rng, depth: DepthParams) -> Option<Change> {
    let (bid, ask) = (st.bids.best()?, st.asks.best()?);
    let tick = st.tick;
    let spread_ticks = (ask.px - bid.px) / tick;
    if spread_ticks > 1 && rng.random::<f64>() < (0.4 * (spread_ticks - 1) as f64).min(0.9) {
        let side = if rng.random::<f64>() < st.p_up() {
            Side::Buy
        } else {
            Side::Sell
        };
        if st.side(side).len() < depth.max {
            let k = rng.random_range(1..=(spread_ticks - 1).min(3));
            let px = match side {
                Side::Buy => bid.px + k * tick,
                Side::Sell => ask.px - k * tick,
            };
            return Some(Change {
                side,
                px,
                qty: random_qty(st.typical_qty, rng),
            });
        }
    }
    let side = if rng.random() { Side::Buy } else { Side::Sell };
    let book = st.side(side);
    if book.len() >= depth.max {
        return plan_modify(st, rng, side);
    }
    let sign = match side {
        Side::Buy => 1,
        Side::Sell => -1,
    };
    for _ in 0..3 {
        let n = hot_index(book.len(), rng);
        let (Some(inner), Some(outer)) = (book.nth_best(n), book.nth_best(n + 1)) else {
            continue;
        };
        let gap = (inner.px - outer.px) * sign / tick;
        if gap > 1 {
            let px = inner.px - sign * tick * rng.random_range(1..gap);
            return Some(Change {
                side,
                px,
                qty: random_qty(st.typical_qty, rng),
            });
        }
    }
    plan_add_far(st, rng, side)
}

/// Adds a level beyond the worst one of `side`.
fn plan_add_far(st: &SymState, rng: &mut ChaCha8Rng, side: Side) -> Option<Change> {
    let tick = st.tick;
    let worst = st.side(side).worst()?;
    let px = match side {
        Side::Buy => worst.px - tick * random_gap(rng),
        Side::Sell => worst.px + tick * random_gap(rng),
    };
    if px < tick {
        return None;
    }
    Some(Change {
        side,
        px,
        qty: random_qty(st.typical_qty, rng),
    })
}

/// Removes a level near the touch, often the touch itself.
fn plan_remove(st: &SymState, rng: &mut ChaCha8Rng, depth: DepthParams) -> Option<Change> {
    let at_touch = rng.random::<f64>() < 0.25;
    let side = if at_touch {
        // Removing the best ask moves the mid up.
        if rng.random::<f64>() < st.p_up() {
            Side::Sell
        } else {
            Side::Buy
        }
    } else if rng.random() {
        Side::Buy
    } else {
        Side::Sell
    };
    let book = st.side(side);
    if book.len() <= depth.min {
        return plan_modify(st, rng, side);
    }
    let n = if at_touch {
        0
    } else {
        hot_index(book.len(), rng)
    };
    book.nth_best(n).map(|l| Change {
        side,
        px: l.px,
        qty: 0,
    })
}
