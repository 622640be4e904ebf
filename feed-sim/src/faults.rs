//! Fault injection: the feed misbehaving on purpose, deterministically.
//!
//! [`Faults`] holds the switches: per-update probabilities (drop, duplicate, reorder, malformed,
//! unknown symbol) and periods (disconnect, stall). They are set from the library with the
//! `with_*` builders or parsed from the command-line spec
//! `drop=P,dup=P,reorder=P,malformed=P,unknown=P,disconnect=SECS,stall=SECS[,stall_for=SECS]`.
//!
//! The per-update faults are applied by an [`Injector`] to each `l2update` as it is generated,
//! with its own ChaCha stream seeded from the simulator's seed: the same seed and configuration
//! give the same faulted stream, and the order flow itself (the books, `GET /book`) is the same
//! with or without faults. What each fault does to the stream:
//!
//! - **drop**: the update is not sent (the exchange's book changes anyway).
//! - **dup**: the update is sent twice in a row.
//! - **reorder**: the update is held back and sent right after the next update of the same
//!   symbol (two adjacent updates swap). If no such update comes within [`MAX_HOLD`] further
//!   updates, before a heartbeat of the symbol or when the books freeze, it is sent late but in
//!   order.
//! - **malformed**: instead of the update, a line that is not valid JSON (the update truncated,
//!   its commas turned into semicolons, or plain text). The update is lost with it.
//! - **unknown**: an extra `l2update` for a symbol the feed never announced, before the update.
//!
//! Drop, malformed and reorder take precedence over dup in that order. Trades are never
//! faulted. The periodic faults are driven by the server: **disconnect** drops every feed
//! connection (TCP shutdown, no close frame) once per period; **stall** makes every feed
//! connection go silent (no reads, no writes, no pongs) for `stall_for` once per period, while
//! the exchange keeps generating; the backlog is delivered when the stall ends. Periods count
//! from the simulator's start, the first event after one period; periodic faults stop once the
//! `updates` limit is reached.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Longest period accepted for a periodic fault.
pub const MAX_FAULT_PERIOD: Duration = Duration::from_secs(86_400);
/// A held-back (reordered) update is released, in order, after this many further updates of
/// other symbols.
pub const MAX_HOLD: u32 = 64;
/// Name of the symbol the `unknown` fault sends updates for (never announced).
pub const UNKNOWN_SYMBOL: &str = "UNLISTED-XXX";
/// Mixed into the simulator's seed for the fault stream, so that faults do not disturb the
/// order flow.
const FAULT_SEED_SALT: u64 = 0x6661_756c_7473_2121;

/// The fault names of the spec, in the order [`Faults`] prints them.
const KEYS: &str = "drop, dup, reorder, malformed, unknown, disconnect, stall, stall_for";

/// Fault switches of a simulator. The default is no faults.
///
/// ```
/// use std::time::Duration;
/// use feed_sim::Faults;
///
/// let f: Faults = "drop=0.01,dup=0.02,disconnect=5".parse().unwrap();
/// assert_eq!(f, Faults::none().with_drop(0.01).with_dup(0.02)
///     .with_disconnect_every(Duration::from_secs(5)));
/// assert!("drop=2".parse::<Faults>().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    drop: f64,
    dup: f64,
    reorder: f64,
    malformed: f64,
    unknown: f64,
    disconnect: Option<Duration>,
    stall: Option<Duration>,
    stall_for: Option<Duration>,
}

/// Why a fault spec or a [`Faults`] value is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultSpecError {
    /// A name that is not a fault.
    #[error("unknown fault `{0}` (known: {KEYS})")]
    UnknownFault(String),
    /// `name` without `=value`.
    #[error("fault `{0}` needs a value, e.g. `{0}=0.01` or `{0}=5`")]
    MissingValue(String),
    /// The same fault twice in one spec.
    #[error("fault `{0}` is given twice")]
    Duplicate(String),
    /// The value is not a number.
    #[error("fault `{key}`: `{value}` is not a number")]
    NotANumber {
        /// The fault.
        key: String,
        /// The text given.
        value: String,
    },
    /// A probability outside `[0, 1]`.
    #[error("fault `{key}`: probability {value} is not between 0 and 1")]
    Probability {
        /// The fault.
        key: &'static str,
        /// The value given.
        value: f64,
    },
    /// A period or duration that is not a positive number of seconds up to one day.
    #[error("fault `{key}`: {value} is not a number of seconds above 0 and at most 86400")]
    Period {
        /// The fault.
        key: &'static str,
        /// The value given, in seconds.
        value: f64,
    },
    /// `stall_for` without `stall`, or not shorter than the stall period.
    #[error("stall_for must come with stall=SECS and be shorter than that period")]
    StallFor,
}

