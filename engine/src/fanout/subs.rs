//! A shard's topic → subscribers table.

use super::Topic;

/// Connections (slot indexes) subscribed to each topic of one shard.
#[derive(Debug, Default)]
pub struct Subscribers {
    topics: Vec<Vec<u32>>,
}

impl Subscribers {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `conn` to `topic`. A connection is added at most once per topic by its caller.
    pub fn add(&mut self, topic: Topic, conn: u32) {
        let i = topic.index();
        if self.topics.len() <= i {
            self.topics.resize_with(i + 1, Vec::new);
        }
        if let Some(list) = self.topics.get_mut(i) {
            debug_assert!(!list.contains(&conn));
            list.push(conn);
        }
    }

    /// Removes `conn` from `topic`; returns whether it was there.
    pub fn remove(&mut self, topic: Topic, conn: u32) -> bool {
        let Some(list) = self.topics.get_mut(topic.index()) else {
            return false;
        };
        match list.iter().position(|&c| c == conn) {
            Some(pos) => {
                list.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// The subscribers of `topic`.
    pub fn get(&self, topic: Topic) -> &[u32] {
        self.topics.get(topic.index()).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Format;

    #[test]
    fn add_remove_get() {
        let mut s = Subscribers::new();
        let a = Topic::book(2, 0, Format::Binary);
        let b = Topic::trades(2, Format::Binary);
        s.add(a, 1);
        s.add(a, 5);
        s.add(b, 5);
        assert_eq!(s.get(a), &[1, 5]);
        assert_eq!(s.get(b), &[5]);
        assert!(s.remove(a, 1));
        assert!(!s.remove(a, 1));
        assert_eq!(s.get(a), &[5]);
        assert!(s.get(Topic::book(9, 0, Format::Json)).is_empty());
    }
}
