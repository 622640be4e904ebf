//! An edge's answers to `resume` (protocol 1.1 §3.1, docs/protocol.md §8.4), sans-IO: time and
//! the edge's view of its streams come in, answers for the shards and replay requests for the
//! ingest node go out.
//!
//! A client whose edge died resumes on another edge with the positions it holds. The edge
//! answers each named stream from, in order of preference:
//! 1. its own replay window (the records it forwarded, [`crate::replay`]), when it holds every
//!    record after the position up to the last one it forwarded;
//! 2. a replay fetched from the ingest node (`<p>.replay`, which answers from its own windows
//!    with the records after the position up to its last published one, `S`), joined to what
//!    the edge forwards: when the edge's stream is at `S` the fetched records are the answer;
//!    when it is past `S`, the fetched records then the edge's window from `S`; when it is
//!    behind `S`, the answer waits until the edge's stream reaches `S`.
//!
//! A conflated (`max_hz`) subscription's book is made of replacing snapshots, which the edge
//! makes itself (`bus/edge.rs`, `bus/replica.rs`): as on a standalone daemon (docs/protocol.md
//! §5.5) it resumes from the current snapshot of its tier ([`step_conflated`]), or from nothing
//! when the stream has not moved since the client's position.
//!
//! The answer to one subscribe is one message on the asking shard's ring (the shard starts
//! every stream of the subscribe from it), pushed at a moment when every recovered stream's
//! records end at the last record the edge forwarded, so that the live records that follow in
//! the ring continue them with no gap and no duplicate. A symbol is recovered all or nothing
//! (book and trades); one that cannot be (another epoch, a miss, or no answer within
//! [`RESUME_WAIT`]) gets `recovered: false` and starts afresh, as on a standalone daemon.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ReplayRequest;
use crate::fanout::{Format, TIER_COUNT, Topic};
use crate::replay::epoch::Epoch;
use crate::ring::{ResumeAnswer, ResumeRequest, SymbolResumed};

/// Longest a resume waits for its streams to come in line or for the ingest node's replay;
/// the symbols still undecided then are not recovered.
pub const RESUME_WAIT: Duration = Duration::from_secs(3);

/// What the edge knows of its streams, for [`Resumes::poll`].
pub trait StreamView {
    /// The seq of the last record of `topic` forwarded to the shards, when the stream is in
    /// line (`None`: not subscribed, joining, or healing a gap).
    fn last(&self, topic: Topic) -> Option<u64>;
    /// The records of `topic` after `after` up to [`last`](Self::last), from the edge's own
    /// replay window, when it holds every one of them.
    fn window(&mut self, topic: Topic, after: u64) -> Option<Vec<Bytes>>;
    /// The current snapshot of conflated topic `tier` and its seq, when the stream it is made
    /// from is in line (`None`: not subscribed, joining, healing, or no book yet).
    fn snapshot(&mut self, tier: Topic) -> Option<(u64, Bytes)>;
}

/// A replay asked of the ingest node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// Asked, not answered yet.
    Sent,
    /// The records after the position up to the ingest node's last one (`seq`, record).
    Records(Vec<(u64, Bytes)>),
    /// The ingest node does not hold them (or another epoch, or no answer, or a malformed one).
    Miss,
}

/// What one named stream of a resume can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These records (possibly none) take the client from its position to the edge's last
    /// forwarded record.
    Ready(Vec<Bytes>),
    /// Undecided: the stream is not in line, or behind the ingest node's replay, or the replay
    /// was asked and not answered yet.
    Wait,
    /// Ask the ingest node for the records after the position.
    Fetch,
    /// Cannot be recovered.
    Miss,
}

/// The decision for one stream at position `after`: `last` is the edge's last forwarded seq
/// (`None`: not in line), `fetch` the ingest node's replay if one was asked, `window` the
/// edge's own window ([`StreamView::window`]).
pub fn step(
    after: u64,
    last: Option<u64>,
    fetch: Option<&Fetch>,
    window: &mut dyn FnMut(u64) -> Option<Vec<Bytes>>,
) -> Step {
    let Some(last) = last else {
        // Joining or healing: wait for it, with the replay on its way.
        return match fetch {
            None => Step::Fetch,
            Some(Fetch::Miss) => Step::Miss,
            Some(_) => Step::Wait,
        };
    };
    if after == last {
        return Step::Ready(Vec::new());
    }
    if after < last {
        if let Some(records) = window(after) {
            return Step::Ready(records);
        }
    }
    match fetch {
        None => Step::Fetch,
        Some(Fetch::Sent) => Step::Wait,
        Some(Fetch::Miss) => Step::Miss,
        Some(Fetch::Records(records)) => {
            let upto = records.last().map_or(after, |r| r.0);
            if upto > last {
                // The edge has not forwarded that far yet.
                return Step::Wait;
            }
            let mut out: Vec<Bytes> = records.iter().map(|r| r.1.clone()).collect();
            if upto < last {
                match window(upto) {
                    Some(rest) => out.extend(rest),
                    None => return Step::Miss,
                }
            }
            Step::Ready(out)
        }
    }
}

