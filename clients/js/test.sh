#!/usr/bin/env bash
# Tests of the TypeScript client (clients/js): install the dev dependencies from the committed
# lockfile, check that the committed dist/ is built from src/, then run the unit tests and the
# integration tests against the real daemon and feed-sim (built here if missing).
#
# Environment: TICKCAST_BIN, FEED_SIM_BIN (default ../../target/release/{tickcast,feed-sim}).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

export TICKCAST_BIN="${TICKCAST_BIN:-$repo/target/release/tickcast}"
export FEED_SIM_BIN="${FEED_SIM_BIN:-$repo/target/release/feed-sim}"
if [[ ! -x "$TICKCAST_BIN" || ! -x "$FEED_SIM_BIN" ]]; then
  echo "clients/js: building tickcast and feed-sim (release)"
  (cd "$repo" && cargo build --release -p tickcast -p feed-sim)
fi

npm ci --no-audit --no-fund
node scripts/check-dist.mjs
npm test
