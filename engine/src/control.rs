//! Client control messages (JSON text frames) and the server's replies, sans-IO.
//!
//! Control traffic is rare next to data, so it is parsed with serde_json; what matters here is
//! that every bad request becomes an answer with a stable machine-readable code.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::book::{DEPTHS, depth_index};
use crate::wire::SymbolMeta;

/// The depth a subscription gets when it names none.
pub const DEFAULT_DEPTH: u16 = 25;

/// Which symbols a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolSel {
    /// `["*"]`: every symbol.
    All,
    /// The named symbols, in request order, without duplicates.
    List(Vec<String>),
}

/// Channels of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// Book snapshot and deltas.
    pub book: bool,
    /// Trades.
    pub trades: bool,
}

/// A well-formed client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Start (or change) subscriptions.
    Subscribe {
        /// Echoed in the reply.
        id: Value,
        /// Symbols.
        symbols: SymbolSel,
        /// Channels (default both).
        channels: Channels,
        /// Index into `book::DEPTHS`.
        depth_idx: usize,
    },
    /// Stop subscriptions.
    Unsubscribe {
        /// Echoed in the reply.
        id: Value,
        /// Symbols.
        symbols: SymbolSel,
    },
    /// List the symbols.
    Symbols {
        /// Echoed in the reply.
        id: Value,
    },
    /// Liveness check.
    Ping {
        /// Echoed in the reply.
        id: Value,
    },
}

/// Stable error codes of `{"op":"error"}` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The text is not JSON, or not an object.
    BadJson,
    /// `op` missing or not one the server knows.
    UnknownOp,
    /// A field has the wrong type or value.
    BadRequest,
    /// `depth` is not one of 1, 10, 25, 100, 0.
    InvalidDepth,
    /// A channel other than `book` and `trades`.
    InvalidChannel,
    /// A symbol the feed does not list.
    UnknownSymbol,
    /// The connection would pass its subscription limit.
    TooManySubscriptions,
    /// Control messages come too fast.
    RateLimited,
    /// The feed has not announced its symbols yet.
    NotReady,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::UnknownOp => "unknown_op",
            Self::BadRequest => "bad_request",
            Self::InvalidDepth => "invalid_depth",
            Self::InvalidChannel => "invalid_channel",
            Self::UnknownSymbol => "unknown_symbol",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::RateLimited => "rate_limited",
            Self::NotReady => "not_ready",
        }
    }
}

/// A request the server answers with an error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RequestError {
    /// The request's id when it could be read.
    pub id: Value,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl RequestError {
    /// An error for request `id`.
    pub fn new(id: Value, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }

    /// The `{"op":"error"}` reply.
    pub fn to_json(&self) -> Vec<u8> {
        error_reply(&self.id, self.code, &self.message)
    }
}

#[derive(Deserialize)]
struct Raw {
    op: Option<Value>,
    #[serde(default)]
    id: Value,
    symbols: Option<Value>,
    channels: Option<Value>,
    depth: Option<Value>,
}

/// Most symbols one request may name (a longer list is refused as a bad request).
pub const MAX_SYMBOLS_PER_REQUEST: usize = 10_000;

/// Parses one control message.
///
/// # Errors
/// A [`RequestError`] carrying the id (when readable) and the code to answer with.
pub fn parse_request(text: &[u8]) -> Result<Request, RequestError> {
    let raw: Raw = serde_json::from_slice(text)
        .map_err(|e| RequestError::new(Value::Null, ErrorCode::BadJson, e.to_string()))?;
    let id = raw.id;
    if !(id.is_null() || id.is_number() || id.is_string()) {
        return Err(RequestError::new(
            Value::Null,
            ErrorCode::BadRequest,
            "id must be a number or a string",
        ));
    }
    let op = match raw.op {
        Some(Value::String(op)) => op,
        Some(_) => {
            return Err(RequestError::new(
                id,
                ErrorCode::UnknownOp,
                "op must be a string",
            ));
        }
        None => return Err(RequestError::new(id, ErrorCode::UnknownOp, "missing op")),
    };
    match op.as_str() {
        "subscribe" => {
            let symbols = symbol_sel(&id, raw.symbols)?;
            let channels = channels(&id, raw.channels)?;
            let depth = match raw.depth {
                None | Some(Value::Null) => DEFAULT_DEPTH,
                Some(v) => v
                    .as_u64()
                    .and_then(|d| u16::try_from(d).ok())
                    .ok_or_else(|| bad_depth(&id))?,
            };
            let depth_idx = depth_index(depth).ok_or_else(|| bad_depth(&id))?;
            Ok(Request::Subscribe {
                id,
                symbols,
                channels,
                depth_idx,
            })
        }
        "unsubscribe" => {
            let symbols = symbol_sel(&id, raw.symbols)?;
            Ok(Request::Unsubscribe { id, symbols })
        }
        "symbols" => Ok(Request::Symbols { id }),
        "ping" => Ok(Request::Ping { id }),
        other => Err(RequestError::new(
            id,
            ErrorCode::UnknownOp,
            format!("unknown op {:?}", truncate(other, 64)),
        )),
    }
}

