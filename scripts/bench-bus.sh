#!/usr/bin/env bash
# The bus benchmark of docs/benchmarks.md ("The bus"): on loopback, a nats-server (with its
# monitoring port), an ingest node on the embedded simulator and one edge, 1,000 subscribers
# of the edge (tickcast-bench), alternated with the same load on an edge whose ingest node
# publishes every stream (--bus-publish-all, the version-1 way) and on a standalone daemon,
# ROUNDS times (MODES="edge edge-all standalone"). Per run: delivered records/s,
# recv_ts -> client and exch_ts -> client p50/p99, the daemon's (edge's) and the ingest node's
# CPU, and during the middle of the measured window NATS messages and bytes per second in and
# out (/varz), the ingest node's records per published message, nats-server's CPU, and the
# edge's per-hop latency (p50/p99 estimated from its tickcast_bus_hop_latency_seconds and
# tickcast_delivery_latency_seconds histograms over the same window, linear within a bucket).
# Every clock read is this machine's, so the hops' stamps agree. Ends with a per-hop table
# and the medians per mode.
#
#   scripts/bench-bus.sh                    # RATE=2000 SYMBOLS=50 CONNS=1000 DUR=10 ROUNDS=2
#   scripts/bench-bus.sh ramp               # RAMP=100:1.5:20000 WIN=6 ROUNDS=2: edge vs standalone
#
# Needs release builds (cargo build --release -p tickcast -p tickcast-bench) and nats-server
# (NATS_SERVER_BIN or PATH; scripts/deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export RATE="${RATE:-2000}" CONNS="${CONNS:-1000}" DUR="${DUR:-10}" ROUNDS="${ROUNDS:-2}"
export SYMBOLS="${SYMBOLS:-50}" MODES="${MODES:-edge edge-all standalone}"
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$(command -v nats-server || true)}"
[ -x "$NATS_SERVER_BIN" ] || { echo "no nats-server (set NATS_SERVER_BIN)" >&2; exit 1; }
for b in target/release/tickcast target/release/tickcast-bench; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p tickcast -p tickcast-bench" >&2; exit 1; }
done
if [ "${1:-}" = ramp ]; then
    # An edge's highest delivered records/s against a standalone daemon's, alternated: the
    # `fanout` ramp of scripts/bench.sh (1,000 subscribers of every symbol, until loss or p99 >
    # P99 ms, default 20), the daemon (standalone, or the edge) on CPU 0, the load, nats-server and the
    # ingest node on CPU 1. RAMP=START:FACTOR:MAX, WIN seconds per step.
    RAMP="${RAMP:-100:1.5:20000}" WIN="${WIN:-6}"
    OUT="${OUT:-$(mktemp -d /tmp/bench-bus-ramp-XXXX)}"
    BIN=$PWD/target/release
    NP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
    taskset -c 1 "$NATS_SERVER_BIN" -a 127.0.0.1 -p "$NP" >/dev/null 2>&1 &
    NPID=$!
    trap 'kill $NPID 2>/dev/null || true; [ -s "$OUT/ingest.pid" ] && kill "$(cat "$OUT/ingest.pid")" 2>/dev/null || true' EXIT
    sleep 0.5
    STANDALONE="taskset -c 0 $BIN/tickcast --listen 127.0.0.1:{port} --feed {feed} --shards 1"
    EDGE="sh -c 'taskset -c 1 $BIN/tickcast --role ingest --nats-url nats://127.0.0.1:$NP --feed {feed} --listen 127.0.0.1:0 --shards 1 & echo \$! > $OUT/ingest.pid; exec taskset -c 0 $BIN/tickcast --role edge --nats-url nats://127.0.0.1:$NP --listen 127.0.0.1:{port} --shards 1'"
    for round in $(seq 1 "$ROUNDS"); do
        for label in edge standalone; do
            if [ "$label" = edge ]; then cmd=$EDGE; else cmd=$STANDALONE; fi
            echo "== round $round: $label (load average $(cut -d' ' -f1-3 /proc/loadavg))"
            taskset -c 1 "$BIN/tickcast-bench" fanout --case ramp-1k --label "$label" \
                --target tickcast --target-cmd "$cmd" --out "$OUT/round-$round" \
                --conns 1000 --symbols-per-conn 0 --ramp "$RAMP" --window "$WIN" --settle 2 \
                --p99-bound-ms "${P99:-20}" --quiet || echo "ramp against $label failed" >&2
            if [ -s "$OUT/ingest.pid" ]; then kill "$(cat "$OUT/ingest.pid")" 2>/dev/null || true; : > "$OUT/ingest.pid"; fi
        done
    done
    # Delivered records/s per core (delivered / the daemon's CPU share) at every step, and the
    # edge's over standalone's at the same step of the same round.
    python3 - "$OUT" <<'PY'
