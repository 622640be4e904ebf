#!/usr/bin/env bash
# Browser tests of the trading screen (ui/): Debian's chromium driven by playwright-core (npm, no
# browser download) against the real tickcast daemon and feed-sim.
#
#   ui/test.sh            screen tests, then the fps / main-thread measurements (printed, not asserted)
#   UI_PERF=0 ui/test.sh  screen tests only
#
# Environment: CHROMIUM (default /usr/bin/chromium; `apt-get install chromium`),
# TICKCAST_BIN_DIR (default target/release; built here unless SKIP_BUILD=1),
# UI_SERVED_BY_DAEMON=1 to load the page from the daemon instead of the tests' static server,
# UI_PERF_RATES (default 5000,20000), UI_PERF_SECONDS (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
    echo "ui/test.sh: no chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2
    exit 1
fi
if [[ "${SKIP_BUILD:-0}" != 1 && -z "${TICKCAST_BIN_DIR:-}" ]]; then
    cargo build --release --quiet -p tickcast -p feed-sim
fi

cd ui/tests
npm ci --no-audit --no-fund --loglevel=error
files=(unit.test.mjs screen.test.mjs)
if [[ "${UI_PERF:-1}" != 0 ]]; then
    files+=(perf.test.mjs)
fi
# Each test bounds itself; this bounds the whole run.
timeout --kill-after=10 600 node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