fn bad_depth(id: &Value) -> RequestError {
    RequestError::new(
        id.clone(),
        ErrorCode::InvalidDepth,
        format!("depth must be one of {DEPTHS:?} (0 = whole book)"),
    )
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn symbol_sel(id: &Value, v: Option<Value>) -> Result<SymbolSel, RequestError> {
    let bad = |m: &str| RequestError::new(id.clone(), ErrorCode::BadRequest, m);
    let Some(Value::Array(items)) = v else {
        return Err(bad("symbols must be an array of strings"));
    };
    if items.is_empty() {
        return Err(bad("symbols must not be empty"));
    }
    if items.len() > MAX_SYMBOLS_PER_REQUEST {
        return Err(bad("too many symbols in one request"));
    }
    let mut list: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err(bad("symbols must be an array of strings"));
        };
        if s == "*" {
            return Ok(SymbolSel::All);
        }
        if !list.contains(&s) {
            list.push(s);
        }
    }
    Ok(SymbolSel::List(list))
}

fn channels(id: &Value, v: Option<Value>) -> Result<Channels, RequestError> {
    let Some(v) = v else {
        return Ok(Channels {
            book: true,
            trades: true,
        });
    };
    let Value::Array(items) = v else {
        return Err(RequestError::new(
            id.clone(),
            ErrorCode::BadRequest,
            "channels must be an array of strings",
        ));
    };
    let mut c = Channels {
        book: false,
        trades: false,
    };
    for item in items {
        match item.as_str() {
            Some("book") => c.book = true,
            Some("trades") => c.trades = true,
            _ => {
                return Err(RequestError::new(
                    id.clone(),
                    ErrorCode::InvalidChannel,
                    "channels are \"book\" and \"trades\"",
                ));
            }
        }
    }
    if !c.book && !c.trades {
        return Err(RequestError::new(
            id.clone(),
            ErrorCode::InvalidChannel,
            "channels must not be empty",
        ));
    }
    Ok(c)
}

fn symbol_json(m: &SymbolMeta) -> Value {
    json!({
        "symbol": m.symbol,
        "sid": m.sid,
        "px_decimals": m.px_decimals,
        "qty_decimals": m.qty_decimals,
    })
}

fn to_vec(v: &Value) -> Vec<u8> {
    // Serialising a Value built here cannot fail (no non-string keys, no custom Serialize).
    serde_json::to_vec(v).unwrap_or_default()
}

/// `{"op":"subscribed","id":..,"symbols":[..]}`.
pub fn subscribed_reply(id: &Value, symbols: &[&SymbolMeta]) -> Vec<u8> {
    let list: Vec<Value> = symbols.iter().map(|m| symbol_json(m)).collect();
    to_vec(&json!({"op": "subscribed", "id": id, "symbols": list}))
}

/// `{"op":"unsubscribed","id":..,"symbols":["BTC-USD",..]}`.
pub fn unsubscribed_reply(id: &Value, symbols: &[&str]) -> Vec<u8> {
    to_vec(&json!({"op": "unsubscribed", "id": id, "symbols": symbols}))
}

/// `{"op":"symbols","id":..,"symbols":[..]}`.
pub fn symbols_reply(id: &Value, symbols: &[SymbolMeta]) -> Vec<u8> {
    let list: Vec<Value> = symbols.iter().map(symbol_json).collect();
    to_vec(&json!({"op": "symbols", "id": id, "symbols": list}))
}