import glob, json, sys
rows = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/round-*/**/*.json", recursive=True)):
    try:
        r = json.load(open(f))
    except Exception:
        continue
    if "steps" not in r:
        continue
    rnd = f.split("/round-")[1].split("/")[0]
    best = r.get("best_step")
    for i, s in enumerate(r["steps"]):
        cpu = (s.get("target_cpu") or {}).get("total_pct") or 0
        step = float(s["name"].split()[-1]) if s.get("name", "").split()[-1:] else s["input_rate"]
        rows.setdefault((rnd, step), {})[r["label"]] = (
            s["records_per_sec"], cpu, s["latency_us"]["recv_to_client"]["p99"] / 1000,
            s.get("pass"), i == best, s.get("loadavg", [0, 0])[1])
print("| round | step (input/s) | edge: delivered/s, CPU %, per core, p99 ms | standalone: the same | edge / standalone per core |")
print("|---|---|---|---|---|")
for (rnd, rate), by in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    cells, per = [], {}
    for label in ["edge", "standalone"]:
        if label not in by:
            cells.append("-"); continue
        rec, cpu, p99, ok, best, load = by[label]
        per[label] = rec / (cpu / 100) if cpu else 0
        cells.append(f"{rec / 1e6:.2f} M, {cpu:.1f} %, {per[label] / 1e6:.2f} M, {p99:.1f}{' best' if best else ''}{'' if ok else ' FAIL'} (load {load:.1f})")
    ratio = f"{per['edge'] / per['standalone']:.2f}" if per.get("standalone") and "edge" in per else "-"
    print(f"| {rnd} | {rate:.0f} | {cells[0]} | {cells[1]} | {ratio} |")
PY
    echo "results in $OUT"
    exit 0
fi
exec python3 - <<'PY'
import json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

RATE, CONNS, DUR, ROUNDS = os.environ["RATE"], int(os.environ["CONNS"]), int(os.environ["DUR"]), int(os.environ["ROUNDS"])
SYMBOLS, MODES = os.environ["SYMBOLS"], os.environ["MODES"].split()
TC, BENCH, NATS = "target/release/tickcast", "target/release/tickcast-bench", os.environ["NATS_SERVER_BIN"]
HZ = os.sysconf("SC_CLK_TCK")
HOPS = ["feed", "ingest", "nats", "edge"]
out = tempfile.mkdtemp(prefix="bench-bus-")

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()

def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def scrape(addr):
    return get(f"http://{addr}/metrics")[1] if addr else ""

def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0

def buckets(text, family, label):
    """Cumulative buckets [(le seconds, count)] of one histogram series (summed over shards
    for the delivery histogram, whose label is the shard)."""
    acc = {}
    for line in text.splitlines():
        if not line.startswith(family + "_bucket{") or (label and label not in line):
            continue
        le = line.split('le="')[1].split('"')[0]
        le = float("inf") if le == "+Inf" else float(le)
        acc[le] = acc.get(le, 0) + float(line.rsplit(" ", 1)[1])
    return sorted(acc.items())

def quantile(b0, b1, q):
    """q-quantile (ms) of the observations between two scrapes of one histogram, linear
    within the bucket that holds it."""
    d = [(le, c1 - dict(b0).get(le, 0)) for le, c1 in b1]
    total = d[-1][1] if d else 0
    if total <= 0:
        return None
    want, lo, below = q * total, 0.0, 0
    for le, cum in d:
        if cum >= want:
            if le == float("inf"):
                return lo * 1000
            inside = cum - below
            return 1000 * (lo + (le - lo) * ((want - below) / inside if inside else 1))
        lo, below = le, cum
    return None

