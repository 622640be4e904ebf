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
        /// Most book messages per second per stream the client asks for (1..=1000): its book
        /// streams are then conflated snapshots (protocol 1.1 §3.3).
        max_hz: Option<u16>,
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
    /// Replace the connection's token (JWTs, protocol §3.5) before it expires.
    Refresh {
        /// Echoed in the reply.
        id: Value,
        /// The new token.
        token: String,
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
    /// A subscribe's `resume` is malformed (protocol 1.1 §3.1).
    BadResume,
    /// `max_hz` is not an integer in 1..=1000 (protocol 1.1 §3.3).
    InvalidMaxHz,
    /// The connection's token does not entitle it to a symbol the request names (§3.5).
    NotEntitled,
    /// A `refresh` token that does not verify, has expired, or is not wanted here (§3.5).
    InvalidToken,
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
            Self::BadResume => "bad_resume",
            Self::InvalidMaxHz => "invalid_max_hz",
            Self::NotEntitled => "not_entitled",
            Self::InvalidToken => "invalid_token",
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
    resume: Option<Value>,
    max_hz: Option<Value>,
    token: Option<Value>,
}

/// Largest `max_hz` a subscribe may ask for.
pub const MAX_HZ: u64 = 1000;

/// Most symbols one request may name (a longer list is refused as a bad request).
pub const MAX_SYMBOLS_PER_REQUEST: usize = 10_000;

/// Parses one control message.
///
/// # Errors
/// A [`RequestError`] carrying the id (when readable) and the code to answer with.
pub fn parse_request(text: &[u8]) -> Result<Request, RequestError> {
    parse_raw(raw(text)?)
}

/// The positions a client already holds, from a subscribe's `resume` (protocol 1.1 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The epoch the positions belong to, as the client sent it (compare it with the server's
    /// epoch as a string: any other value just does not match).
    pub epoch: String,
    /// Per symbol, in request order, each symbol once.
    pub streams: Vec<ResumeStream>,
}

/// One symbol's positions in a [`Resume`]: the `seq` of the last record the client applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeStream {
    /// Symbol name (named by the subscribe, or any when it subscribes `*`).
    pub symbol: String,
    /// Position in the book stream at the subscribe's depth.
    pub book: Option<u64>,
    /// Position in the trades stream.
    pub trades: Option<u64>,
}

/// Longest `resume.epoch` accepted.
pub const MAX_EPOCH_LEN: usize = 64;

/// [`parse_request`] for protocol 1.1: also reads and checks a subscribe's `resume` (`None` when
/// absent or `null`; other requests never carry one).
///
/// # Errors
/// As [`parse_request`], and [`ErrorCode::BadResume`] for a malformed `resume`: not an object,
/// `epoch` not a string (of at most [`MAX_EPOCH_LEN`] bytes), `streams` not an object, a
/// position that is not an object of `book` and/or `trades` non-negative integers, a symbol the
/// subscribe does not name, or a channel it does not subscribe.
pub fn parse_request_v11(text: &[u8]) -> Result<(Request, Option<Resume>), RequestError> {
    let mut raw = raw(text)?;
    let resume = raw.resume.take();
    let request = parse_raw(raw)?;
    let resume = match (&request, resume) {
        (_, None | Some(Value::Null)) => None,
        (
            Request::Subscribe {
                id,
                symbols,
                channels,
                ..
            },
            Some(v),
        ) => Some(parse_resume(id, symbols, *channels, v)?),
        // Only a subscribe resumes; the field is ignored elsewhere, as any unknown field.
        (_, Some(_)) => None,
    };
    Ok((request, resume))
}

