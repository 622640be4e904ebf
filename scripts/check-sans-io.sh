#!/usr/bin/env bash
# The sans-IO rule, checked on every production line of engine/src:
# 1. protocol, book, wire, fan-out, control, metrics and feed decoding code takes bytes and time
#    and returns bytes and events: no sockets, threads or clocks (not even crate::clock);
# 2. nothing outside clock.rs reads a clock (`Instant::now`, `SystemTime::now`, `.elapsed()`);
#    the IO drivers (shard/, feed/ingest.rs) read it through crate::clock.
# Test code is exempt, and only test code: `tests.rs` files and each item under a `#[cfg(test)]`
# (or `#[cfg(all(test, ...))]`) attribute, e.g. a `mod tests { ... }` block, found by brace
# tracking; production code after such an item is checked again.
set -euo pipefail
cd "$(dirname "$0")/../engine/src"

# Prints FILE:LINE: TEXT for every production line of the given files matching the regex $1.
production_hits() {
  local pat=$1
  shift
  [ "$#" -gt 0 ] || return 0
  awk -v pat="$pat" '
    FNR == 1 { skipping = 0; armed = 0; depth = 0; opened = 0 }
    {
      line = $0
      # What braces are counted on: the line without string and char literals and comments.
      code = line
      gsub(/\\\\/, "", code)
      gsub(/\\"/, "", code)
      gsub(/"[^"]*"/, "\"\"", code)
      gsub(/'"'"'[^'"'"'\\]'"'"'/, "", code)
      sub(/\/\/.*/, "", code)
      if (!skipping && code ~ /#\[cfg\((all\()?test[,)]/) {
        skipping = 1; armed = 1; depth = 0; opened = 0
        sub(/.*#\[cfg\([^]]*\]/, "", code)
      }
      if (skipping) {
        n = split(code, ch, "")
        for (i = 1; i <= n; i++) {
          if (ch[i] == "{") { depth++; opened = 1 }
          else if (ch[i] == "}") { depth-- }
          else if (ch[i] == ";" && !opened && depth == 0 && armed) { opened = 1 }
        }
        # The test item ends where its braces close (or at its `;` for `mod tests;`).
        if (opened && depth <= 0) { skipping = 0; armed = 0 }
        next
      }
      if (line ~ pat && line !~ /^[[:space:]]*\/\//) print FILENAME ":" FNR ": " line
    }' "$@"
}

fail=0

pure=(proto book wire fanout control.rs feed/decode.rs feed/scan.rs feed/ws.rs feed/conflate.rs metrics.rs replay/mod.rs

  bus/mod.rs bus/leases.rs bus/pending.rs bus/replica.rs bus/resume.rs
  shard/conn.rs shard/core.rs shard/dispatch.rs shard/http.rs shard/lifecycle.rs shard/messages.rs
  shard/ladder.rs shard/snapshots.rs shard/streams.rs shard/subscriptions.rs shard/timers.rs shard/web.rs)
io_pattern='mio::|std::net::|TcpStream|UdpSocket|Instant::now|SystemTime::now|std::thread|clock::'
mapfile -d '' pure_files < <(find "${pure[@]}" -name '*.rs' ! -name 'tests.rs' -print0)
hits=$(production_hits "$io_pattern" "${pure_files[@]}")
if [ -n "$hits" ]; then
  echo "sans-IO violation (sockets, threads or clocks outside shard/, feed/ingest.rs, clock.rs):"
  echo "$hits"
  fail=1
fi

clock_pattern='Instant::now|SystemTime::now|\.elapsed\(\)'
mapfile -d '' all_files < <(find . -name '*.rs' ! -name 'tests.rs' ! -path './clock.rs' -print0)
hits=$(production_hits "$clock_pattern" "${all_files[@]}")
if [ -n "$hits" ]; then
  echo "clock read outside clock.rs (read the clock once per loop turn through crate::clock and pass \`now\` down):"
  echo "$hits"
  fail=1
fi

[ "$fail" -eq 0 ] || exit 1
echo "ok: ${pure[*]} are free of sockets, threads and clocks; only clock.rs reads the clocks"