/// `{"op":"pong","id":..}`.
pub fn pong_reply(id: &Value) -> Vec<u8> {
    to_vec(&json!({"op": "pong", "id": id}))
}

/// `{"op":"error","id":..,"code":..,"message":..}`.
pub fn error_reply(id: &Value, code: ErrorCode, message: &str) -> Vec<u8> {
    to_vec(&json!({"op": "error", "id": id, "code": code.as_str(), "message": message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> RequestError {
        parse_request(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_the_four_ops() {
        let r = parse_request(
            br#"{"op":"subscribe","id":1,"symbols":["BTC-USD","ETH-USD","BTC-USD"],"channels":["book"],"depth":10}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Subscribe {
                id: json!(1),
                symbols: SymbolSel::List(vec!["BTC-USD".into(), "ETH-USD".into()]),
                channels: Channels {
                    book: true,
                    trades: false
                },
                depth_idx: depth_index(10).unwrap(),
            }
        );
        let r = parse_request(br#"{"op":"subscribe","id":"a","symbols":["*"]}"#).unwrap();
        let Request::Subscribe {
            symbols,
            channels,
            depth_idx,
            ..
        } = r
        else {
            panic!()
        };
        assert_eq!(symbols, SymbolSel::All);
        assert!(channels.book && channels.trades);
        assert_eq!(DEPTHS[depth_idx], DEFAULT_DEPTH);
        assert_eq!(
            parse_request(br#"{"op":"unsubscribe","id":2,"symbols":["X"]}"#).unwrap(),
            Request::Unsubscribe {
                id: json!(2),
                symbols: SymbolSel::List(vec!["X".into()])
            }
        );
        assert_eq!(
            parse_request(br#"{"op":"symbols","id":3}"#).unwrap(),
            Request::Symbols { id: json!(3) }
        );
        assert_eq!(
            parse_request(br#"{"op":"ping"}"#).unwrap(),
            Request::Ping { id: Value::Null }
        );
    }

    #[test]
    fn every_bad_request_has_a_code_and_keeps_the_id() {
        assert_eq!(err("not json").code, ErrorCode::BadJson);
        assert_eq!(err("[1,2]").code, ErrorCode::BadJson);
        assert_eq!(err(r#"{"id":5}"#).code, ErrorCode::UnknownOp);
        let e = err(r#"{"op":"fly","id":5}"#);
        assert_eq!((e.code, e.id.clone()), (ErrorCode::UnknownOp, json!(5)));
        assert_eq!(
            err(r#"{"op":"subscribe","id":1}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"op":"subscribe","id":1,"symbols":[]}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"op":"subscribe","id":1,"symbols":[7]}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"op":"subscribe","id":1,"symbols":["A"],"depth":7}"#).code,
            ErrorCode::InvalidDepth
        );
        assert_eq!(
            err(r#"{"op":"subscribe","id":1,"symbols":["A"],"depth":-1}"#).code,
            ErrorCode::InvalidDepth
        );
        assert_eq!(
            err(r#"{"op":"subscribe","id":1,"symbols":["A"],"channels":["x"]}"#).code,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            err(r#"{"op":"subscribe","id":1,"symbols":["A"],"channels":[]}"#).code,
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            err(r#"{"op":"ping","id":{"a":1}}"#).code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn replies_are_json() {
        let m = SymbolMeta {
            symbol: "BTC-USD".into(),
            sid: 7,
            px_decimals: 2,
            qty_decimals: 6,
        };
        let v: Value = serde_json::from_slice(&subscribed_reply(&json!(1), &[&m])).unwrap();
        assert_eq!(
            v,
            json!({"op":"subscribed","id":1,"symbols":[{"symbol":"BTC-USD","sid":7,"px_decimals":2,"qty_decimals":6}]})
        );
        let v: Value =
            serde_json::from_slice(&error_reply(&json!(2), ErrorCode::UnknownSymbol, "no"))
                .unwrap();
        assert_eq!(v["code"], "unknown_symbol");
        let v: Value = serde_json::from_slice(&pong_reply(&json!("x"))).unwrap();
        assert_eq!(v, json!({"op":"pong","id":"x"}));
    }
}
