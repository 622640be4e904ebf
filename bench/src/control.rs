//! Control messages (JSON text frames) of `shared/protocol.md` §1, as typed serde
//! structs. Both directions derive `Serialize` and `Deserialize`, so a test server
//! can parse requests and a test client can parse replies with the same types.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A data channel of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Book snapshots and deltas.
    Book,
    /// Trades.
    Trades,
}

/// A request from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Subscribe to symbols (`["*"]` for every symbol).
    Subscribe {
        /// Client-chosen id, echoed in the reply.
        id: u64,
        /// Symbols to subscribe to.
        symbols: Vec<String>,
        /// Channels; the server defaults to book and trades.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channels: Option<Vec<Channel>>,
        /// Book depth: 1, 10, 25 (server default), 100, or 0 for the whole book.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depth: Option<u32>,
    },
    /// Unsubscribe from symbols.
    Unsubscribe {
        /// Client-chosen id, echoed in the reply.
        id: u64,
        /// Symbols to drop.
        symbols: Vec<String>,
    },
    /// List the server's symbols.
    Symbols {
        /// Client-chosen id, echoed in the reply.
        id: u64,
    },
    /// Liveness check.
    Ping {
        /// Client-chosen id, echoed in the reply.
        id: u64,
    },
}

impl Request {
    /// The request as a JSON text frame payload.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to an empty object
        // rather than panicking should serde ever disagree.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Parses a request (for test servers).
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A symbol as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SymbolInfo {
    /// Symbol name, e.g. `BTC-USD`.
    pub symbol: String,
    /// Symbol id used in data records.
    pub sid: u32,
    /// Prices are scaled by `10^px_decimals`.
    pub px_decimals: u8,
    /// Quantities are scaled by `10^qty_decimals`.
    pub qty_decimals: u8,
    /// Protocol 1.1: whether a resumed symbol's streams were recovered (only for the symbols
    /// a subscribe's `resume` named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// A reply from server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Reply {
    /// Subscription accepted.
    Subscribed {
        /// Id of the request.
        id: u64,
        /// Protocol 1.1: the server's stream numbering (positions for `resume` belong to it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        /// The symbols subscribed, with their ids and decimals.
        symbols: Vec<SymbolInfo>,
    },
    /// Unsubscription done. The shape of `symbols` is not fixed by the protocol text.
    Unsubscribed {
        /// Id of the request.
        id: u64,
        /// Whatever the server lists, kept as raw JSON.
        #[serde(default)]
        symbols: serde_json::Value,
    },
    /// The server's symbols.
    Symbols {
        /// Id of the request.
        id: u64,
        /// Every symbol.
        symbols: Vec<SymbolInfo>,
    },
    /// Answer to a ping.
    Pong {
        /// Id of the request.
        id: u64,
    },
    /// A request the server cannot honour.
    Error {
        /// Id of the request, when the server could read it.
        #[serde(default)]
        id: Option<u64>,
        /// Stable machine-readable code (`bad_json`, `unknown_symbol`, ...).
        code: String,
        /// Human-readable explanation.
        #[serde(default)]
        message: String,
    },
    /// Protocol 1.1 §3.3: the connection's out-buffer passed the soft mark; these
    /// symbols' book streams now come as conflated snapshots at `max_hz`.
    Conflating {
        /// The symbols whose book streams are conflated.
        #[serde(default)]
        symbols: Vec<String>,
        /// The conflated rate.
        #[serde(default)]
        max_hz: Option<u32>,
    },
    /// Protocol 1.1 §3.3: the out-buffer drained; these symbols' book streams are
    /// deltas again, each starting with a fresh snapshot.
    Live {
        /// The symbols back to deltas.
        #[serde(default)]
        symbols: Vec<String>,
    },
    /// A reply with an `op` this client does not know.
    #[serde(other)]
    Other,
}

impl Reply {
    /// Parses a reply text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The reply as a JSON text frame payload (for test servers).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The id the reply answers, if it carries one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Subscribed { id, .. }
            | Self::Unsubscribed { id, .. }
            | Self::Symbols { id, .. }
            | Self::Pong { id } => Some(*id),
            Self::Error { id, .. } => *id,
            Self::Conflating { .. } | Self::Live { .. } | Self::Other => None,
        }
    }
}

