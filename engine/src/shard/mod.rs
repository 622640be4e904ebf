//! shard (work in progress).
