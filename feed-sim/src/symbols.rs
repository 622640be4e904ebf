//! The symbol universe: names, decimals, tick sizes and reference price levels.
//!
//! The first symbols come from a fixed table of well-known crypto pairs; beyond it, plausible
//! tickers are generated from the symbol's index alone, so `N` symbols always have the same
//! names whatever the seed. Every symbol's reference price is at least [`MIN_TICKS`] ticks,
//! which leaves room for deep books without ever reaching a price of zero.

use std::collections::HashSet;

/// One tradable symbol as announced in the `symbols` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolSpec {
    /// Name, e.g. `BTC-USD` (characters `A-Z`, `0-9`, `-`).
    pub symbol: String,
    /// Decimals of prices on the wire; prices are integers scaled by `10^px_decimals`.
    pub px_decimals: u8,
    /// Decimals of quantities on the wire; quantities are integers scaled by `10^qty_decimals`.
    pub qty_decimals: u8,
    /// Tick size in scaled price units: every price is a multiple of it.
    pub tick: i64,
}

/// Smallest reference price, in ticks, of any symbol.
pub(crate) const MIN_TICKS: f64 = 10_000.0;

/// A symbol together with the parameters the order flow needs.
#[derive(Debug, Clone)]
pub(crate) struct SymbolDef {
    pub(crate) spec: SymbolSpec,
    /// Reference price in whole currency units (e.g. 65000.0 for BTC-USD).
    pub(crate) price: f64,
}

/// (name, price, px_decimals, qty_decimals, tick in scaled units)
const KNOWN: &[(&str, f64, u8, u8, i64)] = &[
    ("BTC-USD", 65_000.0, 2, 6, 1),
    ("ETH-USD", 3_400.0, 2, 6, 1),
    ("SOL-USD", 150.0, 2, 4, 1),
    ("XRP-USD", 0.60, 5, 2, 1),
    ("DOGE-USD", 0.15, 5, 1, 1),
    ("ADA-USD", 0.45, 5, 2, 1),
    ("AVAX-USD", 35.0, 3, 4, 1),
    ("LINK-USD", 15.0, 3, 4, 1),
    ("DOT-USD", 7.0, 4, 3, 1),
    ("LTC-USD", 80.0, 3, 6, 1),
    ("BCH-USD", 450.0, 3, 6, 5),
    ("TRX-USD", 0.12, 5, 1, 1),
    ("POL-USD", 0.50, 5, 1, 1),
    ("ATOM-USD", 8.0, 4, 3, 1),
    ("UNI-USD", 9.0, 4, 3, 1),
    ("XLM-USD", 0.11, 5, 1, 1),
    ("NEAR-USD", 5.0, 4, 2, 1),
    ("APT-USD", 9.0, 4, 2, 1),
    ("ARB-USD", 0.90, 5, 1, 1),
    ("OP-USD", 2.2, 4, 2, 1),
    ("FIL-USD", 5.0, 4, 2, 1),
    ("ETC-USD", 25.0, 3, 4, 1),
    ("AAVE-USD", 150.0, 2, 4, 1),
    ("MKR-USD", 2_400.0, 2, 5, 5),
    ("ICP-USD", 10.0, 4, 3, 1),
    ("INJ-USD", 25.0, 3, 3, 1),
    ("SUI-USD", 1.8, 4, 1, 1),
    ("SEI-USD", 0.45, 5, 1, 1),
    ("HBAR-USD", 0.08, 6, 0, 1),
    ("SHIB-USD", 0.000_022, 9, 0, 1),
    ("PEPE-USD", 0.000_009_5, 10, 0, 1),
    ("RENDER-USD", 7.0, 4, 2, 1),
    ("GRT-USD", 0.20, 5, 1, 1),
    ("ALGO-USD", 0.18, 5, 1, 1),
    ("SAND-USD", 0.40, 5, 1, 1),
    ("MANA-USD", 0.40, 5, 1, 1),
    ("AXS-USD", 7.0, 4, 2, 1),
    ("CRV-USD", 0.35, 5, 1, 1),
    ("LDO-USD", 2.0, 4, 2, 1),
    ("SNX-USD", 2.5, 4, 2, 1),
    ("COMP-USD", 55.0, 3, 3, 1),
    ("XTZ-USD", 0.90, 5, 1, 1),
    ("EOS-USD", 0.70, 5, 1, 1),
    ("FET-USD", 1.5, 4, 1, 1),
    ("IMX-USD", 1.6, 4, 1, 1),
    ("STX-USD", 1.9, 4, 1, 1),
    ("TIA-USD", 8.0, 4, 2, 1),
    ("RUNE-USD", 5.0, 4, 2, 1),
    ("KAS-USD", 0.15, 5, 1, 1),
    ("BTC-EUR", 60_000.0, 2, 6, 1),
    ("ETH-EUR", 3_150.0, 2, 6, 1),
    ("BTC-USDT", 65_010.0, 2, 6, 1),
    ("ETH-USDT", 3_401.0, 2, 6, 1),
    ("SOL-USDT", 150.1, 2, 4, 1),
    ("ETH-BTC", 0.0523, 6, 4, 1),
    ("SOL-EUR", 139.0, 2, 4, 1),
    ("BTC-GBP", 51_000.0, 2, 6, 1),
    ("XRP-EUR", 0.55, 5, 2, 1),
    ("DOGE-EUR", 0.14, 5, 1, 1),
    ("LINK-ETH", 0.0044, 7, 2, 1),
];

