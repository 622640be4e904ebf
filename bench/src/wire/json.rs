//! `format=json` batches: one text frame, a JSON array of records with the binary
//! fields by name and prices and quantities as decimal strings.

use serde::Deserialize;

use super::{
    Body, FLAG_SNAPSHOT, KIND_DELTA, KIND_SNAPSHOT, KIND_STATUS, KIND_TRADE, Record, RecordHeader,
    SIDE_BUY, SIDE_SELL, WireError,
};

/// One JSON record as sent; which fields are required depends on `kind`.
#[derive(Debug, Deserialize)]
struct JsonRecord {
    kind: String,
    symbol: Option<String>,
    sid: Option<u32>,
    seq: Option<u64>,
    exch_ts: Option<u64>,
    recv_ts: Option<u64>,
    bids: Option<Vec<(String, String)>>,
    asks: Option<Vec<(String, String)>>,
    price: Option<String>,
    qty: Option<String>,
    trade_id: Option<u64>,
    side: Option<String>,
    code: Option<u16>,
    crc: Option<u32>,
}

/// Parses a decimal string (`"65000.10"`, `"-1.5"`, `"42"`) into an integer scaled
/// by `10^decimals`. Fewer fractional digits than `decimals` are padded; more are
/// accepted only when the extra digits are zeros. No exponent, no `+`, no spaces.
pub fn parse_decimal(value: &str, decimals: u8) -> Result<i64, WireError> {
    let err = || WireError::Decimal {
        value: value.to_owned(),
        decimals,
    };
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((_, "")) => return Err(err()),
        Some((int, frac)) => (int, frac),
        None => (digits, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return Err(err());
    }
    let wanted = usize::from(decimals);
    let (kept, extra) = frac.split_at(frac.len().min(wanted));
    if extra.bytes().any(|b| b != b'0') {
        return Err(err());
    }
    let padding = std::iter::repeat_n(b'0', wanted - kept.len());
    let mut magnitude: i64 = 0;
    for b in int.bytes().chain(kept.bytes()).chain(padding) {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .ok_or_else(err)?;
    }
    Ok(if negative { -magnitude } else { magnitude })
}

/// Decodes a `format=json` batch: a JSON array of records. `decimals` maps a
/// symbol to its `(px_decimals, qty_decimals)` from the subscribe reply; book and
/// trade records of a symbol it does not know are an error.
///
/// `kind` is `"snapshot"` (kind 1, flag bit 0), `"delta"` (2), `"trade"` (3),
/// `"status"` (4); any other kind gives a record with kind 0 and [`Body::Unknown`].
/// Known kinds need `sid`, `seq`, `exch_ts`, `recv_ts`; book records need `symbol`
/// (a missing `bids` or `asks` is an empty side); trades need `symbol`, `price`,
/// `qty`, `trade_id`, `side` (`"buy"`/`"sell"`); status records need `code`.
/// Unknown fields are ignored.
pub fn decode_json_batch(
    text: &str,
    decimals: &impl Fn(&str) -> Option<(u8, u8)>,
) -> Result<Vec<Record>, WireError> {
    let raw: Vec<JsonRecord> =
        serde_json::from_str(text).map_err(|e| WireError::Json(e.to_string()))?;
    raw.into_iter()
        .enumerate()
        .map(|(index, rec)| convert(index, rec, decimals))
        .collect()
}

