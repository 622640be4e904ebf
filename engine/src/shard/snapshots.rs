//! Snapshot requests to the ingester, coalesced per topic (see [`SnapshotRequests`]).
//!
//! Call order: [`SnapshotRequests::wait`] when a subscription needs a snapshot (send a request
//! only when it returns true), [`SnapshotRequests::answered`] when a snapshot comes out of the
//! ring, [`SnapshotRequests::forget`] when a topic loses its last subscriber here, and
//! [`SnapshotRequests::clear`] after a ring resync.

use crate::fanout::{ConnId, Topic};

/// Snapshot requests in flight, coalesced per topic: when thousands of connections subscribe to
/// the same topics at once, the ingester is asked once per topic and one snapshot record per
/// topic goes through the ring, instead of one per subscription (which would overflow the ring
/// and force a resync).
///
/// Why a waiter that joined after the request was sent gets a correct stream: its interest was
/// counted before it joined (the first waiter counted the topic's interest before asking, and
/// the count stays above zero while any waiter is subscribed), so every record of the topic the
/// ingester publishes after the snapshot is in the ring behind it. It gets the snapshot and then
/// exactly the records that follow it (seq + 1, + 2, …), as the first waiter does. That needs
/// the count to stay above zero from the request on, so a request whose topic loses its last
/// subscriber on this shard is forgotten (`forget`).
#[derive(Debug, Default)]
pub(crate) struct SnapshotRequests {
    /// Topic index → the request sent for it and the subscriptions waiting for its answer.
    in_flight: std::collections::HashMap<usize, InFlight>,
}

#[derive(Debug)]
struct InFlight {
    /// Who the request was sent for (the ingester echoes it in the snapshot).
    conn: ConnId,
    req: u32,
    /// (connection, subscription req) waiting, including the first.
    waiters: Vec<(ConnId, u32)>,
}

impl SnapshotRequests {
    /// Records that subscription `req` of `conn` waits for a snapshot of `topic`; true when no
    /// request is in flight for the topic, so the caller must send one.
    pub(crate) fn wait(&mut self, conn: ConnId, req: u32, topic: Topic) -> bool {
        match self.in_flight.entry(topic.index()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let waiters = &mut e.get_mut().waiters;
                // An older wait of the same slot is stale (a newer req replaced it, or the slot
                // has a new connection): at most one entry per slot.
                waiters.retain(|(c, _)| c.index != conn.index);
                waiters.push((conn, req));
                false
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(InFlight {
                    conn,
                    req,
                    waiters: vec![(conn, req)],
                });
                true
            }
        }
    }

    /// The snapshot for request (`conn`, `req`) of `topic` arrived: the subscriptions waiting
    /// for it (empty when it is not the request in flight for the topic).
    pub(crate) fn answered(&mut self, conn: ConnId, req: u32, topic: Topic) -> Vec<(ConnId, u32)> {
        match self.in_flight.get(&topic.index()) {
            Some(f) if f.conn == conn && f.req == req => self
                .in_flight
                .remove(&topic.index())
                .map(|f| f.waiters)
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Forgets the request in flight for `topic` (its interest dropped to zero: the records
    /// after its snapshot may not all reach this shard). A later subscriber asks again; the
    /// old answer then goes only to its own (gone) subscription.
    pub(crate) fn forget(&mut self, topic: Topic) {
        self.in_flight.remove(&topic.index());
    }

    /// Forgets every request in flight (after a ring resync, which asks again).
    pub(crate) fn clear(&mut self) {
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> ConnId {
        ConnId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn many_waiters_one_request_one_answer() {
        let mut s = SnapshotRequests::default();
        let t = Topic::book(3, 0, crate::fanout::Format::Binary);
        assert!(s.wait(id(1), 7, t));
        assert!(!s.wait(id(2), 0, t));
        assert!(
            !s.wait(id(2), 1, t),
            "a newer req of the same slot replaces the older"
        );
        assert!(
            s.answered(id(2), 1, t).is_empty(),
            "not the request in flight"
        );
        assert_eq!(s.answered(id(1), 7, t), [(id(1), 7), (id(2), 1)]);
        assert!(
            s.wait(id(3), 0, t),
            "answered: the next subscriber asks again"
        );
        s.forget(t);
        assert!(s.wait(id(3), 1, t));
    }
}
