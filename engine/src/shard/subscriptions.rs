//! Subscriptions: a connection's subscribe and unsubscribe requests against the shard's
//! subscriber lists, the interest counts shared with the ingester, and snapshot requests.
//!
//! A book subscription is counted in the shared interest first, then waits for its snapshot
//! (`snapshots.rs`); the snapshot's arrival (`dispatch.rs`) puts the connection in the topic's
//! subscriber list, so that it gets the records that follow the snapshot and none before.
//! Trades need no snapshot and start at once. Resume windows and conflation hook in here, at
//! [`Tables::subscribe`].

use serde_json::Value;

use crate::book::DEPTHS;
use crate::control::{self, ErrorCode, RequestError, SymbolSel};
use crate::fanout::{ConnId, Format, Topic};
use crate::ring::IngestRequest;

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
        let metas: Vec<&crate::wire::SymbolMeta> = match symbols {
            SymbolSel::All => table.symbols.iter().collect(),
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
                        rid,
                        ErrorCode::UnknownSymbol,
                        format!("unknown symbol(s): {}", shown.join(", ")),
                    ));
                }
                found
            }
        };
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
