//! Subscriptions: a connection's subscribe and unsubscribe requests against the shard's
//! subscriber lists, the interest counts shared with the ingester, and snapshot requests.
//!
//! A book subscription is counted in the shared interest first, then waits for its snapshot
//! (`snapshots.rs`); the snapshot's arrival (`dispatch.rs`) puts the connection in the topic's
//! subscriber list, so that it gets the records that follow the snapshot and none before.
//! Trades need no snapshot and start at once. Conflation hooks in here, at
//! [`Tables::subscribe`].
//!
//! Entitlements (JWT `symbols`, protocol §3.5): every way a client can ask for data (`/ws`
//! subscribe, and the other transports and resume once they subscribe) resolves its symbols
//! through [`entitled_symbols`], which refuses a list naming a symbol the connection's grant
//! does not cover (`not_entitled`) and expands `*` to the entitled symbols only.
//!
//! A subscribe with `resume` (protocol 1.1, docs/protocol.md §4.4) counts the interest of all
//! its streams, then sends the ingester one [`ResumeRequest`] for the whole subscribe and holds
//! its `subscribed` reply. The answer comes out of the ring as one message (`dispatch.rs`,
//! [`Tables::resumed`]): it is the start of every stream of the subscribe for this connection,
//! as a snapshot is for a plain one (records of these streams earlier in the ring were not
//! given to it). Recovered streams get the replayed records; the others start afresh (the book
//! asks for a snapshot, coalesced as for any subscriber; trades go live).

use serde_json::Value;

use crate::book::DEPTHS;
use crate::control::{self, ErrorCode, RequestError, SymbolSel};
use crate::fanout::entitle::{Grant, entitled};
use crate::fanout::{ConnId, Format, Topic};
use crate::wire::SymbolMeta;

/// The symbols a subscription request may get: the one check every subscribing path goes
/// through (`/ws` subscribe, `/stream` and `/sse` through it, resume too). `*` is the
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
use crate::replay::epoch::Epoch;
use crate::ring::{IngestRequest, ResumeRequest, SymbolResumed, SymbolTable};

use super::conn::{Conn, HeldReply, Sub};
use super::core::Tables;