/// SplitMix64: a tiny, seedless mixer used to derive generated symbols from their index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform float in [0, 1) from 53 bits of `h`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn generated_name(h: u64) -> String {
    const CONS: &[u8] = b"BCDFGHKLMNPRSTVXZ";
    const VOW: &[u8] = b"AEIOU";
    let pick = |set: &[u8], x: u64| set[(x % set.len() as u64) as usize] as char;
    let mut name = String::with_capacity(10);
    let syllables = 2 + (h % 2);
    let mut x = h >> 1;
    for _ in 0..syllables {
        name.push(pick(CONS, x));
        x /= CONS.len() as u64;
        name.push(pick(VOW, x));
        x /= VOW.len() as u64;
    }
    if x % 3 == 0 {
        name.push(pick(CONS, x >> 2));
    }
    let quote = match (h >> 56) % 8 {
        0 => "-USDT",
        1 => "-EUR",
        _ => "-USD",
    };
    name.push_str(quote);
    name
}

fn generated(index: usize, taken: &mut HashSet<String>) -> SymbolDef {
    let mut attempt = 0u64;
    let (name, h) = loop {
        let h = mix((index as u64) << 8 | attempt);
        let name = generated_name(h);
        if taken.insert(name.clone()) {
            break (name, h);
        }
        attempt += 1;
    };
    let h2 = mix(h);
    // Log-uniform price between 0.01 and 2000.
    let price = 10f64.powf(-2.0 + unit(h2) * 5.3);
    let tick: i64 = match h2 % 10 {
        0 => 5,
        1 => 10,
        2 => 2,
        _ => 1,
    };
    let mut px_decimals = 2u8;
    while px_decimals < 10 && price * 10f64.powi(i32::from(px_decimals)) / (tick as f64) < MIN_TICKS
    {
        px_decimals += 1;
    }
    let qty_decimals = if price >= 1_000.0 {
        5
    } else if price >= 10.0 {
        3
    } else if price >= 0.1 {
        1
    } else {
        0
    };
    SymbolDef {
        spec: SymbolSpec {
            symbol: name,
            px_decimals,
            qty_decimals,
            tick,
        },
        price,
    }
}

/// The first `n` symbols of the universe. Depends on `n` only.
pub(crate) fn universe(n: usize) -> Vec<SymbolDef> {
    let mut taken: HashSet<String> = KNOWN.iter().map(|k| k.0.to_string()).collect();
    (0..n)
        .map(|i| match KNOWN.get(i) {
            Some(&(name, price, px_decimals, qty_decimals, tick)) => SymbolDef {
                spec: SymbolSpec {
                    symbol: name.to_string(),
                    px_decimals,
                    qty_decimals,
                    tick,
                },
                price,
            },
            None => generated(i, &mut taken),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_is_unique_plausible_and_stable() {
        let u = universe(2_000);
        let names: HashSet<&str> = u.iter().map(|d| d.spec.symbol.as_str()).collect();
        assert_eq!(names.len(), u.len());
        assert_eq!(u[0].spec.symbol, "BTC-USD");
        assert_eq!(u[1].spec.symbol, "ETH-USD");
        for d in &u {
            let s = &d.spec;
            assert!(
                s.symbol
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                s.symbol
            );
            assert!(s.tick >= 1);
            assert!(s.px_decimals <= 10 && s.qty_decimals <= 8);
            let ticks = d.price * 10f64.powi(i32::from(s.px_decimals)) / s.tick as f64;
            assert!(
                ticks >= MIN_TICKS * 0.99,
                "{} has only {ticks} ticks",
                s.symbol
            );
        }
        let again = universe(2_000);
        assert!(u.iter().zip(&again).all(|(a, b)| a.spec == b.spec));
    }
}
