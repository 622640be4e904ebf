use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn lv(px: i64, qty: i64) -> Level {
    Level { px, qty }
}

fn idx(depth: u16) -> usize {
    depth_index(depth).unwrap_or(usize::MAX)
}

/// Applies one update (several changes) and returns the finished deltas.
fn update(book: &mut Book, changes: &[(Side, i64, i64)]) -> WindowDeltas {
    let mut w = WindowDeltas::new();
    for &(side, px, qty) in changes {
        book.apply(side, px, qty, &mut w).unwrap();
    }
    w.finish();
    w
}

#[test]
fn depth_index_maps_supported_depths_only() {
    assert_eq!(depth_index(1), Some(0));
    assert_eq!(depth_index(10), Some(1));
    assert_eq!(depth_index(25), Some(2));
    assert_eq!(depth_index(100), Some(3));
    assert_eq!(depth_index(0), Some(4));
    assert_eq!(depth_index(5), None);
    assert_eq!(depth_index(u16::MAX), None);
}

#[test]
fn apply_keeps_sides_sorted_best_first() {
    let mut b = Book::new();
    let mut w = WindowDeltas::new();
    for px in [100, 102, 101] {
        b.apply(Side::Bid, px, 1, &mut w).unwrap();
        b.apply(Side::Ask, px + 10, 1, &mut w).unwrap();
    }
    assert_eq!(b.bids(), &[lv(102, 1), lv(101, 1), lv(100, 1)]);
    assert_eq!(b.asks(), &[lv(110, 1), lv(111, 1), lv(112, 1)]);
    assert_eq!(b.top(Side::Bid, 2), &[lv(102, 1), lv(101, 1)]);
    assert_eq!(b.top(Side::Ask, 0).len(), 3);
    assert_eq!(b.top(Side::Ask, 50).len(), 3);
    assert!(!b.is_crossed());
}

#[test]
fn insert_at_top_pushes_level_n_out() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 5), lv(99, 4)], &[]).unwrap();
    let w = update(&mut b, &[(Side::Bid, 101, 7)]);
    // Depth 1: the new best enters, the old best leaves.
    assert_eq!(w.bids(idx(1)), &[lv(101, 7), lv(100, 0)]);
    assert!(w.asks(idx(1)).is_empty());
    // Depth 10 holds all three levels: only the insert.
    assert_eq!(w.bids(idx(10)), &[lv(101, 7)]);
    assert_eq!(w.bids(idx(0)), &[lv(101, 7)]);
}

#[test]
fn remove_at_top_pulls_next_level_in() {
    let mut b = Book::new();
    b.load_snapshot(&[], &[lv(200, 1), lv(201, 2), lv(202, 3)])
        .unwrap();
    let w = update(&mut b, &[(Side::Ask, 200, 0)]);
    assert_eq!(w.asks(idx(1)), &[lv(200, 0), lv(201, 2)]);
    assert_eq!(w.asks(idx(10)), &[lv(200, 0)]);
    assert!(w.bids(idx(1)).is_empty());
    assert_eq!(b.asks(), &[lv(201, 2), lv(202, 3)]);
}

#[test]
fn change_outside_window_records_nothing_for_that_depth() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1), lv(99, 1)], &[]).unwrap();
    let w = update(&mut b, &[(Side::Bid, 98, 3), (Side::Bid, 99, 2)]);
    assert!(w.is_empty(idx(1)));
    assert_eq!(w.bids(idx(10)), &[lv(99, 2), lv(98, 3)]);
}

#[test]
fn book_shorter_than_depth() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1)], &[lv(101, 1)]).unwrap();
    let w = update(&mut b, &[(Side::Bid, 99, 1), (Side::Ask, 101, 0)]);
    assert_eq!(w.bids(idx(25)), &[lv(99, 1)]);
    assert_eq!(w.asks(idx(25)), &[lv(101, 0)]);
    // Depth 1: the bid insert is below the best; the ask removal has nothing to pull in.
    assert!(w.bids(idx(1)).is_empty());
    assert_eq!(w.asks(idx(1)), &[lv(101, 0)]);
    assert_eq!(b.top(Side::Bid, 25), &[lv(100, 1), lv(99, 1)]);
}