fn parse_resume(
    id: &Value,
    symbols: &SymbolSel,
    channels: Channels,
    v: Value,
) -> Result<Resume, RequestError> {
    let bad = |m: String| RequestError::new(id.clone(), ErrorCode::BadResume, m);
    let Value::Object(mut obj) = v else {
        return Err(bad("resume must be an object".into()));
    };
    let epoch = match obj.remove("epoch") {
        Some(Value::String(e)) if e.len() <= MAX_EPOCH_LEN => e,
        Some(Value::String(_)) => return Err(bad("resume.epoch is too long".into())),
        _ => return Err(bad("resume.epoch must be a string".into())),
    };
    let Some(Value::Object(streams)) = obj.remove("streams") else {
        return Err(bad("resume.streams must be an object".into()));
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(format!("unknown field resume.{}", truncate(k, 64))));
    }
    if streams.len() > MAX_SYMBOLS_PER_REQUEST {
        return Err(bad("too many symbols in resume.streams".into()));
    }
    let mut out = Vec::with_capacity(streams.len());
    for (symbol, pos) in streams {
        let name = truncate(&symbol, 64).to_owned();
        if let SymbolSel::List(list) = symbols {
            if !list.contains(&symbol) {
                return Err(bad(format!(
                    "resume names {name:?}, which the subscribe does not"
                )));
            }
        }
        let Value::Object(pos) = pos else {
            return Err(bad(format!("resume.streams.{name} must be an object")));
        };
        let mut s = ResumeStream {
            symbol,
            book: None,
            trades: None,
        };
        for (k, v) in pos {
            let seq = v.as_u64().ok_or_else(|| {
                bad(format!(
                    "resume.streams.{name}.{} must be a non-negative integer",
                    truncate(&k, 16)
                ))
            })?;
            match k.as_str() {
                "book" if channels.book => s.book = Some(seq),
                "trades" if channels.trades => s.trades = Some(seq),
                "book" | "trades" => {
                    return Err(bad(format!(
                        "resume.streams.{name}.{k}: the subscribe does not ask for {k}"
                    )));
                }
                _ => {
                    return Err(bad(format!(
                        "resume.streams.{name}: unknown stream {:?} (book, trades)",
                        truncate(&k, 16)
                    )));
                }
            }
        }
        if s.book.is_none() && s.trades.is_none() {
            return Err(bad(format!("resume.streams.{name} names no stream")));
        }
        out.push(s);
    }
    Ok(Resume {
        epoch,
        streams: out,
    })
}

fn raw(text: &[u8]) -> Result<Raw, RequestError> {
    serde_json::from_slice(text)
        .map_err(|e| RequestError::new(Value::Null, ErrorCode::BadJson, e.to_string()))
}

fn parse_raw(raw: Raw) -> Result<Request, RequestError> {
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
            let max_hz = match raw.max_hz {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|hz| (1..=MAX_HZ).contains(hz))
                        .map(|hz| hz as u16)
                        .ok_or_else(|| {
                            RequestError::new(
                                id.clone(),
                                ErrorCode::InvalidMaxHz,
                                format!("max_hz must be an integer in 1..={MAX_HZ}"),
                            )
                        })?,
                ),
            };
            Ok(Request::Subscribe {
                id,
                symbols,
                channels,
                depth_idx,
                max_hz,
            })
        }
        "unsubscribe" => {
            let symbols = symbol_sel(&id, raw.symbols)?;
            Ok(Request::Unsubscribe { id, symbols })
        }
        "symbols" => Ok(Request::Symbols { id }),
        "ping" => Ok(Request::Ping { id }),
        "refresh" => match raw.token {
            Some(Value::String(token)) if !token.is_empty() => Ok(Request::Refresh { id, token }),
            _ => Err(RequestError::new(
                id,
                ErrorCode::BadRequest,
                "refresh needs a token (a non-empty string)",
            )),
        },
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

/// `{"op":"conflating","symbols":[..],"max_hz":M}`: the connection's book streams of these
/// symbols are conflated snapshots at `M` per second until `live` (protocol 1.1 §3.3).
pub fn conflating_notice(symbols: &[&str], max_hz: u16) -> Vec<u8> {
    to_vec(&json!({"op": "conflating", "symbols": symbols, "max_hz": max_hz}))
}

/// `{"op":"live","symbols":[..]}`: these book streams are deltas again, from a fresh snapshot.
pub fn live_notice(symbols: &[&str]) -> Vec<u8> {
    to_vec(&json!({"op": "live", "symbols": symbols}))
}

/// Protocol 1.1 `subscribed` reply:
/// `{"op":"subscribed","id":..,"epoch":"3f9c0a17","symbols":[{..,"recovered":true},..]}`.
/// `recovered` is given (`Some`) only for the symbols the subscribe's `resume` named.
pub fn subscribed_reply_v11(
    id: &Value,
    epoch: &str,
    symbols: &[(&SymbolMeta, Option<bool>)],
) -> Vec<u8> {
    subscribed_reply_hz(id, epoch, symbols, None)
}

/// [`subscribed_reply_v11`] with the `max_hz` granted per symbol (protocol 1.1 §3.3), when one
/// was asked for: `{"op":"subscribed",..,"symbols":[{..,"max_hz":5},..]}`.
pub fn subscribed_reply_hz(
    id: &Value,
    epoch: &str,
    symbols: &[(&SymbolMeta, Option<bool>)],
    max_hz: Option<u16>,
) -> Vec<u8> {
    let list: Vec<Value> = symbols
        .iter()
        .map(|(m, recovered)| {
            let mut v = symbol_json(m);
            if let Value::Object(o) = &mut v {
                if let Some(r) = recovered {
                    o.insert("recovered".into(), Value::Bool(*r));
                }
                if let Some(hz) = max_hz {
                    o.insert("max_hz".into(), Value::from(hz));
                }
            }
            v
        })
        .collect();
    to_vec(&json!({"op": "subscribed", "id": id, "epoch": epoch, "symbols": list}))
}

