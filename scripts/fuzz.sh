#!/usr/bin/env bash
# Runs the cargo-fuzz targets of engine/fuzz (libFuzzer + AddressSanitizer, release build with
# debug assertions and overflow checks) for a given time each.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  time per target (default 60)
#   TARGET   handshake, frames, control, feed_decode, feed_scan_diff, tokens, tls_boundary, bus
#            (default: all eight, one after the other)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). No nightly toolchain is needed: the
# machine's stable compiler is run with RUSTC_BOOTSTRAP=1 so that cargo-fuzz's -Z flags are
# accepted; set FUZZ_TOOLCHAIN=nightly to use a nightly toolchain instead.
#
# Seeds are read from engine/fuzz/corpus/TARGET (committed, never written); what the fuzzer
# finds goes to engine/fuzz/work/TARGET (ignored by git) and is reused by the next run. A crash
# makes the script exit 1 after the other targets have run, and prints the reproducer's path
# (engine/fuzz/artifacts/TARGET/crash-...) and how to replay it.
set -euo pipefail
cd "$(dirname "$0")/../engine/fuzz"

all=(handshake frames control feed_decode feed_scan_diff tokens tls_boundary bus)
secs=${1:-60}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (targets: ${all[*]})" >&2
  exit 2
fi
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz_targets/$t.rs" ] || { echo "fuzz.sh: unknown target $t (targets: ${all[*]})" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
  fuzz=(cargo "+$FUZZ_TOOLCHAIN" fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
# -O: optimized; -a: with debug assertions and overflow checks; AddressSanitizer by default.
build_flags=(-O -a)

echo "== building fuzz targets (${fuzz[*]} build ${build_flags[*]})"
"${fuzz[@]}" build "${build_flags[@]}"

dict_for() {
  case $1 in
    handshake) echo "-dict=dict/http.dict" ;;
    control | feed_decode | feed_scan_diff) echo "-dict=dict/json.dict" ;;
  esac
}

failed=()
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  log="work/$t.log"
  marker=$(mktemp)
  echo "== $t: ${secs}s (log: engine/fuzz/$log)"
  set +e
  # shellcheck disable=SC2046 # dict_for prints zero or one word.
  "${fuzz[@]}" run "${build_flags[@]}" "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    $(dict_for "$t") >"$log" 2>&1
  rc=$?
  set -e
  summary=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "   ${runs:-?} runs; ${summary:-no libFuzzer status line}"
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    grep -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY' "$log" | head -n 5 | sed 's/^/   /' || true
    found=$(find "artifacts/$t" -type f -newer "$marker" 2>/dev/null || true)
    if [ -n "$found" ]; then
      while read -r a; do
        echo "   crash input: engine/fuzz/$a"
        echo "   replay:      (cd engine/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $t $a)"
      done <<<"$found"
    else
      echo "   exit status $rc without a crash input; see the log: tail engine/fuzz/$log"
    fi
  fi
  rm -f "$marker"
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ok: ${targets[*]} ran ${secs}s each without a crash"