/// The decision for a conflated book stream at position `after`, given the current snapshot
/// of its tier and that snapshot's seq: nothing when the stream has not moved since, the
/// snapshot when it has; wait while there is none or the edge is behind the position.
pub fn step_conflated(after: u64, current: Option<(u64, Bytes)>) -> Step {
    match current {
        Some((seq, _)) if seq == after => Step::Ready(Vec::new()),
        Some((seq, snapshot)) if seq > after => Step::Ready(vec![snapshot]),
        _ => Step::Wait,
    }
}

#[derive(Debug)]
struct Pending {
    req: ResumeRequest,
    deadline: Instant,
}

/// The resumes an edge has not answered yet, and the replays it asked of the ingest node for
/// them (one per stream and position, shared by every resume at that position).
#[derive(Debug, Default)]
pub struct Resumes {
    pending: Vec<Pending>,
    fetches: HashMap<(usize, u64), Fetch>,
}

/// What [`Resumes::poll`] asks the edge to do.
#[derive(Debug, Default)]
pub struct Polled {
    /// Answers to push now, each on its shard's ring (shard number, the connection's format,
    /// answer). Statuses of stale symbols are for the edge to add.
    pub answers: Vec<(usize, Format, ResumeAnswer)>,
    /// Replays to ask of the ingest node.
    pub fetches: Vec<ReplayRequest>,
}

impl Resumes {
    /// A resume from a shard, received at `now`.
    pub fn add(&mut self, req: ResumeRequest, now: Instant) {
        self.pending.push(Pending {
            req,
            deadline: now + RESUME_WAIT,
        });
    }

    /// No resume waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Resumes waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// The ingest node's answer to the replay of `topic` after `after`: the records (`None`: a
    /// miss, no answer, or a malformed one). Ignored when no resume waits for it.
    pub fn on_fetch(&mut self, topic: Topic, after: u64, records: Option<Vec<(u64, Bytes)>>) {
        if let Some(f) = self.fetches.get_mut(&(topic.index(), after)) {
            *f = records.map_or(Fetch::Miss, Fetch::Records);
        }
    }