impl Faults {
    /// No faults (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no fault is switched on.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// Drops each update with probability `p`.
    #[must_use]
    pub fn with_drop(mut self, p: f64) -> Self {
        self.drop = p;
        self
    }

    /// Sends each update twice with probability `p`.
    #[must_use]
    pub fn with_dup(mut self, p: f64) -> Self {
        self.dup = p;
        self
    }

    /// Swaps each update with the next one of its symbol with probability `p`.
    #[must_use]
    pub fn with_reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }

    /// Replaces each update with a malformed line with probability `p`.
    #[must_use]
    pub fn with_malformed(mut self, p: f64) -> Self {
        self.malformed = p;
        self
    }

    /// Adds an update for an unannounced symbol before each update with probability `p`.
    #[must_use]
    pub fn with_unknown(mut self, p: f64) -> Self {
        self.unknown = p;
        self
    }

    /// Drops every feed connection once per `period`.
    #[must_use]
    pub fn with_disconnect_every(mut self, period: Duration) -> Self {
        self.disconnect = Some(period);
        self
    }

    /// Stalls every feed connection once per `period` (for half of it unless
    /// [`with_stall_for`](Self::with_stall_for) says otherwise).
    #[must_use]
    pub fn with_stall_every(mut self, period: Duration) -> Self {
        self.stall = Some(period);
        self
    }

    /// How long each stall lasts; must be shorter than the stall period.
    #[must_use]
    pub fn with_stall_for(mut self, length: Duration) -> Self {
        self.stall_for = Some(length);
        self
    }

    /// Probability that an update is dropped.
    pub fn p_drop(&self) -> f64 {
        self.drop
    }

    /// Probability that an update is duplicated.
    pub fn p_dup(&self) -> f64 {
        self.dup
    }

    /// Probability that an update is swapped with the next one of its symbol.
    pub fn p_reorder(&self) -> f64 {
        self.reorder
    }

    /// Probability that an update is replaced by a malformed line.
    pub fn p_malformed(&self) -> f64 {
        self.malformed
    }

    /// Probability that an update for an unknown symbol is added.
    pub fn p_unknown(&self) -> f64 {
        self.unknown
    }

    /// Period of the disconnect fault.
    pub fn disconnect_every(&self) -> Option<Duration> {
        self.disconnect
    }

    /// Period of the stall fault.
    pub fn stall_every(&self) -> Option<Duration> {
        self.stall
    }

    /// Length of each stall: `stall_for`, or half the stall period.
    pub fn stall_length(&self) -> Option<Duration> {
        self.stall.map(|p| self.stall_for.unwrap_or(p / 2))
    }

    /// True when some per-update fault has a non-zero probability.
    pub fn has_update_faults(&self) -> bool {
        [
            self.drop,
            self.dup,
            self.reorder,
            self.malformed,
            self.unknown,
        ]
        .iter()
        .any(|&p| p > 0.0)
    }

    /// Checks every value (probabilities in `[0, 1]`, periods above 0 and at most a day,
    /// `stall_for` shorter than the stall period).
    ///
    /// # Errors
    ///
    /// The first [`FaultSpecError`] found.
    pub fn validate(&self) -> Result<(), FaultSpecError> {
        for (key, value) in [
            ("drop", self.drop),
            ("dup", self.dup),
            ("reorder", self.reorder),
            ("malformed", self.malformed),
            ("unknown", self.unknown),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultSpecError::Probability { key, value });
            }
        }
        for (key, period) in [
            ("disconnect", self.disconnect),
            ("stall", self.stall),
            ("stall_for", self.stall_for),
        ] {
            if let Some(p) = period {
                if p.is_zero() || p > MAX_FAULT_PERIOD {
                    return Err(FaultSpecError::Period {
                        key,
                        value: p.as_secs_f64(),
                    });
                }
            }
        }
        match (self.stall, self.stall_for) {
            (None, Some(_)) => Err(FaultSpecError::StallFor),
            (Some(period), Some(length)) if length >= period => Err(FaultSpecError::StallFor),
            _ => Ok(()),
        }
    }
}

