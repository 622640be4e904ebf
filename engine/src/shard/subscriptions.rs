//! Subscriptions: a connection's subscribe and unsubscribe requests against the shard's
//! subscriber lists, the interest counts shared with the ingester, and snapshot requests.
//!
//! A book subscription is counted in the shared interest first, then waits for its snapshot
//! (`snapshots.rs`); the snapshot's arrival (`dispatch.rs`) puts the connection in the topic's
//! subscriber list, so that it gets the records that follow the snapshot and none before.
//! Trades need no snapshot and start at once. Resume windows and conflation hook in here, at
//! [`Tables::subscribe`].
//!
//! Entitlements (JWT `symbols`, protocol §3.5): every way a client can ask for data (`/ws`
//! subscribe, and the other transports and resume once they subscribe) resolves its symbols
//! through [`entitled_symbols`], which refuses a list naming a symbol the connection's grant
//! does not cover (`not_entitled`) and expands `*` to the entitled symbols only.

use serde_json::Value;

use crate::book::DEPTHS;
use crate::control::{self, ErrorCode, RequestError, SymbolSel};
use crate::fanout::entitle::{Grant, entitled};
use crate::fanout::{ConnId, Format, Topic};
use crate::ring::{IngestRequest, SymbolTable};
use crate::wire::SymbolMeta;

/// The symbols a subscription request may get: the one check every subscribing path goes
/// through (`/ws` subscribe here; `/stream`, `/sse` and resume must call it too). `*` is the
/// entitled symbols of `table` (refused with `not_entitled` when there are none); a list is
/// refused whole with `unknown_symbol` if it names a symbol the feed does not list, else with
/// `not_entitled` if it names one `grant` does not cover. `grant` is the connection's
/// ([`Conn::grant`]); `None` (no JWTs configured) allows every symbol.
///
/// # Errors
/// The [`RequestError`] to answer with, carrying `rid`.
pub(crate) fn entitled_symbols<'t>(
    table: &'t SymbolTable,
    grant: Option<&Grant>,
    symbols: &SymbolSel,
    rid: &Value,
) -> Result<Vec<&'t SymbolMeta>, RequestError> {
    match symbols {
        SymbolSel::All => {
            let metas: Vec<&SymbolMeta> = table
                .symbols
                .iter()
                .filter(|m| entitled(grant, &m.symbol))
                .collect();
            if metas.is_empty() && !table.symbols.is_empty() {
                return Err(RequestError::new(
                    rid.clone(),
                    ErrorCode::NotEntitled,
                    "your token entitles you to none of the feed's symbols",
                ));
            }
            Ok(metas)
        }
        SymbolSel::List(names) => {
            let mut found = Vec::with_capacity(names.len());
            let mut unknown = Vec::new();
            for n in names {
                match table.find(n) {
                    Some(m) => found.push(m),
                    None => unknown.push(n.as_str()),
                }
            }
            if !unknown.is_empty() {
                let shown: Vec<&str> = unknown.iter().take(10).copied().collect();
                return Err(RequestError::new(
                    rid.clone(),
                    ErrorCode::UnknownSymbol,
                    format!("unknown symbol(s): {}", shown.join(", ")),
                ));
            }
            let refused: Vec<&str> = found
                .iter()
                .filter(|m| !entitled(grant, &m.symbol))
                .take(10)
                .map(|m| m.symbol.as_str())
                .collect();
            if !refused.is_empty() {
                return Err(RequestError::new(
                    rid.clone(),
                    ErrorCode::NotEntitled,
                    format!("not entitled to: {}", refused.join(", ")),
                ));
            }
            Ok(found)
        }
    }
}

use super::conn::{Conn, Sub};
use super::core::Tables;

impl Tables {
    /// Asks the ingester for a snapshot of `topic` for subscription `req` of `conn`, unless a
    /// request for the topic is already in flight: then the subscription waits for that one.
    fn request_snapshot(&mut self, conn: ConnId, req: u32, topic: Topic) {
        if !self.snapshots.wait(conn, req, topic) {
            return;
        }
        let r = IngestRequest::Snapshot {
            shard: self.ctx.id,
            conn,
            req,
            topic,
        };
        if self.ctx.requests.send(r).is_ok() {
            self.requests_sent = true;
        }
    }