#[test]
fn removing_absent_level_is_a_no_op() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1)], &[]).unwrap();
    let before = b.clone();
    let w = update(&mut b, &[(Side::Bid, 50, 0), (Side::Ask, 100, 0)]);
    assert_eq!(b, before);
    for d in 0..DEPTH_COUNT {
        assert!(w.is_empty(d));
    }
}

#[test]
fn unchanged_qty_records_nothing() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1)], &[]).unwrap();
    let w = update(&mut b, &[(Side::Bid, 100, 1)]);
    assert!(w.is_empty(idx(0)));
}

#[test]
fn negative_qty_is_rejected_without_change() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1)], &[]).unwrap();
    let mut w = WindowDeltas::new();
    let err = b.apply(Side::Bid, 100, -1, &mut w).unwrap_err();
    assert_eq!(
        err,
        BookError::NegativeQty {
            side: Side::Bid,
            px: 100,
            qty: -1
        }
    );
    w.finish();
    assert!(w.is_empty(idx(0)));
    assert_eq!(b.bids(), &[lv(100, 1)]);
}

#[test]
fn coalescing_keeps_last_write_and_drops_cancelled_levels() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1), lv(99, 1)], &[]).unwrap();
    // 101 inserted then removed within one update: no change for any client.
    // 100 set twice: last write wins.
    let w = update(
        &mut b,
        &[
            (Side::Bid, 101, 5),
            (Side::Bid, 100, 2),
            (Side::Bid, 101, 0),
            (Side::Bid, 100, 3),
        ],
    );
    assert_eq!(w.bids(idx(1)), &[lv(100, 3)]);
    assert_eq!(w.bids(idx(10)), &[lv(100, 3)]);
    assert_eq!(w.bids(idx(0)), &[lv(100, 3)]);
}

#[test]
fn removed_then_reinserted_level_is_kept() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(100, 1)], &[]).unwrap();
    let w = update(&mut b, &[(Side::Bid, 100, 0), (Side::Bid, 100, 4)]);
    assert_eq!(w.bids(idx(1)), &[lv(100, 4)]);
}

#[test]
fn clear_resets_deltas_and_unknown_depth_index_is_empty() {
    let mut b = Book::new();
    let mut w = WindowDeltas::new();
    b.apply(Side::Bid, 1, 1, &mut w).unwrap();
    w.finish();
    assert!(!w.is_empty(0));
    w.clear();
    assert!(w.is_empty(0));
    assert!(w.is_empty(DEPTH_COUNT));
    assert!(w.bids(99).is_empty());
}

#[test]
fn is_crossed_detects_crossed_and_locked_books() {
    let mut b = Book::new();
    assert!(!b.is_crossed());
    b.load_snapshot(&[lv(100, 1)], &[lv(100, 1)]).unwrap();
    assert!(b.is_crossed());
    b.load_snapshot(&[lv(101, 1)], &[lv(100, 1)]).unwrap();
    assert!(b.is_crossed());
    b.load_snapshot(&[lv(99, 1)], &[]).unwrap();
    assert!(!b.is_crossed());
}