/// Maps symbol names to `(px_decimals, qty_decimals)`, for
/// [`crate::wire::decode_json_batch`]: `|s| map.get(s).copied()`.
pub fn decimals_map(symbols: &[SymbolInfo]) -> HashMap<String, (u8, u8)> {
    symbols
        .iter()
        .map(|s| (s.symbol.clone(), (s.px_decimals, s.qty_decimals)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_serialise_as_the_protocol_shows() {
        let sub = Request::Subscribe {
            id: 1,
            symbols: vec![String::from("BTC-USD"), String::from("ETH-USD")],
            channels: Some(vec![Channel::Book, Channel::Trades]),
            depth: Some(25),
        };
        let v: serde_json::Value = serde_json::from_str(&sub.to_json()).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"op":"subscribe","id":1,"symbols":["BTC-USD","ETH-USD"],
                               "channels":["book","trades"],"depth":25})
        );
        assert_eq!(
            Request::Symbols { id: 3 }.to_json(),
            r#"{"op":"symbols","id":3}"#
        );
        let bare = Request::parse(r#"{"op":"subscribe","id":2,"symbols":["*"]}"#);
        assert!(matches!(
            bare,
            Ok(Request::Subscribe {
                id: 2,
                channels: None,
                depth: None,
                ..
            })
        ));
    }

    #[test]
    fn replies_parse() {
        let sub = Reply::parse(
            r#"{"op":"subscribed","id":1,"symbols":[{"symbol":"BTC-USD","sid":7,"px_decimals":2,"qty_decimals":6}]}"#,
        );
        let info = SymbolInfo {
            symbol: String::from("BTC-USD"),
            sid: 7,
            px_decimals: 2,
            qty_decimals: 6,
            recovered: None,
        };
        assert_eq!(
            sub.as_ref().ok(),
            Some(&Reply::Subscribed {
                id: 1,
                epoch: None,
                symbols: vec![info.clone()]
            })
        );
        let resumed = Reply::parse(
            r#"{"op":"subscribed","id":2,"epoch":"3f9c0a17","symbols":[{"symbol":"BTC-USD","sid":7,"px_decimals":2,"qty_decimals":6,"recovered":true}]}"#,
        );
        let Ok(Reply::Subscribed { epoch, symbols, .. }) = resumed else {
            panic!("{resumed:?}")
        };
        assert_eq!(
            (epoch.as_deref(), symbols[0].recovered),
            (Some("3f9c0a17"), Some(true))
        );
        assert_eq!(decimals_map(&[info]).get("BTC-USD"), Some(&(2, 6)));
        let err =
            Reply::parse(r#"{"op":"error","id":5,"code":"unknown_symbol","message":"no XRP"}"#);
        assert_eq!(
            err.ok(),
            Some(Reply::Error {
                id: Some(5),
                code: String::from("unknown_symbol"),
                message: String::from("no XRP"),
            })
        );
        let no_id = Reply::parse(r#"{"op":"error","code":"bad_json","message":"eof"}"#);
        assert_eq!(no_id.ok().and_then(|r| r.id()), None);
        assert_eq!(
            Reply::parse(r#"{"op":"pong","id":4}"#).ok(),
            Some(Reply::Pong { id: 4 })
        );
        assert_eq!(
            Reply::parse(r#"{"op":"welcome","v":1}"#).ok(),
            Some(Reply::Other)
        );
        assert!(Reply::parse(r#"{"id":1}"#).is_err());
        assert_eq!(
            Reply::parse(r#"{"op":"conflating","symbols":["BTC-USD"],"max_hz":5}"#).ok(),
            Some(Reply::Conflating {
                symbols: vec![String::from("BTC-USD")],
                max_hz: Some(5)
            })
        );
        assert_eq!(
            Reply::parse(r#"{"op":"live","symbols":["BTC-USD"]}"#).ok(),
            Some(Reply::Live {
                symbols: vec![String::from("BTC-USD")]
            })
        );
    }
}