/// `{"op":"unsubscribed","id":..,"symbols":["BTC-USD",..]}`.
pub fn unsubscribed_reply(id: &Value, symbols: &[&str]) -> Vec<u8> {
    to_vec(&json!({"op": "unsubscribed", "id": id, "symbols": symbols}))
}

/// `{"op":"symbols","id":..,"symbols":[..]}`.
pub fn symbols_reply<'a>(id: &Value, symbols: impl IntoIterator<Item = &'a SymbolMeta>) -> Vec<u8> {
    let list: Vec<Value> = symbols.into_iter().map(symbol_json).collect();
    to_vec(&json!({"op": "symbols", "id": id, "symbols": list}))
}

/// `{"op":"pong","id":..}`.
pub fn pong_reply(id: &Value) -> Vec<u8> {
    to_vec(&json!({"op": "pong", "id": id}))
}

/// `{"op":"refreshed","id":..,"exp":..}`, with `"dropped"` naming the subscriptions the new
/// token no longer covers (when there are any).
pub fn refreshed_reply(id: &Value, exp: u64, dropped: &[String]) -> Vec<u8> {
    if dropped.is_empty() {
        to_vec(&json!({"op": "refreshed", "id": id, "exp": exp}))
    } else {
        to_vec(&json!({"op": "refreshed", "id": id, "exp": exp, "dropped": dropped}))
    }
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
                max_hz: None,
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
    fn max_hz_is_parsed_and_checked() {
        let r = parse_request(br#"{"op":"subscribe","id":1,"symbols":["A"],"max_hz":5}"#).unwrap();
        assert!(matches!(
            r,
            Request::Subscribe {
                max_hz: Some(5),
                ..
            }
        ));
        let r =
            parse_request(br#"{"op":"subscribe","id":1,"symbols":["A"],"max_hz":null}"#).unwrap();
        assert!(matches!(r, Request::Subscribe { max_hz: None, .. }));
        for bad in ["0", "1001", "2.5", "\"5\"", "-1"] {
            let text = format!(r#"{{"op":"subscribe","id":9,"symbols":["A"],"max_hz":{bad}}}"#);
            let e = err(&text);
            assert_eq!((e.code, e.id), (ErrorCode::InvalidMaxHz, json!(9)), "{bad}");
        }
        let m = SymbolMeta {
            symbol: "A".into(),
            sid: 3,
            px_decimals: 2,
            qty_decimals: 4,
        };
        let v: Value = serde_json::from_slice(&subscribed_reply_hz(
            &json!(1),
            "00000001",
            &[(&m, None)],
            Some(5),
        ))
        .unwrap();
        assert_eq!(v["symbols"][0]["max_hz"], json!(5));
        let v: Value = serde_json::from_slice(&subscribed_reply_hz(
            &json!(1),
            "00000001",
            &[(&m, None)],
            None,
        ))
        .unwrap();
        assert!(v["symbols"][0].get("max_hz").is_none());
        let v: Value = serde_json::from_slice(&conflating_notice(&["A"], 5)).unwrap();
        assert_eq!(v, json!({"op":"conflating","symbols":["A"],"max_hz":5}));
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

    fn resume_err(text: &str) -> RequestError {
        parse_request_v11(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_resume() {
        let (r, resume) = parse_request_v11(
            br#"{"op":"subscribe","id":7,"symbols":["BTC-USD","ETH-USD"],"depth":10,
                "resume":{"epoch":"3f9c0a17","streams":{"BTC-USD":{"book":1234,"trades":567},"ETH-USD":{"book":99}}}}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::Subscribe { .. }));
        assert_eq!(
            resume,
            Some(Resume {
                epoch: "3f9c0a17".into(),
                streams: vec![
                    ResumeStream {
                        symbol: "BTC-USD".into(),
                        book: Some(1234),
                        trades: Some(567)
                    },
                    ResumeStream {
                        symbol: "ETH-USD".into(),
                        book: Some(99),
                        trades: None
                    },
                ],
            })
        );
        // Absent or null: no resume; "*" lets resume name any symbol; other ops ignore it.
        let (_, none) = parse_request_v11(br#"{"op":"subscribe","symbols":["A"]}"#).unwrap();
        assert_eq!(none, None);
        let (_, none) =
            parse_request_v11(br#"{"op":"subscribe","symbols":["A"],"resume":null}"#).unwrap();
        assert_eq!(none, None);
        let (_, some) = parse_request_v11(
            br#"{"op":"subscribe","symbols":["*"],"resume":{"epoch":"x","streams":{"Z":{"trades":0}}}}"#,
        )
        .unwrap();
        assert_eq!(some.unwrap().streams[0].trades, Some(0));
        let (r, none) = parse_request_v11(br#"{"op":"ping","id":1,"resume":5}"#).unwrap();
        assert_eq!((r, none), (Request::Ping { id: json!(1) }, None));
        // The version-1 parser ignores the field, as before.
        assert!(parse_request(br#"{"op":"subscribe","symbols":["A"],"resume":5}"#).is_ok());
    }

    #[test]
    fn malformed_resume_is_answered_with_bad_resume_and_the_id() {
        let base = |resume: &str| {
            format!(
                r#"{{"op":"subscribe","id":9,"symbols":["A","B"],"channels":["book"],"resume":{resume}}}"#
            )
        };
        for resume in [
            r#"5"#,
            r#"[]"#,
            r#"{"streams":{}}"#,
            r#"{"epoch":7,"streams":{}}"#,
            r#"{"epoch":"e"}"#,
            r#"{"epoch":"e","streams":[]}"#,
            r#"{"epoch":"e","streams":{},"extra":1}"#,
            r#"{"epoch":"e","streams":{"C":{"book":1}}}"#,
            r#"{"epoch":"e","streams":{"A":5}}"#,
            r#"{"epoch":"e","streams":{"A":{}}}"#,
            r#"{"epoch":"e","streams":{"A":{"book":-1}}}"#,
            r#"{"epoch":"e","streams":{"A":{"book":1.5}}}"#,
            r#"{"epoch":"e","streams":{"A":{"book":"1"}}}"#,
            r#"{"epoch":"e","streams":{"A":{"depth":1}}}"#,
            r#"{"epoch":"e","streams":{"A":{"trades":1}}}"#,
        ] {
            let e = resume_err(&base(resume));
            assert_eq!(
                (e.code, e.id.clone()),
                (ErrorCode::BadResume, json!(9)),
                "{resume}"
            );
            assert_eq!(e.code.as_str(), "bad_resume");
        }
        let long = format!(r#"{{"epoch":"{}","streams":{{}}}}"#, "e".repeat(65));
        assert_eq!(resume_err(&base(&long)).code, ErrorCode::BadResume);
        // The request's own errors come first.
        assert_eq!(
            resume_err(r#"{"op":"subscribe","id":1,"symbols":["A"],"depth":7,"resume":5}"#).code,
            ErrorCode::InvalidDepth
        );
    }

    #[test]
    fn the_v11_reply_has_epoch_and_recovered_for_resumed_symbols_only() {
        let a = SymbolMeta {
            symbol: "BTC-USD".into(),
            sid: 7,
            px_decimals: 2,
            qty_decimals: 6,
        };
        let b = SymbolMeta {
            symbol: "ETH-USD".into(),
            sid: 8,
            px_decimals: 2,
            qty_decimals: 6,
        };
        let v: Value = serde_json::from_slice(&subscribed_reply_v11(
            &json!(7),
            "3f9c0a17",
            &[(&a, Some(true)), (&b, None)],
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"op":"subscribed","id":7,"epoch":"3f9c0a17","symbols":[
                {"symbol":"BTC-USD","sid":7,"px_decimals":2,"qty_decimals":6,"recovered":true},
                {"symbol":"ETH-USD","sid":8,"px_decimals":2,"qty_decimals":6}]})
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
        let v: Value =
            serde_json::from_slice(&subscribed_reply_v11(&json!(1), "00000001", &[(&m, None)]))
                .unwrap();
        assert_eq!(
            v,
            json!({"op":"subscribed","id":1,"epoch":"00000001","symbols":[{"symbol":"BTC-USD","sid":7,"px_decimals":2,"qty_decimals":6}]})
        );
        let v: Value =
            serde_json::from_slice(&error_reply(&json!(2), ErrorCode::UnknownSymbol, "no"))
                .unwrap();
        assert_eq!(v["code"], "unknown_symbol");
        let v: Value = serde_json::from_slice(&pong_reply(&json!("x"))).unwrap();
        assert_eq!(v, json!({"op":"pong","id":"x"}));
    }
}