/// What a subscribe answers now: its reply, or nothing yet (held for the resume's answer).
pub(crate) type SubscribeReply = Option<Vec<u8>>;

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

    #[allow(clippy::too_many_arguments)] // the parts of a parsed subscribe, and where it goes
    pub(crate) fn subscribe(
        &mut self,
        c: &mut Conn,
        id: ConnId,
        rid: Value,
        symbols: &SymbolSel,
        channels: control::Channels,
        depth_idx: usize,
        resume: Option<control::Resume>,
    ) -> Result<SubscribeReply, RequestError> {
        let table = self.ctx.symbols.load();
        if table.symbols.is_empty() {
            return Err(RequestError::new(
                rid,
                ErrorCode::NotReady,
                "the feed has not announced its symbols yet; retry shortly",
            ));
        }
        let metas = entitled_symbols(&table, c.grant(), symbols, &rid)?;
        // The symbols `resume` names, by sid, with the client's positions.
        let mut named = Vec::new();
        if let Some(r) = &resume {
            named.reserve(r.streams.len());
            for st in &r.streams {
                // A list subscribe's names were checked by the parser; with "*" any symbol
                // may be named, and must exist.
                let Some(m) = table.find(&st.symbol) else {
                    return Err(RequestError::new(
                        rid,
                        ErrorCode::UnknownSymbol,
                        format!("unknown symbol in resume: {}", st.symbol),
                    ));
                };
                // Nor may a resume replay a stream the token does not cover (§3.5).
                if !entitled(c.grant(), &m.symbol) {
                    return Err(RequestError::new(
                        rid,
                        ErrorCode::NotEntitled,
                        format!("not entitled to: {}", m.symbol),
                    ));
                }
                named.push((m.sid, st.book, st.trades));
            }
        }
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
        let resuming = !named.is_empty();
        // One request number for the whole subscribe when it resumes (the answer carries it).
        let resume_req = resuming.then(|| c.next_request());
        for m in &metas {
            if let Some(old) = c.remove_subscription(m.sid) {
                self.drop_sub(old, c.format(), id.index);
            }
            let req = resume_req.unwrap_or_else(|| c.next_request());
            let sub = Sub {
                sid: m.sid,
                depth_idx: depth_idx as u8,
                book: channels.book,
                trades: channels.trades,
                ready: false,
                req,
                resuming,
            };
            if sub.trades {
                let t = Topic::trades(m.sid, c.format());
                self.ctx.interest.add(self.ctx.id, t);
                if !resuming {
                    self.subs.add(t, id.index);
                }
            }
            if sub.book {
                let t = Topic::book(m.sid, depth_idx, c.format());
                // Count first, then ask: every record after the snapshot (or the resume's
                // answer) is then published here.
                self.ctx.interest.add(self.ctx.id, t);
                if !resuming {
                    self.request_snapshot(id, req, t);
                }
            }
            c.add_subscription(sub);
        }
        tracing::debug!(peer = %c.peer(), symbols = metas.len(), depth = DEPTHS[depth_idx], resume = named.len(), "subscribed");
        let (Some(req), Some(resume)) = (resume_req, resume) else {
            let list: Vec<_> = metas.iter().map(|m| (*m, None)).collect();
            let epoch = self.ctx.epoch.get().to_string();
            return Ok(Some(control::subscribed_reply_v11(&rid, &epoch, &list)));
        };
        c.hold_reply(HeldReply {
            req,
            rid,
            sids: metas.iter().map(|m| m.sid).collect(),
            named: named.iter().map(|n| n.0).collect(),
        });
        let r = IngestRequest::Resume(Box::new(ResumeRequest {
            shard: self.ctx.id,
            conn: id,
            req,
            epoch: Epoch::parse(&resume.epoch),
            depth_idx,
            format: c.format(),
            symbols: named,
        }));
        if self.ctx.requests.send(r).is_ok() {
            self.requests_sent = true;
        }
        Ok(None)
    }

    /// The answer to subscribe `req`'s resume came out of the ring: it starts every stream of
    /// that subscribe for connection `c` (see the module docs); `deliver` is handed each record
    /// to send, in order. Returns the `subscribed` reply to queue (before those records), or
    /// `None` when the answer is stale (the subscribe was abandoned by a ring resync).
    pub(crate) fn resumed(
        &mut self,
        c: &mut Conn,
        id: ConnId,
        req: u32,
        epoch: Epoch,
        answer: Vec<SymbolResumed>,
        mut deliver: impl FnMut(&mut Conn, bytes::Bytes),
    ) -> Option<Vec<u8>> {
        let held = c.take_held(req)?;
        let format = c.format();
        let mut recovered: Vec<(u32, bool)> = Vec::with_capacity(answer.len());
        for s in answer {
            let Some(sub) = c
                .subscription_mut(s.sid)
                .filter(|sub| sub.req == req && sub.resuming)
            else {
                // Unsubscribed or replaced meanwhile: nothing of it is sent.
                recovered.push((s.sid, false));
                continue;
            };
            recovered.push((s.sid, s.recovered));
            if !s.recovered {
                continue;
            }
            let sub = *sub;
            if let Some(sub) = c.subscription_mut(s.sid) {
                sub.resuming = false;
                sub.ready = sub.book;
            }
            if sub.book {
                self.subs.add(
                    Topic::book(s.sid, usize::from(sub.depth_idx), format),
                    id.index,
                );
            }
            if sub.trades {
                self.subs.add(Topic::trades(s.sid, format), id.index);
            }
            for b in s.book.into_iter().chain(s.trades).chain(s.status) {
                deliver(c, b);
            }
        }
        // Everything else of the subscribe starts afresh from here.
        self.start_fresh(c, id, req, true);
        let table = self.ctx.symbols.load();
        let list: Vec<_> = held
            .sids
            .iter()
            .filter_map(|sid| table.symbols.get(*sid as usize))
            .map(|m| {
                let r = held.named.contains(&m.sid).then(|| {
                    recovered
                        .iter()
                        .find(|(sid, _)| *sid == m.sid)
                        .is_some_and(|(_, r)| *r)
                });
                (m, r)
            })
            .collect();
        Some(control::subscribed_reply_v11(
            &held.rid,
            &epoch.to_string(),
            &list,
        ))
    }

    /// Starts every subscription of subscribe `req` still waiting for its resume as a fresh
    /// one: trades from the live point, the book from a snapshot (coalesced per topic).
    /// (`ask`: false when the caller restarts the books itself.)
    fn start_fresh(&mut self, c: &mut Conn, id: ConnId, req: u32, ask: bool) {
        let format = c.format();
        for i in 0..c.subscriptions().len() {
            let sub = c.subscriptions()[i];
            if !sub.resuming || sub.req != req {
                continue;
            }
            c.subscriptions_mut()[i].resuming = false;
            if sub.trades {
                self.subs.add(Topic::trades(sub.sid, format), id.index);
            }
            if sub.book && ask {
                let t = Topic::book(sub.sid, usize::from(sub.depth_idx), format);
                self.request_snapshot(id, req, t);
            }
        }
    }

    /// After a ring resync: the answers of resumes in flight may be lost. Their replies go out
    /// now with `recovered: false`, and their subscriptions start afresh (the caller then
    /// restarts every book subscription, these included).
    /// Returns whether replies were queued.
    pub(crate) fn abandon_resumes(&mut self, c: &mut Conn, id: ConnId) -> bool {
        let held = c.take_all_held();
        if held.is_empty() {
            return false;
        }
        let table = self.ctx.symbols.load();
        let epoch = self.ctx.epoch.get().to_string();
        for h in held {
            self.start_fresh(c, id, h.req, false);
            let list: Vec<_> = h
                .sids
                .iter()
                .filter_map(|sid| table.symbols.get(*sid as usize))
                .map(|m| (m, h.named.contains(&m.sid).then_some(false)))
                .collect();
            c.queue_reply(&control::subscribed_reply_v11(&h.rid, &epoch, &list));
        }
        true
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
            if !s.resuming {
                self.subs.remove(t, idx);
            }
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