#[test]
fn snapshot_sorts_and_validates() {
    let mut b = Book::new();
    b.load_snapshot(&[lv(1, 1), lv(3, 1), lv(2, 1)], &[lv(9, 1), lv(7, 1)])
        .unwrap();
    assert_eq!(b.bids(), &[lv(3, 1), lv(2, 1), lv(1, 1)]);
    assert_eq!(b.asks(), &[lv(7, 1), lv(9, 1)]);

    assert_eq!(
        b.load_snapshot(&[lv(1, 1), lv(1, 2)], &[]),
        Err(BookError::DuplicatePrice {
            side: Side::Bid,
            px: 1
        })
    );
    assert!(b.bids().is_empty() && b.asks().is_empty());
    assert_eq!(
        b.load_snapshot(&[lv(1, 1)], &[lv(5, 0)]),
        Err(BookError::SnapshotQty {
            side: Side::Ask,
            px: 5,
            qty: 0
        })
    );
    assert!(b.bids().is_empty() && b.asks().is_empty());
    assert!(matches!(
        b.load_snapshot(&[lv(1, -3)], &[]),
        Err(BookError::SnapshotQty { qty: -3, .. })
    ));
}

// ---- properties -------------------------------------------------------------------------

fn side_strategy() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Bid), Just(Side::Ask)]
}

/// Changes over a narrow price range so that levels are hit repeatedly; a third are removals.
fn change_strategy(px_range: i64) -> impl Strategy<Value = (Side, i64, i64)> {
    (
        side_strategy(),
        0..px_range,
        prop_oneof![1 => Just(0i64), 2 => 1..1_000i64],
    )
}

fn snapshot_strategy(px_range: i64) -> impl Strategy<Value = Vec<Level>> {
    proptest::collection::btree_map(0..px_range, 1..1_000i64, 0..(px_range as usize))
        .prop_map(|m| m.into_iter().map(|(px, qty)| lv(px, qty)).collect())
}

/// Levels of a model side, best first.
fn model_levels(side: Side, m: &BTreeMap<i64, i64>) -> Vec<Level> {
    let mut v: Vec<Level> = m.iter().map(|(&px, &qty)| lv(px, qty)).collect();
    if side == Side::Bid {
        v.reverse();
    }
    v
}

