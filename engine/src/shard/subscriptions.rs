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
use crate::fanout::{ConnId, Format, TIERS_HZ, Topic, grant_tier};
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

use super::conn::{Conn, HeldReply, NO_TIER, Sub};
use super::core::Tables;

/// Most snapshot requests one connection has in flight (sent, not yet arrived): snapshots are
/// fed into the out-buffer as it drains, so that a burst the server creates (subscribing to
/// every symbol, a resync) never passes the bound (docs/protocol.md §5.3).
pub(crate) const SNAPSHOTS_IN_FLIGHT: usize = 16;

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

    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one subscribe request, passed as parsed"
    )]
    pub(crate) fn subscribe(
        &mut self,
        c: &mut Conn,
        id: ConnId,
        rid: Value,
        symbols: &SymbolSel,
        channels: control::Channels,
        depth_idx: usize,
        max_hz: Option<u16>,
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
        let tier =
            max_hz.map(|hz| grant_tier(u32::from(hz), self.ctx.config.conflate.max_hz_ceiling));
        // Exact: a subscriber keeps this list for its whole life.
        c.reserve_subscriptions(new);
        let resuming = !named.is_empty();
        // One request number for the whole subscribe when it resumes (the answer carries it).
        let resume_req = resuming.then(|| c.next_request());
        for m in &metas {
            if let Some(old) = c.remove_subscription(m.sid) {
                let bt = c.book_topic(&old);
                self.drop_sub(old, bt, c.format(), id.index);
            }
            let req = resume_req.unwrap_or_else(|| c.next_request());
            let sub = Sub {
                sid: m.sid,
                depth_idx: depth_idx as u8,
                book: channels.book,
                trades: channels.trades,
                ready: false,
                req,
                asked: false,
                tier: tier.map_or(NO_TIER, |t| t as u8),
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
                // Count first, then ask (paced, `pump_snapshots`; a resuming one waits for the
                // resume's answer): every record after the snapshot is then published here.
                self.ctx.interest.add(self.ctx.id, c.book_topic(&sub));
                if !resuming {
                    c.ladder_mut().deferred = true;
                }
            }
            c.add_subscription(sub);
        }
        self.pump_snapshots(c, id);
        tracing::debug!(peer = %c.peer(), symbols = metas.len(), depth = DEPTHS[depth_idx], ?max_hz, resume = named.len(), "subscribed");
        let granted = tier.map(|t| TIERS_HZ[t]);
        let (Some(req), Some(resume)) = (resume_req, resume) else {
            let list: Vec<_> = metas.iter().map(|m| (*m, None)).collect();
            let epoch = self.ctx.epoch.get().to_string();
            return Ok(Some(control::subscribed_reply_hz(
                &rid, &epoch, &list, granted,
            )));
        };
        c.hold_reply(HeldReply {
            req,
            rid,
            sids: metas.iter().map(|m| m.sid).collect(),
            named: named.iter().map(|n| n.0).collect(),
            max_hz: granted,
        });
        let r = IngestRequest::Resume(Box::new(ResumeRequest {
            shard: self.ctx.id,
            conn: id,
            req,
            epoch: Epoch::parse(&resume.epoch),
            depth_idx,
            format: c.format(),
            tier: tier.map(|t| t as u8),
            symbols: named,
        }));
        if self.ctx.requests.send(r).is_ok() {
            self.requests_sent = true;
        }
        Ok(None)
    }

    /// The out-buffer level under which a connection's waiting snapshots are requested (and
    /// its conflated snapshots delivered): half the soft mark; the low mark while it conflates
    /// under pressure, so that what stands in front of each fresh snapshot (the reader's
    /// staleness) is at most the low mark, not half the soft mark.
    pub(crate) fn pace_mark(&self, c: &Conn) -> usize {
        let cfg = self.ctx.config.conflate;
        if c.ladder().since.is_some() {
            cfg.low_bytes(c.out_limit())
        } else {
            cfg.soft_bytes(c.out_limit()) / 2
        }
    }

    /// Sends the snapshot requests of `c`'s book subscriptions that wait for room, while its
    /// out-buffer is under the pace mark, at most [`SNAPSHOTS_IN_FLIGHT`] in flight: snapshots
    /// (on subscribe, after a resync, on a ladder move, after a skipped conflated tick) enter
    /// the out-buffer as it drains. The rest wait for the next call (after a write).
    pub(crate) fn pump_snapshots(&mut self, c: &mut Conn, id: ConnId) {
        let mark = self.pace_mark(c);
        if !c.ladder().deferred || !c.is_open() || c.out_len() >= mark {
            return;
        }
        // As many as fit under the mark at the size of the largest snapshot seen (one when
        // none was seen yet), so that snapshots alone never take a connection past the soft
        // mark: a burst the server makes is not pressure.
        let est = c.ladder().snap_est as usize;
        let allowed = (mark - c.out_len())
            .checked_div(est)
            .map_or(1, |n| n.clamp(1, SNAPSHOTS_IN_FLIGHT));
        let mut in_flight = c
            .subscriptions()
            .iter()
            .filter(|s| s.book && !s.ready && s.asked && !s.resuming)
            .count();
        let mut left = false;
        for i in 0..c.subscriptions().len() {
            let s = c.subscriptions()[i];
            if !s.book || s.ready || s.asked || s.resuming {
                continue;
            }
            if in_flight >= allowed {
                left = true;
                break;
            }
            let topic = c.book_topic(&s);
            c.subscriptions_mut()[i].asked = true;
            self.request_snapshot(id, s.req, topic);
            in_flight += 1;
        }
        c.ladder_mut().deferred = left;
    }

    /// Moves `c`'s book subscriptions to pressure tier `pressure` (`NO_TIER`: back to their
    /// own topic, deltas or their `max_hz` tier); each one that changes topic waits for a fresh
    /// snapshot of its new topic (paced). Returns the sids that changed.
    pub(crate) fn move_books(&mut self, c: &mut Conn, id: ConnId, pressure: u8) -> Vec<u32> {
        let format = c.format();
        let mut moved = Vec::new();
        for i in 0..c.subscriptions().len() {
            let s = c.subscriptions()[i];
            if !s.book {
                continue;
            }
            let old = c.book_topic(&s);
            let new = super::conn::book_topic_at(&s, format, pressure);
            if old == new {
                continue;
            }
            self.drop_book(old, s.ready, id.index);
            self.ctx.interest.add(self.ctx.id, new);
            if s.resuming {
                // Its resume's answer starts it, on the new topic (`resumed`).
                continue;
            }
            let req = c.next_request();
            let sm = &mut c.subscriptions_mut()[i];
            sm.ready = false;
            sm.asked = false;
            sm.req = req;
            moved.push(s.sid);
        }
        let l = c.ladder_mut();
        l.tier = pressure;
        l.deferred |= !moved.is_empty();
        moved
    }

    /// A conflated tick of `topic` was not delivered to `c` (its out-buffer was past the pace
    /// mark): the subscription leaves the topic's list and waits for a fresh snapshot, sent
    /// when there is room. (Skipping a replacing snapshot loses nothing but staleness; the
    /// fresh one also covers a stream that goes quiet after the skipped tick.)
    pub(crate) fn skip_tick(&mut self, c: &mut Conn, idx: u32, topic: Topic) {
        let Some(i) = c.subscriptions().iter().position(|s| s.sid == topic.sid) else {
            return;
        };
        let s = c.subscriptions()[i];
        if !s.book || !s.ready || c.book_topic(&s) != topic {
            return;
        }
        self.subs.remove(topic, idx);
        let req = c.next_request();
        let sm = &mut c.subscriptions_mut()[i];
        sm.ready = false;
        sm.asked = false;
        sm.req = req;
        c.ladder_mut().deferred = true;
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
                sub.asked = sub.book;
            }
            if sub.book {
                self.subs.add(c.book_topic(&sub), id.index);
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
        Some(control::subscribed_reply_hz(
            &held.rid,
            &epoch.to_string(),
            &list,
            held.max_hz,
        ))
    }

    /// Starts every subscription of subscribe `req` still waiting for its resume as a fresh
    /// one: trades from the live point, the book from a snapshot (paced as any other, see
    /// [`Tables::pump_snapshots`], and coalesced per topic).
    /// (`ask`: false when the caller restarts the books itself.)
    fn start_fresh(&mut self, c: &mut Conn, id: ConnId, req: u32, ask: bool) {
        let format = c.format();
        for i in 0..c.subscriptions().len() {
            let sub = c.subscriptions()[i];
            if !sub.resuming || sub.req != req {
                continue;
            }
            let s = &mut c.subscriptions_mut()[i];
            s.resuming = false;
            s.asked = false;
            if sub.trades {
                self.subs.add(Topic::trades(sub.sid, format), id.index);
            }
            if sub.book && ask {
                c.ladder_mut().deferred = true;
            }
        }
        if ask {
            self.pump_snapshots(c, id);
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
            c.queue_reply(&control::subscribed_reply_hz(
                &h.rid, &epoch, &list, h.max_hz,
            ));
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
                    let bt = c.book_topic(&s);
                    self.drop_sub(s, bt, c.format(), idx);
                }
            }
            SymbolSel::List(list) => {
                let mut unknown = Vec::new();
                for n in list {
                    match table.find(n) {
                        Some(m) => {
                            if let Some(s) = c.remove_subscription(m.sid) {
                                let bt = c.book_topic(&s);
                                self.drop_sub(s, bt, c.format(), idx);
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

    /// Drops subscription `s`, whose book records come from `book_topic`.
    fn drop_sub(&mut self, s: Sub, book_topic: Topic, format: Format, idx: u32) {
        if s.book {
            self.drop_book(book_topic, s.ready, idx);
        }
        if s.trades {
            let t = Topic::trades(s.sid, format);
            self.ctx.interest.remove(self.ctx.id, t);
            if !s.resuming {
                self.subs.remove(t, idx);
            }
        }
    }

    fn drop_book(&mut self, t: Topic, ready: bool, idx: u32) {
        self.ctx.interest.remove(self.ctx.id, t);
        if !self.ctx.interest.any(self.ctx.id, t) {
            // Nobody here counts the topic: the ingester may stop publishing it to this
            // shard, so a snapshot in flight is no longer followed by every record.
            self.snapshots.forget(t);
        }
        if ready {
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
                let bt = c.book_topic(&s);
                self.drop_sub(s, bt, c.format(), idx);
                if let Some(m) = table.symbols.get(sid as usize) {
                    names.push(m.symbol.clone());
                }
            }
        }
        names
    }

    pub(crate) fn unsubscribe_all(&mut self, c: &mut Conn, idx: u32) {
        for s in c.take_subscriptions() {
            let bt = c.book_topic(&s);
            self.drop_sub(s, bt, c.format(), idx);
        }
        if c.ladder().since.is_some() {
            c.ladder_mut().since = None;
            crate::metrics::sub(&self.metrics().conflating, 1);
        }
    }

    /// After a ring resync: every book subscription of `c` waits for a fresh snapshot (with a
    /// new request number, so that an answer to an older request is ignored).
    pub(crate) fn restart_book_subscriptions(&mut self, c: &mut Conn, id: ConnId) {
        for i in 0..c.subscriptions().len() {
            let sub = c.subscriptions()[i];
            if !sub.book {
                continue;
            }
            let topic = c.book_topic(&sub);
            if sub.ready {
                self.subs.remove(topic, id.index);
            }
            let req = c.next_request();
            let s = &mut c.subscriptions_mut()[i];
            s.ready = false;
            s.asked = false;
            s.req = req;
            c.ladder_mut().deferred = true;
        }
        self.pump_snapshots(c, id);
    }
}