    /// Decides what can be: every resume whose streams are all decided is answered, replays
    /// are asked for the streams that need one. `epoch` is the ingest node's numbering as the
    /// edge knows it now (`None`: not known yet).
    pub fn poll(&mut self, epoch: Option<u32>, now: Instant, view: &mut dyn StreamView) -> Polled {
        let mut out = Polled::default();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let epoch_ok = epoch.is_some() && p.req.epoch.map(Epoch::as_u32) == epoch;
            let late = now >= p.deadline;
            let mut undecided = false;
            let mut symbols = Vec::with_capacity(p.req.symbols.len());
            for &(sid, book, trades) in &p.req.symbols {
                let named = [
                    book.map(|a| (Topic::book(sid, p.req.depth_idx, p.req.format), a)),
                    trades.map(|a| (Topic::trades(sid, p.req.format), a)),
                ];
                let mut got: [Option<Vec<Bytes>>; 2] = [None, None];
                let mut miss = !epoch_ok;
                for (i, &(topic, after)) in named
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
                {
                    if miss {
                        break;
                    }
                    let key = (topic.index(), after);
                    let tier = p.req.tier.map(usize::from).filter(|&t| t < TIER_COUNT);
                    let decided = match tier {
                        Some(t) if i == 0 => step_conflated(
                            after,
                            view.snapshot(Topic::conflated(sid, p.req.depth_idx, t, p.req.format)),
                        ),
                        _ => {
                            let last = view.last(topic);
                            let mut window = |from: u64| view.window(topic, from);
                            step(after, last, self.fetches.get(&key), &mut window)
                        }
                    };
                    match decided {
                        Step::Ready(r) => got[i] = Some(r),
                        Step::Miss => miss = true,
                        Step::Wait | Step::Fetch if late => miss = true,
                        Step::Wait => undecided = true,
                        Step::Fetch => {
                            undecided = true;
                            self.fetches.insert(key, Fetch::Sent);
                            out.fetches.push(ReplayRequest {
                                epoch: epoch.unwrap_or(0),
                                topic,
                                after,
                            });
                        }
                    }
                }
                let [b, t] = got;
                symbols.push(SymbolResumed {
                    sid,
                    recovered: !miss,
                    book: if miss {
                        Vec::new()
                    } else {
                        b.unwrap_or_default()
                    },
                    trades: if miss {
                        Vec::new()
                    } else {
                        t.unwrap_or_default()
                    },
                    status: None,
                });
            }
            if undecided {
                self.pending.push(p);
                continue;
            }
            out.answers.push((
                p.req.shard,
                p.req.format,
                ResumeAnswer {
                    conn: p.req.conn,
                    req: p.req.req,
                    epoch: Epoch::from_u32(epoch.unwrap_or(0)),
                    symbols,
                },
            ));
        }
        // Replays no resume waits for any more.
        if self.pending.is_empty() {
            self.fetches.clear();
        } else if !self.fetches.is_empty() {
            let mut used = std::collections::HashSet::new();
            for p in &self.pending {
                for &(sid, book, trades) in &p.req.symbols {
                    if let Some(a) = book {
                        used.insert((Topic::book(sid, p.req.depth_idx, p.req.format).index(), a));
                    }
                    if let Some(a) = trades {
                        used.insert((Topic::trades(sid, p.req.format).index(), a));
                    }
                }
            }
            self.fetches.retain(|k, _| used.contains(k));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::ConnId;

    /// Records are their seq as 8 bytes: what a step returns shows which seqs it took.
    fn rec(seq: u64) -> Bytes {
        Bytes::copy_from_slice(&seq.to_le_bytes())
    }

    fn seqs(records: &[Bytes]) -> Vec<u64> {
        records
            .iter()
            .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
            .collect()
    }

    /// The edge's streams: per topic, in line at `last` with a window holding `floor+1..=last`.
    #[derive(Default)]
    struct View {
        streams: HashMap<usize, (Option<u64>, u64)>,
    }

    impl View {
        fn set(&mut self, topic: Topic, last: Option<u64>, floor: u64) {
            self.streams.insert(topic.index(), (last, floor));
        }
    }

    impl StreamView for View {
        fn last(&self, topic: Topic) -> Option<u64> {
            self.streams.get(&topic.index()).and_then(|s| s.0)
        }
        fn window(&mut self, topic: Topic, after: u64) -> Option<Vec<Bytes>> {
            let &(last, floor) = self.streams.get(&topic.index())?;
            let last = last?;
            (after >= floor && after <= last).then(|| (after + 1..=last).map(rec).collect())
        }
        fn snapshot(&mut self, tier: Topic) -> Option<(u64, Bytes)> {
            let (d, _) = tier.conflation()?;
            let last = self.last(Topic::book(tier.sid, d, Format::Binary))?;
            Some((last, rec(last)))
        }
    }

    fn fetched(range: std::ops::RangeInclusive<u64>) -> Fetch {
        Fetch::Records(range.map(|s| (s, rec(s))).collect())
    }

    fn no_window(_: u64) -> Option<Vec<Bytes>> {
        None
    }

    #[test]
    fn steps() {
        let mut win = |from: u64| (from >= 100).then(|| (from + 1..=110).map(rec).collect());
        let ready = |s: Step| match s {
            Step::Ready(r) => seqs(&r),
            other => panic!("{other:?}"),
        };
        // The edge's window holds it.
        assert_eq!(
            ready(step(104, Some(110), None, &mut win)),
            (105..=110).collect::<Vec<_>>()
        );
        // Nothing missed.
        assert_eq!(
            ready(step(110, Some(110), None, &mut no_window)),
            Vec::<u64>::new()
        );
        // Before the window: ask the ingest node, then wait for it.
        assert_eq!(step(90, Some(110), None, &mut win), Step::Fetch);
        assert_eq!(
            step(90, Some(110), Some(&Fetch::Sent), &mut win),
            Step::Wait
        );
        // Its records end where the edge is.
        assert_eq!(
            ready(step(
                90,
                Some(110),
                Some(&fetched(91..=110)),
                &mut no_window
            )),
            (91..=110).collect::<Vec<_>>()
        );
        // The edge is past them: the window continues them.
        assert_eq!(
            ready(step(90, Some(110), Some(&fetched(91..=103)), &mut win)),
            (91..=110).collect::<Vec<_>>()
        );
        // ... unless it does not hold what follows them.
        assert_eq!(
            step(90, Some(110), Some(&fetched(91..=95)), &mut win),
            Step::Miss
        );
        // The edge is behind them: wait until it reaches them.
        assert_eq!(
            step(90, Some(108), Some(&fetched(91..=110)), &mut no_window),
            Step::Wait
        );
        // A client ahead of the edge, the ingest node at the client's position: wait.
        assert_eq!(
            step(112, Some(110), Some(&Fetch::Records(vec![])), &mut win),
            Step::Wait
        );
        assert_eq!(
            ready(step(
                112,
                Some(112),
                Some(&Fetch::Records(vec![])),
                &mut win
            )),
            Vec::<u64>::new()
        );
        // Not in line (joining): fetch, then wait, whatever the window.
        assert_eq!(step(104, None, None, &mut win), Step::Fetch);
        assert_eq!(
            step(104, None, Some(&fetched(105..=106)), &mut win),
            Step::Wait
        );
        assert_eq!(step(104, None, Some(&Fetch::Miss), &mut win), Step::Miss);
        assert_eq!(
            step(90, Some(110), Some(&Fetch::Miss), &mut win),
            Step::Miss
        );
    }

    const EPOCH: u32 = 0x1234_5678;

    fn request(symbols: Vec<(u32, Option<u64>, Option<u64>)>, epoch: u32) -> ResumeRequest {
        ResumeRequest {
            shard: 1,
            conn: ConnId {
                index: 4,
                generation: 2,
            },
            req: 9,
            epoch: Some(Epoch::from_u32(epoch)),
            depth_idx: 1,
            format: Format::Binary,
            tier: None,
            symbols,
        }
    }

    fn book(sid: u32) -> Topic {
        Topic::book(sid, 1, Format::Binary)
    }

    fn trades(sid: u32) -> Topic {
        Topic::trades(sid, Format::Binary)
    }

    type Symbol = (u32, bool, Vec<u64>, Vec<u64>);

    fn answer(p: &Polled) -> Vec<Symbol> {
        assert_eq!(p.answers.len(), 1, "{p:?}");
        let (shard, format, a) = &p.answers[0];
        assert_eq!(*format, Format::Binary);
        assert_eq!((*shard, a.req, a.conn.index), (1, 9, 4));
        assert_eq!(a.epoch, Epoch::from_u32(EPOCH));
        a.symbols
            .iter()
            .map(|s| (s.sid, s.recovered, seqs(&s.book), seqs(&s.trades)))
            .collect()
    }

    #[test]
    fn answered_at_once_from_the_edges_windows() {
        let now = crate::clock::monotonic();
        let mut view = View::default();
        view.set(book(0), Some(50), 40);
        view.set(trades(0), Some(20), 10);
        view.set(book(1), Some(7), 0);
        let mut r = Resumes::default();
        r.add(
            request(vec![(0, Some(45), Some(18)), (1, Some(7), None)], EPOCH),
            now,
        );
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert!(p.fetches.is_empty());
        assert_eq!(
            answer(&p),
            vec![
                (0, true, (46..=50).collect(), vec![19, 20]),
                (1, true, vec![], vec![])
            ]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn another_epoch_is_not_recovered_and_asks_nothing() {
        let now = crate::clock::monotonic();
        let mut view = View::default();
        view.set(book(0), Some(50), 0);
        let mut r = Resumes::default();
        r.add(request(vec![(0, Some(45), None)], EPOCH ^ 1), now);
        // The ingest node's epoch not known yet: no position can be recovered either.
        r.add(request(vec![(0, Some(45), None)], EPOCH), now);
        let p = r.poll(None, now, &mut view);
        assert!(p.fetches.is_empty());
        assert_eq!(p.answers.len(), 2);
        for (_, _, a) in &p.answers {
            assert!(!a.symbols[0].recovered);
            assert!(a.symbols[0].book.is_empty());
        }
    }

    #[test]
    fn a_fetch_joined_to_the_forwarded_stream_and_shared_by_equal_positions() {
        let now = crate::clock::monotonic();
        let mut view = View::default();
        let mut r = Resumes::default();
        // Two clients at the same position of a stream the edge does not forward yet.
        r.add(request(vec![(3, Some(100), None)], EPOCH), now);
        r.add(request(vec![(3, Some(100), None)], EPOCH), now);
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert!(p.answers.is_empty());
        assert_eq!(
            p.fetches,
            vec![ReplayRequest {
                epoch: EPOCH,
                topic: book(3),
                after: 100
            }]
        );
        // The ingest node answers 101..=104; the edge's stream comes in line at 102 (its
        // snapshot), then forwards 103: not there yet.
        r.on_fetch(
            book(3),
            100,
            Some((101..=104).map(|s| (s, rec(s))).collect()),
        );
        view.set(book(3), Some(103), 102);
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert!(p.answers.is_empty() && p.fetches.is_empty());
        assert_eq!(r.len(), 2);
        // Past the fetch's end: the window continues it.
        view.set(book(3), Some(106), 102);
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert_eq!(p.answers.len(), 2);
        for (_, _, a) in &p.answers {
            assert!(a.symbols[0].recovered);
            assert_eq!(seqs(&a.symbols[0].book), (101..=106).collect::<Vec<_>>());
        }
        assert!(r.is_empty() && r.fetches.is_empty());
    }

    #[test]
    fn all_or_nothing_per_symbol_and_a_deadline() {
        let now = crate::clock::monotonic();
        let mut view = View::default();
        view.set(book(0), Some(50), 0);
        view.set(book(1), Some(50), 0);
        let mut r = Resumes::default();
        r.add(
            request(
                vec![(0, Some(45), Some(30)), (1, Some(49), Some(12))],
                EPOCH,
            ),
            now,
        );
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert_eq!(
            p.fetches.len(),
            2,
            "the trade streams are not forwarded: fetched"
        );
        // The ingest node no longer holds sid 0's trades; sid 1's never come.
        r.on_fetch(trades(0), 30, None);
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert!(p.answers.is_empty(), "sid 1 still waits");
        let p = r.poll(Some(EPOCH), now + RESUME_WAIT, &mut view);
        assert_eq!(
            answer(&p),
            vec![(0, false, vec![], vec![]), (1, false, vec![], vec![])]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn an_epoch_change_while_waiting_is_a_miss() {
        let now = crate::clock::monotonic();
        let mut view = View::default();
        let mut r = Resumes::default();
        r.add(request(vec![(0, Some(45), None)], EPOCH), now);
        assert_eq!(r.poll(Some(EPOCH), now, &mut view).fetches.len(), 1);
        view.set(book(0), Some(3), 0);
        let p = r.poll(Some(EPOCH + 1), now, &mut view);
        assert_eq!(p.answers.len(), 1);
        assert!(!p.answers[0].2.symbols[0].recovered);
    }

    #[test]
    fn a_conflated_book_resumes_from_the_current_snapshot_or_nothing() {
        let now = crate::clock::monotonic();
        let mut view = View::default();
        let mut r = Resumes::default();
        let tiered = |symbols| ResumeRequest {
            tier: Some(2),
            ..request(symbols, EPOCH)
        };
        // The book stream it is made from is not in line yet: wait (no replay is asked: a
        // conflated book is not replayed).
        r.add(tiered(vec![(0, Some(45), None), (1, Some(60), None)]), now);
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert!(p.answers.is_empty() && p.fetches.is_empty(), "{p:?}");
        // Sid 0 moved since 45: its current snapshot (seq 50); sid 1 has not (60).
        view.set(book(0), Some(50), 0);
        view.set(book(1), Some(60), 0);
        let p = r.poll(Some(EPOCH), now, &mut view);
        assert_eq!(
            answer(&p),
            vec![(0, true, vec![50], vec![]), (1, true, vec![], vec![])]
        );
        // A position past the edge's stream waits for it, and is not recovered at the deadline.
        r.add(tiered(vec![(0, Some(70), None)]), now);
        assert!(r.poll(Some(EPOCH), now, &mut view).answers.is_empty());
        let p = r.poll(Some(EPOCH), now + RESUME_WAIT, &mut view);
        assert_eq!(answer(&p), vec![(0, false, vec![], vec![])]);
        assert_eq!(step_conflated(3, Some((3, rec(3)))), Step::Ready(vec![]));
    }
}
