#!/usr/bin/env bash
# Runs the benchmark scenarios of docs/benchmarks.md against tickcast and the two broadcast
# peers (bench/peers/), in the same run, interleaved round by round, and writes the medians
# into docs/benchmarks.md between <!-- bench:begin --> and <!-- bench:end -->.
#
#   scripts/bench.sh [--quick] [--rounds N] [--cases "ramp-1k light ..."] [--targets "tickcast node-ws"]
#                    [--out DIR] [--nice N] [--slow-window SECS] [--no-doc] [--base-engine BIN]
#
# The engine and the peers run on CPU 0 (taskset -c 0), the load on CPU 1 (taskset -c 1).
# --quick: one round, short windows, small sizes: a smoke run (the doc is not written).
# --nice N: run targets and load at this nice value, and set the session's scheduler
#           autogroup to it (with autogroups, plain nice does not count against other sessions);
#           e.g. -10 on a machine shared with compiles. The doc records it; reset after the run.
# --base-engine BIN: also measure another tickcast binary (e.g. the previous build) as target
#           "tickcast-base", interleaved with the others (add it to --targets).
# Results: DIR/round-N/CASE-LABEL.{json,svg,log} and .hgrm files (default target/bench-results/DATE).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

QUICK=0
ROUNDS=3
CASES="ramp-1k fixed-10k light connections slow burst"
TARGETS="tickcast tokio-broadcast node-ws"
OUT=""
NICE=0
WRITE_DOC=1
BASE_ENGINE=""
SLOW_WIN_ARG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --cases) CASES=$2; shift ;;
        --targets) TARGETS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --nice) NICE=$2; shift ;;
        --slow-window) SLOW_WIN_ARG=$2; shift ;;
        --no-doc) WRITE_DOC=0 ;;
        --base-engine) BASE_ENGINE=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    ROUNDS=1
    WRITE_DOC=0
fi
OUT=${OUT:-$ROOT/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

# The code measured: the commit the binaries are built from (and whether the tree had changes).
BUILT_FROM=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    BUILT_FROM="$BUILT_FROM plus uncommitted changes"
fi

echo "== build (release)"
cargo build --release -p tickcast -p tickcast-bench -p tokio-broadcast-peer
BIN=$CARGO_TARGET_DIR/release
if [ ! -d bench/peers/node-ws/node_modules/ws ]; then
    echo "== npm install (bench/peers/node-ws)"
    (cd bench/peers/node-ws && npm ci --no-audit --no-fund)
fi

NICE_CMD=""
AUTOGROUP_BEFORE=""
if [ "$NICE" != 0 ]; then
    NICE_CMD="nice -n $NICE"
    if [ -w /proc/self/autogroup ]; then
        AUTOGROUP_BEFORE=$(sed -n 's/.*nice //p' /proc/self/autogroup)
        echo "$NICE" > /proc/self/autogroup || true
        trap 'echo "${AUTOGROUP_BEFORE:-0}" > /proc/self/autogroup 2>/dev/null || true' EXIT
    fi
fi
ENGINE="$NICE_CMD taskset -c 0 $BIN/tickcast --listen 127.0.0.1:{port} --feed {feed} --shards 1"
LOAD="$NICE_CMD taskset -c 1 $BIN/tickcast-bench"

# Sizes: full run, or --quick.
if [ "$QUICK" = 1 ]; then
    WIN=3; SETTLE=1; SLOW_WIN=8
    RAMP_TC="100:2:400"; RAMP_PEER="10:2:40"
    CONNS_10K=2000; CONNS_IDLE=4000; CONNS_SLOW=100; RATE_SLOW_TC=1500; RATE_SLOW_PEER=1500
else
    # slow: a stopped subscriber is evicted only once the kernel's send buffer for it (autotuned
    # up to tcp_wmem's maximum, 4 MiB here) and then the engine's out-buffer are full: at ~2,200
    # records/s each (~160 KB/s) that takes ~25 s, hence 35 s windows.
    WIN=6; SETTLE=2; SLOW_WIN=35
    RAMP_TC="100:1.5:20000"; RAMP_PEER="10:1.5:20000"
    CONNS_10K=10000; CONNS_IDLE=19800; CONNS_SLOW=300; RATE_SLOW_TC=2500; RATE_SLOW_PEER=2500
fi

SLOW_WIN=${SLOW_WIN_ARG:-$SLOW_WIN}

# run CASE LABEL SCENARIO ARGS...: one scenario against one target.
run() {
    local case=$1 label=$2 scenario=$3; shift 3
    local target_args
    case "$label" in
        tickcast) target_args=(--target tickcast --target-cmd "$ENGINE $TC_EXTRA") ;;
        tickcast-base)
            [ -n "$BASE_ENGINE" ] || { echo "bench.sh: tickcast-base needs --base-engine BIN" >&2; return 2; }
            target_args=(--target tickcast --target-cmd "${ENGINE/$BIN\/tickcast/$BASE_ENGINE} $TC_EXTRA") ;;
        tokio-broadcast) target_args=(--target peer --target-cmd "$NICE_CMD taskset -c 0 $BIN/tokio-broadcast 127.0.0.1:{port}") ;;
        node-ws) target_args=(--target peer --target-cmd "$NICE_CMD taskset -c 0 node $ROOT/bench/peers/node-ws/server.js {port}") ;;
        *) echo "bench.sh: unknown target $label" >&2; return 2 ;;
    esac
    echo "== round $ROUND: $case against $label"
    # shellcheck disable=SC2086
    $LOAD "$scenario" --case "$case" --label "$label" "${target_args[@]}" --out "$OUT/round-$ROUND" "$@" \
        || echo "bench.sh: $case against $label failed (exit $?); continuing" >&2
}