fn convert(
    index: usize,
    rec: JsonRecord,
    decimals: &impl Fn(&str) -> Option<(u8, u8)>,
) -> Result<Record, WireError> {
    let missing = |field: &'static str| WireError::JsonField { index, field };
    let (kind, flags) = match rec.kind.as_str() {
        "snapshot" => (KIND_SNAPSHOT, FLAG_SNAPSHOT),
        "delta" => (KIND_DELTA, 0),
        "trade" => (KIND_TRADE, 0),
        "status" => (KIND_STATUS, 0),
        _ => {
            let header = RecordHeader {
                kind: 0,
                flags: 0,
                sid: rec.sid.unwrap_or(0),
                seq: rec.seq.unwrap_or(0),
                exch_ts: rec.exch_ts.unwrap_or(0),
                recv_ts: rec.recv_ts.unwrap_or(0),
            };
            return Ok(Record {
                header,
                body: Body::Unknown,
            });
        }
    };
    let header = RecordHeader {
        kind,
        flags,
        sid: rec.sid.ok_or(missing("sid"))?,
        seq: rec.seq.ok_or(missing("seq"))?,
        exch_ts: rec.exch_ts.ok_or(missing("exch_ts"))?,
        recv_ts: rec.recv_ts.ok_or(missing("recv_ts"))?,
    };
    let scales = || -> Result<(u8, u8), WireError> {
        let symbol = rec.symbol.as_deref().ok_or(missing("symbol"))?;
        decimals(symbol).ok_or_else(|| WireError::UnknownSymbol {
            index,
            symbol: symbol.to_owned(),
        })
    };
    let body = match kind {
        KIND_SNAPSHOT | KIND_DELTA => {
            let (px_dec, qty_dec) = scales()?;
            let side =
                |levels: &Option<Vec<(String, String)>>| -> Result<Vec<(i64, i64)>, WireError> {
                    levels
                        .iter()
                        .flatten()
                        .map(|(px, qty)| {
                            Ok((parse_decimal(px, px_dec)?, parse_decimal(qty, qty_dec)?))
                        })
                        .collect()
                };
            Body::Book {
                bids: side(&rec.bids)?,
                asks: side(&rec.asks)?,
                crc: rec.crc,
            }
        }
        KIND_TRADE => {
            let (px_dec, qty_dec) = scales()?;
            let taker_side = match rec.side.as_deref() {
                Some("buy") => SIDE_BUY,
                Some("sell") => SIDE_SELL,
                _ => return Err(missing("side")),
            };
            Body::Trade {
                px: parse_decimal(rec.price.as_deref().ok_or(missing("price"))?, px_dec)?,
                qty: parse_decimal(rec.qty.as_deref().ok_or(missing("qty"))?, qty_dec)?,
                trade_id: rec.trade_id.ok_or(missing("trade_id"))?,
                taker_side,
            }
        }
        _ => Body::Status {
            code: rec.code.ok_or(missing("code"))?,
        },
    };
    Ok(Record { header, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimals(symbol: &str) -> Option<(u8, u8)> {
        match symbol {
            "BTC-USD" => Some((2, 6)),
            "ETH-USD" => Some((2, 4)),
            _ => None,
        }
    }

    #[test]
    fn parses_decimals() {
        assert_eq!(parse_decimal("65000.10", 2), Ok(6_500_010));
        assert_eq!(parse_decimal("1.5", 6), Ok(1_500_000));
        assert_eq!(parse_decimal("-0.25", 2), Ok(-25));
        assert_eq!(parse_decimal("42", 0), Ok(42));
        assert_eq!(parse_decimal("7", 3), Ok(7_000));
        assert_eq!(parse_decimal("1.500000", 2), Ok(150));
        assert_eq!(parse_decimal("0.000000", 6), Ok(0));
        for bad in [
            "1.234", "abc", "", ".", "1.", ".5", "1e5", "+1", "1,5", " 1", "--1", "1.2.3",
        ] {
            assert!(parse_decimal(bad, 2).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_decimal("99999999999999999999", 0),
            Err(WireError::Decimal {
                value: String::from("99999999999999999999"),
                decimals: 0
            })
        );
        assert!(parse_decimal("92233720368547758.08", 2).is_err());
        assert_eq!(parse_decimal("92233720368547758.07", 2), Ok(i64::MAX));
    }

    #[test]
    fn decodes_every_kind() {
        let text = r#"[
          {"kind":"snapshot","symbol":"BTC-USD","sid":7,"seq":100,"exch_ts":1,"recv_ts":2,
           "bids":[["65000.10","1.500000"],["65000.00","2"]],"asks":[["65000.20","0.25"]]},
          {"kind":"delta","symbol":"BTC-USD","sid":7,"seq":101,"exch_ts":3,"recv_ts":4,
           "bids":[["65000.10","0"]],"asks":[]},
          {"kind":"delta","symbol":"ETH-USD","sid":8,"seq":5,"exch_ts":3,"recv_ts":4,"asks":[["3000.5","1.25"]]},
          {"kind":"trade","symbol":"BTC-USD","sid":7,"seq":9,"exch_ts":5,"recv_ts":6,
           "price":"65000.20","qty":"0.010000","trade_id":42,"side":"sell","extra":true},
          {"kind":"status","symbol":"BTC-USD","sid":7,"seq":0,"exch_ts":7,"recv_ts":8,"code":1}
        ]"#;
        let recs = decode_json_batch(text, &decimals);
        let h = |kind, flags, sid, seq, exch_ts, recv_ts| RecordHeader {
            kind,
            flags,
            sid,
            seq,
            exch_ts,
            recv_ts,
        };
        assert_eq!(
            recs,
            Ok(vec![
                Record {
                    header: h(KIND_SNAPSHOT, FLAG_SNAPSHOT, 7, 100, 1, 2),
                    body: Body::Book {
                        bids: vec![(6_500_010, 1_500_000), (6_500_000, 2_000_000)],
                        asks: vec![(6_500_020, 250_000)],
                        crc: None,
                    },
                },
                Record {
                    header: h(KIND_DELTA, 0, 7, 101, 3, 4),
                    body: Body::Book {
                        bids: vec![(6_500_010, 0)],
                        asks: vec![],
                        crc: None,
                    },
                },
                Record {
                    header: h(KIND_DELTA, 0, 8, 5, 3, 4),
                    body: Body::Book {
                        bids: vec![],
                        asks: vec![(300_050, 12_500)],
                        crc: None,
                    },
                },
                Record {
                    header: h(KIND_TRADE, 0, 7, 9, 5, 6),
                    body: Body::Trade {
                        px: 6_500_020,
                        qty: 10_000,
                        trade_id: 42,
                        taker_side: SIDE_SELL
                    },
                },
                Record {
                    header: h(KIND_STATUS, 0, 7, 0, 7, 8),
                    body: Body::Status { code: 1 },
                },
            ])
        );
    }

    #[test]
    fn unknown_kind_is_kept_as_unknown() {
        let recs = decode_json_batch(r#"[{"kind":"funding","sid":3,"rate":"0.01"}]"#, &decimals);
        let recs = recs.unwrap_or_default();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].header.kind, 0);
        assert_eq!(recs[0].header.sid, 3);
        assert_eq!(recs[0].body, Body::Unknown);
    }

    #[test]
    fn rejects_invalid_batches() {
        assert!(matches!(
            decode_json_batch("{", &decimals),
            Err(WireError::Json(_))
        ));
        assert!(matches!(
            decode_json_batch(r#"{"kind":"delta"}"#, &decimals),
            Err(WireError::Json(_))
        ));
        assert!(matches!(
            decode_json_batch(r#"[{"sid":1}]"#, &decimals),
            Err(WireError::Json(_))
        ));
        assert_eq!(
            decode_json_batch(
                r#"[{"kind":"status","sid":1,"seq":0,"exch_ts":1,"recv_ts":1,"code":1},
                    {"kind":"delta","symbol":"BTC-USD","seq":1,"exch_ts":1,"recv_ts":1}]"#,
                &decimals
            ),
            Err(WireError::JsonField {
                index: 1,
                field: "sid"
            })
        );
        assert_eq!(
            decode_json_batch(
                r#"[{"kind":"delta","symbol":"XRP-USD","sid":1,"seq":1,"exch_ts":1,"recv_ts":1}]"#,
                &decimals
            ),
            Err(WireError::UnknownSymbol {
                index: 0,
                symbol: String::from("XRP-USD")
            })
        );
        assert_eq!(
            decode_json_batch(
                r#"[{"kind":"trade","symbol":"BTC-USD","sid":1,"seq":1,"exch_ts":1,"recv_ts":1,
                     "price":"1","qty":"1","trade_id":1,"side":"up"}]"#,
                &decimals
            ),
            Err(WireError::JsonField {
                index: 0,
                field: "side"
            })
        );
        assert_eq!(
            decode_json_batch(
                r#"[{"kind":"delta","symbol":"BTC-USD","sid":1,"seq":1,"exch_ts":1,"recv_ts":1,
                     "bids":[["1.001","1"]]}]"#,
                &decimals
            ),
            Err(WireError::Decimal {
                value: String::from("1.001"),
                decimals: 2
            })
        );
        assert_eq!(
            decode_json_batch(
                r#"[{"kind":"status","sid":1,"seq":0,"exch_ts":1,"recv_ts":1}]"#,
                &decimals
            ),
            Err(WireError::JsonField {
                index: 0,
                field: "code"
            })
        );
    }
}