    pub(crate) fn subscribe(
        &mut self,
        c: &mut Conn,
        id: ConnId,
        rid: Value,
        symbols: &SymbolSel,
        channels: control::Channels,
        depth_idx: usize,
    ) -> Result<Vec<u8>, RequestError> {
        let table = self.ctx.symbols.load();
        if table.symbols.is_empty() {
            return Err(RequestError::new(
                rid,
                ErrorCode::NotReady,
                "the feed has not announced its symbols yet; retry shortly",
            ));
        }
        let metas = entitled_symbols(&table, c.grant(), symbols, &rid)?;
        let new = metas
            .iter()
            .filter(|m| !c.subscriptions().iter().any(|s| s.sid == m.sid))
            .count();
        if c.subscriptions().len() + new > self.ctx.config.max_subscriptions {
            return Err(RequestError::new(
                rid,
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} symbols per connection",
                    self.ctx.config.max_subscriptions
                ),
            ));
        }
        // Exact: a subscriber keeps this list for its whole life.
        c.reserve_subscriptions(new);
        for m in &metas {
            if let Some(old) = c.remove_subscription(m.sid) {
                self.drop_sub(old, c.format(), id.index);
            }
            let req = c.next_request();
            let sub = Sub {
                sid: m.sid,
                depth_idx: depth_idx as u8,
                book: channels.book,
                trades: channels.trades,
                ready: false,
                req,
            };
            if sub.trades {
                let t = Topic::trades(m.sid, c.format());
                self.ctx.interest.add(self.ctx.id, t);
                self.subs.add(t, id.index);
            }
            if sub.book {
                let t = Topic::book(m.sid, depth_idx, c.format());
                // Count first, then ask: every record after the snapshot is then published here.
                self.ctx.interest.add(self.ctx.id, t);
                self.request_snapshot(id, req, t);
            }
            c.add_subscription(sub);
        }
        tracing::debug!(peer = %c.peer(), symbols = metas.len(), depth = DEPTHS[depth_idx], "subscribed");
        Ok(control::subscribed_reply(&rid, &metas))
    }

    pub(crate) fn unsubscribe(
        &mut self,
        c: &mut Conn,
        idx: u32,
        rid: Value,
        symbols: &SymbolSel,
    ) -> Result<Vec<u8>, RequestError> {
        let table = self.ctx.symbols.load();
        let mut names = Vec::new();
        match symbols {
            SymbolSel::All => {
                for s in c.take_subscriptions() {
                    if let Some(m) = table.symbols.get(s.sid as usize) {
                        names.push(m.symbol.as_str());
                    }
                    self.drop_sub(s, c.format(), idx);
                }
            }
            SymbolSel::List(list) => {
                let mut unknown = Vec::new();
                for n in list {
                    match table.find(n) {
                        Some(m) => {
                            if let Some(s) = c.remove_subscription(m.sid) {
                                self.drop_sub(s, c.format(), idx);
                                names.push(m.symbol.as_str());
                            }
                        }
                        None => unknown.push(n.as_str()),
                    }
                }
                if !unknown.is_empty() && names.is_empty() {
                    return Err(RequestError::new(
                        rid,
                        ErrorCode::UnknownSymbol,
                        format!("unknown symbol(s): {}", unknown.join(", ")),
                    ));
                }
            }
        }
        Ok(control::unsubscribed_reply(&rid, &names))
    }

    fn drop_sub(&mut self, s: Sub, format: Format, idx: u32) {
        if s.book {
            let t = Topic::book(s.sid, usize::from(s.depth_idx), format);
            self.ctx.interest.remove(self.ctx.id, t);
            if !self.ctx.interest.any(self.ctx.id, t) {
                // Nobody here counts the topic: the ingester may stop publishing it to this
                // shard, so a snapshot in flight is no longer followed by every record.
                self.snapshots.forget(t);
            }
            if s.ready {
                self.subs.remove(t, idx);
            }
        }
        if s.trades {
            let t = Topic::trades(s.sid, format);
            self.ctx.interest.remove(self.ctx.id, t);
            self.subs.remove(t, idx);
        }
    }

    /// After a token refresh: drops `c`'s subscriptions to symbols its new grant does not
    /// cover, and returns their names.
    pub(crate) fn drop_unentitled(&mut self, c: &mut Conn, idx: u32) -> Vec<String> {
        let table = self.ctx.symbols.load();
        let revoked: Vec<u32> = c
            .subscriptions()
            .iter()
            .filter(|s| {
                table
                    .symbols
                    .get(s.sid as usize)
                    .is_some_and(|m| !entitled(c.grant(), &m.symbol))
            })
            .map(|s| s.sid)
            .collect();
        let mut names = Vec::with_capacity(revoked.len());
        for sid in revoked {
            if let Some(s) = c.remove_subscription(sid) {
                self.drop_sub(s, c.format(), idx);
                if let Some(m) = table.symbols.get(sid as usize) {
                    names.push(m.symbol.clone());
                }
            }
        }
        names
    }

    pub(crate) fn unsubscribe_all(&mut self, c: &mut Conn, idx: u32) {
        for s in c.take_subscriptions() {
            self.drop_sub(s, c.format(), idx);
        }
    }

    /// After a ring resync: every book subscription of `c` waits for a fresh snapshot (with a
    /// new request number, so that an answer to an older request is ignored).
    pub(crate) fn restart_book_subscriptions(&mut self, c: &mut Conn, id: ConnId) {
        let format = c.format();
        for i in 0..c.subscriptions().len() {
            let sub = c.subscriptions()[i];
            if !sub.book {
                continue;
            }
            let topic = Topic::book(sub.sid, usize::from(sub.depth_idx), format);
            if sub.ready {
                self.subs.remove(topic, id.index);
            }
            let req = c.next_request();
            let s = &mut c.subscriptions_mut()[i];
            s.ready = false;
            s.req = req;
            self.request_snapshot(id, req, topic);
        }
    }
}