impl FromStr for Faults {
    type Err = FaultSpecError;

    /// Parses `drop=P,dup=P,reorder=P,malformed=P,unknown=P,disconnect=SECS,stall=SECS,
    /// stall_for=SECS` (any subset, any order; `""` or `none` for no faults).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let mut f = Self::none();
        if spec.is_empty() || spec == "none" {
            return Ok(f);
        }
        let mut seen: Vec<&str> = Vec::new();
        for item in spec.split(',') {
            let item = item.trim();
            let Some((key, value)) = item.split_once('=') else {
                return Err(if is_key(item) {
                    FaultSpecError::MissingValue(item.to_owned())
                } else {
                    FaultSpecError::UnknownFault(item.to_owned())
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if !is_key(key) {
                return Err(FaultSpecError::UnknownFault(key.to_owned()));
            }
            if seen.contains(&key) {
                return Err(FaultSpecError::Duplicate(key.to_owned()));
            }
            seen.push(key);
            let x: f64 = value.parse().map_err(|_| FaultSpecError::NotANumber {
                key: key.to_owned(),
                value: value.to_owned(),
            })?;
            let secs = |key: &'static str| {
                if x.is_finite() && x > 0.0 && x <= MAX_FAULT_PERIOD.as_secs_f64() {
                    Ok(Duration::from_secs_f64(x))
                } else {
                    Err(FaultSpecError::Period { key, value: x })
                }
            };
            match key {
                "drop" => f.drop = x,
                "dup" => f.dup = x,
                "reorder" => f.reorder = x,
                "malformed" => f.malformed = x,
                "unknown" => f.unknown = x,
                "disconnect" => f.disconnect = Some(secs("disconnect")?),
                "stall" => f.stall = Some(secs("stall")?),
                _ => f.stall_for = Some(secs("stall_for")?),
            }
        }
        f.validate()?;
        Ok(f)
    }
}

fn is_key(s: &str) -> bool {
    matches!(
        s,
        "drop" | "dup" | "reorder" | "malformed" | "unknown" | "disconnect" | "stall" | "stall_for"
    )
}

impl fmt::Display for Faults {
    /// The spec form, parseable by [`FromStr`]; `none` for no faults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for (key, p) in [
            ("drop", self.drop),
            ("dup", self.dup),
            ("reorder", self.reorder),
            ("malformed", self.malformed),
            ("unknown", self.unknown),
        ] {
            if p > 0.0 {
                parts.push(format!("{key}={p}"));
            }
        }
        for (key, d) in [
            ("disconnect", self.disconnect),
            ("stall", self.stall),
            ("stall_for", self.stall_for),
        ] {
            if let Some(d) = d {
                parts.push(format!("{key}={}", d.as_secs_f64()));
            }
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// How many faults a simulator has injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Updates dropped.
    pub dropped: u64,
    /// Updates sent twice.
    pub duplicated: u64,
    /// Updates swapped with the next one of their symbol.
    pub reordered: u64,
    /// Malformed lines sent (each in place of an update).
    pub malformed: u64,
    /// Updates sent for an unknown symbol.
    pub unknown: u64,
    /// Times every feed connection was dropped.
    pub disconnects: u64,
    /// Stalls begun.
    pub stalls: u64,
}

/// An update held back by the reorder fault.
#[derive(Debug)]
struct Held {
    symbol: usize,
    /// Updates of other symbols since it was held.
    age: u32,
}

/// Applies the per-update faults to the generated stream, deterministically.
#[derive(Debug)]
pub(crate) struct Injector {
    faults: Faults,
    rng: ChaCha8Rng,
    held: Option<Held>,
    /// The held update's line (capacity reused).
    held_line: Vec<u8>,
    pub(crate) counts: FaultCounts,
}

impl Injector {
    /// An injector for `faults`, its random stream derived from the simulator's `seed`.
    pub(crate) fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            rng: ChaCha8Rng::seed_from_u64(seed ^ FAULT_SEED_SALT),
            held: None,
            held_line: Vec::new(),
            counts: FaultCounts::default(),
        }
    }

    /// True when [`on_step`](Self::on_step) would copy its input unchanged.
    pub(crate) fn passes_through(&self) -> bool {
        !self.faults.has_update_faults() && self.held.is_none()
    }

    /// Passes the messages of one `Exchange::step` (zero or more trades, then one `l2update`,
    /// each a `\n`-terminated line) for symbol `symbol` to `out`, faulted.
    pub(crate) fn on_step(&mut self, symbol: usize, msgs: &[u8], out: &mut Vec<u8>) {
        let body = msgs.strip_suffix(b"\n").unwrap_or(msgs);
        let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let (trades, update) = msgs.split_at(start);
        out.extend_from_slice(trades);
        if update.is_empty() {
            return;
        }
        if let Some(h) = &mut self.held {
            if h.symbol == symbol {
                // The swap completes: this update, then the one held before it.
                out.extend_from_slice(update);
                self.release(out);
                return;
            }
            h.age += 1;
            if h.age > MAX_HOLD {
                self.release(out);
            }
        }
        if !self.faults.has_update_faults() {
            out.extend_from_slice(update);
            return;
        }
        let f = &self.faults;
        let (p_drop, p_dup, p_reorder, p_malformed, p_unknown) =
            (f.drop, f.dup, f.reorder, f.malformed, f.unknown);
        if self.hit(p_unknown) {
            self.counts.unknown += 1;
            unknown_symbol_line(update, out);
        }
        if self.hit(p_drop) {
            self.counts.dropped += 1;
        } else if self.hit(p_malformed) {
            self.counts.malformed += 1;
            let variant = self.rng.random_range(0..3u32);
            self.malformed_line(variant, update, out);
        } else if self.held.is_none() && self.hit(p_reorder) {
            self.counts.reordered += 1;
            self.held_line.clear();
            self.held_line.extend_from_slice(update);
            self.held = Some(Held { symbol, age: 0 });
        } else {
            out.extend_from_slice(update);
            if self.hit(p_dup) {
                self.counts.duplicated += 1;
                out.extend_from_slice(update);
            }
        }
    }

    /// Sends the held update of `symbol`, if any (before a heartbeat of that symbol).
    pub(crate) fn flush_symbol(&mut self, symbol: usize, out: &mut Vec<u8>) {
        if self.held.as_ref().is_some_and(|h| h.symbol == symbol) {
            self.release(out);
        }
    }

    /// Sends the held update, if any.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        if self.held.is_some() {
            self.release(out);
        }
    }

    fn release(&mut self, out: &mut Vec<u8>) {
        self.held = None;
        out.extend_from_slice(&self.held_line);
        self.held_line.clear();
    }

    /// True with probability `p`; draws from the fault stream only for faults that are on, so
    /// one configuration and seed always give the same draws.
    fn hit(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// A line that is not JSON, standing for `update` (which ends in `\n`).
    fn malformed_line(&mut self, variant: u32, update: &[u8], out: &mut Vec<u8>) {
        let line = update.strip_suffix(b"\n").unwrap_or(update);
        match variant {
            0 if line.len() > 1 => {
                // A strict prefix of an object never closes it.
                let cut = self.rng.random_range(1..line.len());
                out.extend_from_slice(&line[..cut]);
            }
            1 => out.extend(line.iter().map(|&b| if b == b',' { b';' } else { b })),
            _ => {
                out.extend_from_slice(b"not json: ");
                out.extend_from_slice(&line[..line.len().min(24)]);
            }
        }
        out.push(b'\n');
    }
}