# case CASE: every target, with the arguments of that case.
run_case() {
    local case=$1 label
    for label in $TARGETS; do
        TC_EXTRA=""
        local peer=0
        case "$label" in tickcast|tickcast-base) ;; *) peer=1 ;; esac
        case "$case" in
            ramp-1k)
                # Every subscriber takes every symbol, so tickcast and the peers deliver every record
                # to every subscriber; ramp until loss or p99 > 20 ms.
                if [ $peer = 0 ]; then r=$RAMP_TC; else r=$RAMP_PEER; fi
                run "$case" "$label" fanout --conns 1000 --symbols-per-conn 0 --ramp "$r" \
                    --window $WIN --settle $SETTLE --p99-bound-ms 20 ;;
            fixed-10k)
                # 10,000 subscribers on every symbol at ~100 records/s each: ~1,000,000 delivered/s.
                if [ $peer = 0 ]; then r=110; else r=100; fi
                run "$case" "$label" fanout --conns $CONNS_10K --symbols-per-conn 0 --rates $r \
                    --connect-rate 2000 --procs 2 --window $WIN --settle $SETTLE --p99-bound-ms 50 ;;
            light)
                # 1,000 subscribers on 5 of 50 symbols, 1,000 updates/s in (~100,000 delivered/s);
                # peers: the same delivered rate (100 records/s to everyone).
                if [ $peer = 0 ]; then r=1000; else r=100; fi
                run "$case" "$label" fanout --conns 1000 --symbols-per-conn 5 --rates $r \
                    --window $WIN --settle $SETTLE --p99-bound-ms 5 ;;
            connections)
                # Idle subscribers, one symbol each, 10 updates/s in: RSS per subscriber.
                run "$case" "$label" connections --conns $CONNS_IDLE --symbols-per-conn 1 --rates 10 \
                    --connect-rate 4000 --window 5 --settle 3 ;;
            slow)
                # 10 % of the subscribers stop reading (16 KiB receive buffer); the engine's out-buffer
                # bound is 128 KiB (default 4 MiB) so that they are evicted within the window.
                TC_EXTRA="--max-outbuf-bytes 131072"
                if [ $peer = 0 ]; then r=$RATE_SLOW_TC; else r=$RATE_SLOW_PEER; fi
                run "$case" "$label" slow --conns $CONNS_SLOW --symbols-per-conn 0 --rates $r \
                    --stop-share 0.1 --stopper-rcvbuf 16384 --window $SLOW_WIN --settle $SETTLE \
                    --p99-bound-ms 1000000 ;;
            burst)
                # 100 updates/s (peers: records/s) with 10x bursts of 200 ms every 2 s.
                run "$case" "$label" burst --conns 1000 --symbols-per-conn 0 --rates 100 \
                    --burst-factor 10 --burst-ms 200 --burst-every-ms 2000 --window $WIN \
                    --settle $SETTLE --p99-bound-ms 1000000 ;;
            *) echo "bench.sh: unknown case $case" >&2; return 2 ;;
        esac
    done
}

for ROUND in $(seq 1 "$ROUNDS"); do
    for c in $CASES; do
        run_case "$c"
    done
done

echo "== summary"
PLOTS=$ROOT/docs/bench
PREAMBLE="Generated by \`scripts/bench.sh\` (rounds: $ROUNDS, nice: $NICE) on $(date -u +%Y-%m-%d) from commit \`$BUILT_FROM\`; raw results in \`${OUT#"$ROOT"/}\`. Engine and peers pinned to CPU 0, load to CPU 1; the machine is shared (1-minute load average before runs: $(cut -d' ' -f1 /proc/loadavg))."
if [ "$WRITE_DOC" = 1 ]; then
    $BIN/tickcast-bench summarize --results "$OUT" --doc docs/benchmarks.md --plots "$PLOTS" \
        --plots-link bench --preamble "$PREAMBLE"
    echo "docs/benchmarks.md updated (plots in docs/bench/)"
else
    $BIN/tickcast-bench summarize --results "$OUT" --plots "$OUT/plots" --preamble "$PREAMBLE" \
        > "$OUT/summary.md"
    echo "summary: $OUT/summary.md"
fi