def wait_healthy(addr, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if get(f"http://{addr}/healthz")[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} at {addr} never became healthy")

def start(args, log):
    return subprocess.Popen([TC] + args, stdout=subprocess.DEVNULL, stderr=open(log, "w"))

np, nm = port(), port()
nats = subprocess.Popen([NATS, "-a", "127.0.0.1", "-p", str(np), "-m", str(nm)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
url = f"nats://127.0.0.1:{np}"
sim = ["--sim-rate", RATE, "--sim-symbols", SYMBOLS, "--shards", "1"]

def varz():
    v = json.loads(get(f"http://127.0.0.1:{nm}/varz")[1])
    return [v["in_msgs"], v["in_bytes"], v["out_msgs"], v["out_bytes"]]

def run(label, target_addr, target_pid, ingest_addr, ingest_pid):
    js = f"{out}/{label}.json"
    load = open("/proc/loadavg").read().split()[0]
    b = subprocess.Popen([BENCH, "--url", f"ws://{target_addr}/ws", "--conns", str(CONNS),
                          "--symbols-per-conn", "5", "--depth", "10", "--duration", str(DUR),
                          "--json", js], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The middle of the measured window (connecting 1,000 takes about a second).
    time.sleep(1 + DUR / 4)
    t0, v0, n0, c0 = time.time(), varz(), ticks(nats.pid), ticks(target_pid)
    i0 = ticks(ingest_pid) if ingest_pid else 0
    e0, g0 = scrape(target_addr), scrape(ingest_addr)
    time.sleep(DUR / 2)
    t1, v1, n1, c1 = time.time(), varz(), ticks(nats.pid), ticks(target_pid)
    i1 = ticks(ingest_pid) if ingest_pid else 0
    e1, g1 = scrape(target_addr), scrape(ingest_addr)
    b.wait()
    rep = json.load(open(js))
    dt = t1 - t0
    lat = rep["latency_us"]
    r = metric(g1, "tickcast_bus_records_total") - metric(g0, "tickcast_bus_records_total")
    m = metric(g1, "tickcast_bus_messages_out_total") - metric(g0, "tickcast_bus_messages_out_total")
    row = {
        "label": label, "load": float(load),
        "records_s": rep.get("records_per_sec") or rep.get("throughput", {}).get("records_per_sec"),
        "recv_p50": lat["recv_to_client"]["p50"], "recv_p99": lat["recv_to_client"]["p99"],
        "exch_p50": lat["exch_to_client"]["p50"], "exch_p99": lat["exch_to_client"]["p99"],
        "cpu": 100 * (c1 - c0) / HZ / dt,
        "ingest_cpu": 100 * (i1 - i0) / HZ / dt if ingest_pid else None,
        "nats_in_msgs_s": (v1[0] - v0[0]) / dt, "nats_in_bytes_s": (v1[1] - v0[1]) / dt,
        "nats_out_msgs_s": (v1[2] - v0[2]) / dt, "nats_out_bytes_s": (v1[3] - v0[3]) / dt,
        "nats_cpu": 100 * (n1 - n0) / HZ / dt,
        "records_per_msg": r / m if m > 0 else 0,
        "ingest_published_s": r / dt,
        "gaps": rep.get("gaps"), "decode_errors": rep.get("decode_errors"),
    }
    hist = [(h, "tickcast_bus_hop_latency_seconds", f'hop="{h}"') for h in HOPS]
    hist.append(("delivery", "tickcast_delivery_latency_seconds", ""))
    for h, fam, lab in hist:
        b0, b1 = buckets(e0, fam, lab), buckets(e1, fam, lab)
        row[f"{h}_p50"] = quantile(b0, b1, 0.5)
        row[f"{h}_p99"] = quantile(b0, b1, 0.99)
    print(json.dumps(row), flush=True)
    return row

rows = []
for rnd in range(ROUNDS):
    for mode in MODES:
        label = f"{mode}-r{rnd}"
        if mode == "standalone":
            sa = f"127.0.0.1:{port()}"
            st = start(["--listen", sa] + sim, f"{out}/{label}.log")
            wait_healthy(sa, "standalone")
            time.sleep(1)
            rows.append(run(label, sa, st.pid, None, None))
            st.kill(); st.wait()
            continue
        ia, ea = f"127.0.0.1:{port()}", f"127.0.0.1:{port()}"
        extra = ["--bus-publish-all"] if mode == "edge-all" else []
        ing = start(["--role", "ingest", "--nats-url", url, "--listen", ia] + sim + extra,
                    f"{out}/{label}-ingest.log")
        edge = start(["--role", "edge", "--nats-url", url, "--listen", ea, "--shards", "1"],
                     f"{out}/{label}-edge.log")
        wait_healthy(ia, "ingest"); wait_healthy(ea, "edge")
        time.sleep(1)
        rows.append(run(label, ea, edge.pid, ia, ing.pid))
        edge.kill(); ing.kill(); edge.wait(); ing.wait()
nats.kill()

def med(mode, key):
    v = [r[key] for r in rows if r["label"].startswith(mode + "-r") and r.get(key) is not None]
    return (statistics.median(v), min(v), max(v)) if v else None

def num(v):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"

def fmt(x):
    return "-" if x is None else f"{num(x[0])} ({num(x[1])}-{num(x[2])})"

print(f"\nmedians of {ROUNDS} round(s) (range); load average {min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}")
print("\nper hop, ms, p50 / p99 (histogram estimates; client = tickcast-bench's exact recv_ts -> client)")
print("| mode | " + " | ".join(HOPS + ["delivery (recv_ts -> writev)", "client (recv_ts -> client)"]) + " |")
print("|---" * (len(HOPS) + 3) + "|")
for mode in MODES:
    cells = []
    for h in HOPS + ["delivery"]:
        p50, p99 = med(mode, f"{h}_p50"), med(mode, f"{h}_p99")
        cells.append("-" if p50 is None else f"{p50[0]:.3f} / {p99[0]:.3f}")
    p50, p99 = med(mode, "recv_p50"), med(mode, "recv_p99")
    cells.append(f"{p50[0] / 1000:.3f} / {p99[0] / 1000:.3f}")
    print(f"| {mode} | " + " | ".join(cells) + " |")
print("\nvolumes")
print("| mode | records/s delivered | daemon CPU % | ingest CPU % | NATS in msgs/s | NATS in bytes/s | NATS out msgs/s | records/msg | nats-server CPU % |")
print("|---" * 9 + "|")
for mode in MODES:
    keys = ["records_s", "cpu", "ingest_cpu", "nats_in_msgs_s", "nats_in_bytes_s", "nats_out_msgs_s", "records_per_msg", "nats_cpu"]
    print(f"| {mode} | " + " | ".join(fmt(med(mode, k)) for k in keys) + " |")
print("results in", out, file=sys.stderr)
PY
