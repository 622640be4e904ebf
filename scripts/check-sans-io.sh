#!/usr/bin/env bash
# The sans-IO rule: protocol, book, wire and fan-out code takes bytes and time and returns bytes
# and events. Only the shard loop, the feed edge and the clock may touch sockets, threads or
# clocks (replay/epoch.rs reads the clock once, to draw an epoch). Test modules (from `#[cfg(test)]` to the end of a file) are exempt.
set -euo pipefail
cd "$(dirname "$0")/../engine/src"
pure=(proto book wire fanout control.rs feed/decode.rs metrics.rs shard/conn.rs shard/core.rs shard/dispatch.rs shard/http.rs shard/lifecycle.rs shard/messages.rs shard/snapshots.rs shard/subscriptions.rs shard/timers.rs replay/mod.rs)
pattern='mio::|std::net::|TcpStream|UdpSocket|Instant::now|SystemTime::now|std::thread|clock::'
hits=$(find "${pure[@]}" -name '*.rs' ! -name 'tests.rs' -print0 |
  xargs -0 awk -v pat="$pattern" '
    FNR == 1 { in_test = 0 }
    /#\[cfg\(test\)\]/ { in_test = 1 }
    !in_test && $0 ~ pat && $0 !~ /^[[:space:]]*\/\// { print FILENAME ":" FNR ": " $0 }')
if [ -n "$hits" ]; then
  echo "sans-IO violation (sockets, threads or clocks outside shard/, feed/ingest.rs, clock.rs):"
  echo "$hits"
  exit 1
fi
echo "ok: ${pure[*]} are free of sockets, threads and clocks"