fn model_of(levels: &[Level]) -> BTreeMap<i64, i64> {
    levels.iter().map(|l| (l.px, l.qty)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Incremental application equals the book built from scratch from the final level set.
    #[test]
    fn incremental_equals_rebuilt(changes in proptest::collection::vec(change_strategy(40), 0..300)) {
        let mut book = Book::new();
        let mut w = WindowDeltas::new();
        let mut model = [BTreeMap::new(), BTreeMap::new()];
        for &(side, px, qty) in &changes {
            book.apply(side, px, qty, &mut w).unwrap();
            let m = &mut model[side_slot(side)];
            if qty == 0 { m.remove(&px); } else { m.insert(px, qty); }
        }
        let bids = model_levels(Side::Bid, &model[0]);
        let asks = model_levels(Side::Ask, &model[1]);
        let mut rebuilt = Book::new();
        // Feed the snapshot in scrambled order: load_snapshot must sort.
        let mut scrambled_bids = bids.clone();
        scrambled_bids.reverse();
        rebuilt.load_snapshot(&scrambled_bids, &asks).unwrap();
        prop_assert_eq!(book.bids(), bids.as_slice());
        prop_assert_eq!(book.asks(), asks.as_slice());
        prop_assert_eq!(&book, &rebuilt);
    }

    /// For every depth, a client replica applying the coalesced deltas of each multi-change
    /// update holds exactly `top(N)` after each update, and is never told to remove a level it
    /// does not hold.
    #[test]
    fn replica_windows_track_top_n(
        bids in snapshot_strategy(250),
        asks in snapshot_strategy(250),
        updates in proptest::collection::vec(
            proptest::collection::vec(change_strategy(250), 1..12), 1..40),
    ) {
        let mut book = Book::new();
        book.load_snapshot(&bids, &asks).unwrap();
        let mut replicas: Vec<[BTreeMap<i64, i64>; 2]> = DEPTHS
            .iter()
            .map(|&n| {
                let n = usize::from(n);
                [model_of(book.top(Side::Bid, n)), model_of(book.top(Side::Ask, n))]
            })
            .collect();
        let mut w = WindowDeltas::new();
        for changes in &updates {
            w.clear();
            for &(side, px, qty) in changes {
                book.apply(side, px, qty, &mut w).unwrap();
            }
            w.finish();
            for (d, &depth) in DEPTHS.iter().enumerate() {
                for side in [Side::Bid, Side::Ask] {
                    let deltas = w.side(d, side);
                    // One entry per price, best first.
                    prop_assert!(deltas
                        .windows(2)
                        .all(|p| side.cmp_px(p[0].px, p[1].px) == Ordering::Less));
                    let replica = &mut replicas[d][side_slot(side)];
                    for l in deltas {
                        if l.qty == 0 {
                            prop_assert!(replica.remove(&l.px).is_some(),
                                "depth {} {:?}: removal of absent level {}", depth, side, l.px);
                        } else {
                            replica.insert(l.px, l.qty);
                        }
                    }
                    let got = model_levels(side, replica);
                    prop_assert_eq!(got.as_slice(), book.top(side, usize::from(depth)),
                        "depth {} {:?}", depth, side);
                }
            }
        }
    }

    /// The search from the top agrees with a binary search, at any price, on both sides.
    #[test]
    fn find_agrees_with_binary_search(
        prices in proptest::collection::btree_set(any::<i64>(), 0..300),
        probe in any::<i64>(),
        pick in any::<prop::sample::Index>(),
        side in side_strategy(),
    ) {
        let mut levels: Vec<Level> = prices.iter().map(|&px| lv(px, 1)).collect();
        if side == Side::Bid {
            levels.reverse();
        }
        let present = if levels.is_empty() { probe } else { levels[pick.index(levels.len())].px };
        for px in [probe, present, i64::MIN, i64::MAX] {
            prop_assert_eq!(
                find(&levels, side, px),
                levels.binary_search_by(|l| side.cmp_px(l.px, px))
            );
        }
    }

    /// Watching only some depths records exactly what watching all of them records for those
    /// depths, nothing for the others, and changes the book the same way.
    #[test]
    fn watched_depths_match_the_full_computation(
        bids in snapshot_strategy(150),
        asks in snapshot_strategy(150),
        updates in proptest::collection::vec(
            (0..=ALL_DEPTHS, proptest::collection::vec(change_strategy(150), 1..6)), 1..30),
    ) {
        let mut full = Book::new();
        full.load_snapshot(&bids, &asks).unwrap();
        let mut masked = full.clone();
        let (mut wf, mut wm) = (WindowDeltas::new(), WindowDeltas::new());
        for (mask, changes) in &updates {
            wf.clear();
            wm.clear();
            wm.set_watched(*mask);
            for &(side, px, qty) in changes {
                full.apply(side, px, qty, &mut wf).unwrap();
                masked.apply(side, px, qty, &mut wm).unwrap();
            }
            wf.finish();
            wm.finish();
            prop_assert_eq!(&full, &masked);
            for d in 0..DEPTH_COUNT {
                for side in [Side::Bid, Side::Ask] {
                    if mask & (1 << d) != 0 {
                        prop_assert_eq!(wm.side(d, side), wf.side(d, side));
                    } else {
                        prop_assert!(wm.side(d, side).is_empty());
                    }
                }
            }
        }
    }

    /// Snapshots with a non-positive quantity or a duplicate price are rejected; valid ones
    /// load sorted.
    #[test]
    fn snapshot_rejects_bad_input(
        mut levels in proptest::collection::vec((0..50i64, -5..5i64), 0..40),
        side in side_strategy(),
    ) {
        let input: Vec<Level> = levels.drain(..).map(|(px, qty)| lv(px, qty)).collect();
        let mut book = Book::new();
        let res = match side {
            Side::Bid => book.load_snapshot(&input, &[]),
            Side::Ask => book.load_snapshot(&[], &input),
        };
        let has_bad_qty = input.iter().any(|l| l.qty <= 0);
        let mut pxs: Vec<i64> = input.iter().map(|l| l.px).collect();
        pxs.sort_unstable();
        let has_dup = pxs.windows(2).any(|p| p[0] == p[1]);
        if has_bad_qty {
            prop_assert!(
                matches!(res, Err(BookError::SnapshotQty { qty, .. }) if qty <= 0),
                "expected SnapshotQty, got {:?}",
                res
            );
        } else if has_dup {
            prop_assert!(
                matches!(res, Err(BookError::DuplicatePrice { .. })),
                "expected DuplicatePrice, got {:?}",
                res
            );
        } else {
            prop_assert!(res.is_ok());
            let got = book.top(side, 0);
            prop_assert_eq!(got.len(), input.len());
            prop_assert!(got.windows(2).all(|p| side.cmp_px(p[0].px, p[1].px) == Ordering::Less));
        }
        if res.is_err() {
            prop_assert!(book.bids().is_empty() && book.asks().is_empty());
        }
    }
}

/// A book drifting in one direction for a long time (levels added at the top and removed at
/// the bottom, then the reverse) stays correct, and its free room stays bounded.
#[test]
fn drifting_book_keeps_levels_and_bounded_room() {
    let mut book = Book::new();
    let mut w = WindowDeltas::new();
    let (mut lo, mut hi) = (1_000i64, 1_150i64);
    for px in lo..hi {
        book.apply(Side::Bid, px, 1, &mut w).unwrap();
    }
    for _ in 0..5_000 {
        book.apply(Side::Bid, hi, 1, &mut w).unwrap();
        book.apply(Side::Bid, lo, 0, &mut w).unwrap();
        hi += 1;
        lo += 1;
        w.clear();
    }
    for _ in 0..5_000 {
        lo -= 1;
        hi -= 1;
        book.apply(Side::Bid, lo, 1, &mut w).unwrap();
        book.apply(Side::Bid, hi, 0, &mut w).unwrap();
        w.clear();
    }
    let want: Vec<Level> = (lo..hi).rev().map(|px| lv(px, 1)).collect();
    assert_eq!(book.bids(), want.as_slice());
    assert!(
        book.bids.buf.len() <= 2 * want.len() + 64,
        "{}",
        book.bids.buf.len()
    );
}

proptest! {
    /// The double-ended level storage behaves as a plain vector under any inserts and removals.
    #[test]
    fn levels_behave_as_a_vec(ops in proptest::collection::vec((any::<bool>(), 0usize..400, any::<i64>()), 0..600)) {
        let mut levels = Levels::default();
        let mut model: Vec<Level> = Vec::new();
        for (insert, at, px) in ops {
            if insert || model.is_empty() {
                let at = at % (model.len() + 1);
                levels.insert(at, lv(px, 1));
                model.insert(at, lv(px, 1));
            } else {
                let at = at % model.len();
                levels.remove(at);
                model.remove(at);
            }
            prop_assert_eq!(levels.as_slice(), model.as_slice());
        }
    }
}

#[test]
fn unwatched_depths_are_told_they_changed_without_deltas() {
    let mut book = Book::new();
    let lv = |px, qty| Level { px, qty };
    book.load_snapshot(&[lv(100, 1), lv(99, 1)], &[lv(101, 1)])
        .unwrap();
    let mut w = WindowDeltas::new();
    w.clear();
    w.set_watched(1 << 1); // depth 10 only
    book.apply(Side::Bid, 98, 5, &mut w).unwrap(); // 3rd bid: inside 10, 25, 100, 0; not 1
    w.finish();
    assert!(!w.is_empty(1) && w.changed(1));
    assert!(!w.changed(0), "depth 1 untouched");
    for d in 2..DEPTH_COUNT {
        assert!(w.is_empty(d) && w.changed(d), "depth index {d}");
    }
    w.clear();
    for d in 0..DEPTH_COUNT {
        assert!(!w.changed(d));
    }
}