/// An `l2update` like `update` but for [`UNKNOWN_SYMBOL`].
fn unknown_symbol_line(update: &[u8], out: &mut Vec<u8>) {
    const KEY: &[u8] = b"\"symbol\":\"";
    let name_start = update
        .windows(KEY.len())
        .position(|w| w == KEY)
        .map(|p| p + KEY.len());
    let name_end = name_start.and_then(|s| {
        update[s..]
            .iter()
            .position(|&b| b == b'"')
            .map(|len| s + len)
    });
    match (name_start, name_end) {
        (Some(s), Some(e)) => {
            out.extend_from_slice(&update[..s]);
            out.extend_from_slice(UNKNOWN_SYMBOL.as_bytes());
            out.extend_from_slice(&update[e..]);
        }
        _ => {
            out.extend_from_slice(b"{\"type\":\"l2update\",\"symbol\":\"");
            out.extend_from_slice(UNKNOWN_SYMBOL.as_bytes());
            out.extend_from_slice(
                b"\",\"seq\":1,\"ts\":0,\"changes\":[[\"buy\",\"1.00\",\"1.00\"]]}\n",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_prints_back() {
        let spec = "drop=0.01,dup=0.02,reorder=0.03,malformed=0.04,unknown=0.05,disconnect=5,stall=8,stall_for=1.5";
        let f: Faults = spec.parse().unwrap();
        assert_eq!(f.p_drop(), 0.01);
        assert_eq!(f.p_unknown(), 0.05);
        assert_eq!(f.disconnect_every(), Some(Duration::from_secs(5)));
        assert_eq!(f.stall_length(), Some(Duration::from_millis(1500)));
        assert_eq!(f.to_string(), spec);
        assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
        let spaced: Faults = " stall = 4 , drop=0 ".parse().unwrap();
        assert_eq!(spaced.stall_length(), Some(Duration::from_secs(2)));
        assert!(!spaced.has_update_faults());
        assert!("".parse::<Faults>().unwrap().is_none());
        assert!("none".parse::<Faults>().unwrap().is_none());
        assert_eq!(Faults::none().to_string(), "none");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Faults>().unwrap_err();
        assert_eq!(
            err("drop=2"),
            FaultSpecError::Probability {
                key: "drop",
                value: 2.0
            }
        );
        assert_eq!(
            err("dup=-0.1"),
            FaultSpecError::Probability {
                key: "dup",
                value: -0.1
            }
        );
        assert!(matches!(
            err("reorder=NaN"),
            FaultSpecError::Probability { .. }
        ));
        assert_eq!(
            err("flood=0.1"),
            FaultSpecError::UnknownFault("flood".into())
        );
        assert_eq!(err("drop"), FaultSpecError::MissingValue("drop".into()));
        assert_eq!(err("junk"), FaultSpecError::UnknownFault("junk".into()));
        assert_eq!(
            err("drop=0.1,drop=0.2"),
            FaultSpecError::Duplicate("drop".into())
        );
        assert!(matches!(
            err("drop=lots"),
            FaultSpecError::NotANumber { .. }
        ));
        assert!(matches!(
            err("disconnect=0"),
            FaultSpecError::Period {
                key: "disconnect",
                ..
            }
        ));
        assert!(matches!(err("stall=-1"), FaultSpecError::Period { .. }));
        assert!(matches!(err("stall=inf"), FaultSpecError::Period { .. }));
        assert_eq!(err("stall_for=1"), FaultSpecError::StallFor);
        assert_eq!(err("stall=2,stall_for=2"), FaultSpecError::StallFor);
        assert_eq!(
            err("drop=0.1,"),
            FaultSpecError::UnknownFault(String::new())
        );
        // Messages name the fault.
        assert!(err("malformed=7").to_string().contains("malformed"));
        assert!(err("flood=1").to_string().contains("known: drop"));
    }

    #[test]
    fn builder_values_are_validated() {
        assert!(Faults::none().with_drop(0.5).validate().is_ok());
        assert!(Faults::none().with_unknown(1.5).validate().is_err());
        assert!(
            Faults::none()
                .with_disconnect_every(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(
            Faults::none()
                .with_stall_every(Duration::from_secs(1))
                .with_stall_for(Duration::from_secs(3))
                .validate()
                .is_err()
        );
    }

    fn update(sym: &str, seq: u64) -> Vec<u8> {
        format!(
            "{{\"type\":\"l2update\",\"symbol\":\"{sym}\",\"seq\":{seq},\"ts\":1,\"changes\":[[\"buy\",\"1.00\",\"2.00\"]]}}\n"
        )
        .into_bytes()
    }

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn without_faults_the_stream_is_unchanged() {
        let mut inj = Injector::new(Faults::none(), 1);
        assert!(inj.passes_through());
        let mut msgs = b"{\"type\":\"trade\"}\n".to_vec();
        msgs.extend(update("A", 1));
        let mut out = Vec::new();
        inj.on_step(0, &msgs, &mut out);
        assert_eq!(out, msgs);
    }

    #[test]
    fn every_update_fault_does_what_it_says() {
        let run = |f: Faults| {
            let mut inj = Injector::new(f, 9);
            let mut out = Vec::new();
            for seq in 1..=3 {
                inj.on_step(0, &update("A", seq), &mut out);
            }
            inj.flush(&mut out);
            (lines(&out), inj.counts)
        };
        let (l, c) = run(Faults::none().with_drop(1.0));
        assert!(l.is_empty());
        assert_eq!(c.dropped, 3);
        let (l, c) = run(Faults::none().with_dup(1.0));
        assert_eq!(l.len(), 6);
        assert_eq!(l[0], l[1]);
        assert_eq!(c.duplicated, 3);
        // Reorder: 1 is held, 2 goes out, then 1; 3 is held and flushed at the end.
        let (l, c) = run(Faults::none().with_reorder(1.0));
        let seqs: Vec<bool> = ["\"seq\":2", "\"seq\":1", "\"seq\":3"]
            .iter()
            .zip(&l)
            .map(|(want, line)| line.contains(want))
            .collect();
        assert_eq!((l.len(), seqs), (3, vec![true; 3]), "{l:?}");
        assert_eq!(c.reordered, 2);
        let (l, c) = run(Faults::none().with_malformed(1.0));
        assert_eq!((l.len(), c.malformed), (3, 3));
        for line in &l {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_err(),
                "{line}"
            );
        }
        let (l, c) = run(Faults::none().with_unknown(1.0));
        assert_eq!((l.len(), c.unknown), (6, 3));
        assert!(l[0].contains(UNKNOWN_SYMBOL) && l[0].contains("\"seq\":1"));
        assert!(serde_json::from_str::<serde_json::Value>(&l[0]).is_ok());
        assert!(l[1].contains("\"symbol\":\"A\""));
    }

    #[test]
    fn held_update_is_released_in_order_when_its_symbol_stays_quiet() {
        let mut inj = Injector::new(Faults::none().with_reorder(1.0), 3);
        let mut out = Vec::new();
        inj.on_step(0, &update("A", 1), &mut out);
        assert!(out.is_empty());
        // Other symbols' updates are held in turn only when nothing is held.
        for seq in 0..=MAX_HOLD {
            inj.on_step(1, &update("B", u64::from(seq)), &mut out);
        }
        let l = lines(&out);
        assert!(
            l.iter().any(|x| x.contains("\"symbol\":\"A\"")),
            "A never released"
        );
        let mut out = Vec::new();
        let mut inj = Injector::new(Faults::none().with_reorder(1.0), 3);
        inj.on_step(0, &update("A", 1), &mut out);
        inj.flush_symbol(1, &mut out);
        assert!(out.is_empty());
        inj.flush_symbol(0, &mut out);
        assert_eq!(lines(&out).len(), 1);
    }

    #[test]
    fn faults_are_deterministic_per_seed() {
        let f = Faults::none()
            .with_drop(0.1)
            .with_dup(0.1)
            .with_reorder(0.1)
            .with_malformed(0.1)
            .with_unknown(0.1);
        let run = |seed| {
            let mut inj = Injector::new(f.clone(), seed);
            let mut out = Vec::new();
            for seq in 0..500 {
                inj.on_step(
                    (seq % 3) as usize,
                    &update(["A", "B", "C"][(seq % 3) as usize], seq),
                    &mut out,
                );
            }
            (out, inj.counts)
        };
        let (a, ca) = run(5);
        let (b, cb) = run(5);
        let (c, _) = run(6);
        assert_eq!(a, b);
        assert_eq!(ca, cb);
        assert_ne!(a, c);
        assert!(
            ca.dropped > 0
                && ca.duplicated > 0
                && ca.reordered > 0
                && ca.malformed > 0
                && ca.unknown > 0,
            "{ca:?}"
        );
    }
}
