#!/usr/bin/env bash
# RFC 6455 / RFC 7692 conformance: runs the Autobahn|Testsuite fuzzingclient against tickcast's
# /echo endpoint and compares every case's verdicts with scripts/autobahn/expected-results.json.
#
# Usage: scripts/autobahn.sh [--core | --deflate | --all] [--tls] [--update] [--out DIR] [CASE ...]
#   --core      cases 1.* to 10.* (the default; ~20 s)
#   --deflate   cases 12.* and 13.* (permessage-deflate; several minutes: wstest is slow)
#   --all       every case
#   CASE ...    only these case patterns (e.g. '6.4.*' 9.1.6), instead of the sets above
#   --tls       over wss://: a self-signed certificate (openssl CLI), `tickcast --echo --tls-cert
#               --tls-key`, wstest's client over TLS (pyOpenSSL, in its venv); the verdicts are
#               compared with the same expected file as plain ws://
#   --update    write the verdicts of this run into the expected-results file (review the diff!)
#   --out DIR   report directory (default: a temporary one; kept when the run fails)
#
# It builds tickcast in release mode, starts `tickcast --echo` on an ephemeral loopback port
# (embedded simulated feed), installs wstest with ../shared/tools/autobahn/install.sh if needed
# (Python 2.7 from pyenv, gcc; see that directory's README), runs the cases, prints wstest's
# summary line, and exits 1 if any case's verdict (`behavior`) or closing verdict
# (`behaviorClose`) differs from the expected file, 2 on setup errors. The daemon is stopped on
# exit. Environment: CARGO_TARGET_DIR (as cargo), AUTOBAHN_TOOLS (the directory with run.sh and
# install.sh), AUTOBAHN_HOME (where wstest is installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXPECTED="$ROOT/scripts/autobahn/expected-results.json"
TOOLS="${AUTOBAHN_TOOLS:-$ROOT/../shared/tools/autobahn}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

set_name=core
update=0
tls=0
out=""
cases=()
while [ $# -gt 0 ]; do
  case "$1" in
    --core) set_name=core ;;
    --deflate) set_name=deflate ;;
    --all) set_name=all ;;
    --update) update=1 ;;
    --out) [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }; out="$2"; shift ;;
    --tls) tls=1 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) cases+=("$1") ;;
  esac
  shift
done
if [ ${#cases[@]} -eq 0 ]; then
  case "$set_name" in
    core) cases=(1.* 2.* 3.* 4.* 5.* 6.* 7.* 8.* 9.* 10.*) ;;
    deflate) cases=(12.* 13.*) ;;
    all) cases=("*") ;;
  esac
fi

[ -x "$TOOLS/run.sh" ] || { echo "autobahn tools not found at $TOOLS (set AUTOBAHN_TOOLS)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 2; }

echo "[autobahn] building tickcast (release)" >&2
(cd "$ROOT" && cargo build --release --quiet -p tickcast)
BIN="$TARGET/release/tickcast"
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 2; }

keep_out=1
if [ -z "$out" ]; then
  out="$(mktemp -d /tmp/tickcast-autobahn.XXXXXX)"
  keep_out=0
fi
mkdir -p "$out"
log="$out/tickcast.log"

daemon=""
cleanup() {
  if [ -n "$daemon" ]; then
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

tls_args=()
scheme=ws
if [ "$tls" = 1 ]; then
  command -v openssl >/dev/null || { echo "--tls needs the openssl CLI" >&2; exit 2; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$out/key.pem" -out "$out/cert.pem" 2>"$out/openssl.log" \
    || { echo "openssl could not make a certificate:" >&2; cat "$out/openssl.log" >&2; exit 2; }
  tls_args=(--tls-cert "$out/cert.pem" --tls-key "$out/key.pem")
  scheme=wss
fi

# One shard, a quiet embedded feed: the echo endpoint shares the shard loop with /ws.
RUST_LOG=warn "$BIN" --echo --listen 127.0.0.1:0 --shards 1 --sim-symbols 4 --sim-rate 50 \
  "${tls_args[@]}" >"$out/tickcast.stdout" 2>"$log" &
daemon=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n "s#^tickcast listening on $scheme://\([^/]*\)/ws\$#\1#p" "$out/tickcast.stdout" | head -n1)"
  [ -n "$addr" ] && break
  kill -0 "$daemon" 2>/dev/null || { echo "tickcast exited:" >&2; cat "$log" >&2; exit 2; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "tickcast did not print its address" >&2; exit 2; }
port="${addr##*:}"
echo "[autobahn] tickcast --echo on $scheme://$addr (pid $daemon); cases: ${cases[*]}" >&2

# wss:// (run.sh speaks ws:// only): the same fuzzingclient, with a spec written here. wstest's
# Twisted connects with pyOpenSSL (ClientContextFactory: TLS 1.2/1.3, no certificate check,
# no ALPN), which ../shared/tools/autobahn/install.sh puts in its venv.
run_tls() {
  local home="${AUTOBAHN_HOME:-/tmp/autobahn-wstest}"
  local report="$out/report"
  if ! [ -x "$home/venv/bin/wstest" ]; then
    "$TOOLS/install.sh" "$home" >&2 || { echo "[autobahn] install.sh failed" >&2; return 2; }
  fi
  "$home/venv/bin/python" -c 'import OpenSSL, service_identity' 2>/dev/null \
    || { echo "[autobahn] wstest's venv has no pyOpenSSL/service_identity: no TLS client" >&2; return 2; }
  mkdir -p "$report"
  python3 - "$report/fuzzingclient.json" "$report" "wss://127.0.0.1:$port/echo" "${cases[@]}" <<'PY'
import json, sys
path, outdir, url, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
json.dump({"outdir": outdir, "servers": [{"agent": "tickcast", "url": url}],
           "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}, open(path, "w"), indent=2)
PY
  local start=$SECONDS
  (cd "$report" && exec timeout --kill-after=10 3600 "$home/venv/bin/wstest" -m fuzzingclient \
    -s "$report/fuzzingclient.json") >"$report/wstest.log" 2>&1
  local wrc=$?
  [ -f "$report/index.json" ] || { echo "[autobahn] wstest exited $wrc without a report (see $report/wstest.log)" >&2; return 2; }
  python3 - "$report/index.json" $((SECONDS - start)) <<'PY'
import json, sys
res = json.load(open(sys.argv[1])).get("tickcast")
if not res:
    sys.stderr.write("[autobahn] no results for tickcast (the TLS connection failed? see wstest.log)\n")
    sys.exit(2)
counts = {}
for r in res.values():
    counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
print("autobahn (wss): " + " ".join("%s=%d" % kv for kv in sorted(counts.items()))
      + " total=%d time=%ss" % (len(res), sys.argv[2]))
PY
}

set +e
if [ "$tls" = 1 ]; then
  summary="$(run_tls)"
else
  summary="$("$TOOLS/run.sh" --agent tickcast --path /echo --out "$out/report" -q "$port" "${cases[@]}")"
fi
rc=$?
set -e
[ -n "$summary" ] && echo "$summary"
if [ $rc -ne 0 ]; then
  echo "[autobahn] the suite did not run (exit $rc); report dir: $out" >&2
  exit 2
fi
if ! kill -0 "$daemon" 2>/dev/null; then
  set +e; wait "$daemon"; status=$?; set -e; daemon=""
  echo "[autobahn] tickcast died during the run (exit status $status; >128 is a signal):" >&2
  cat "$log" >&2
  exit 1
fi

set +e
python3 - "$out/report/index.json" "$EXPECTED" "$update" <<'PY'
import json, sys
index, expected_path, update = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
got = json.load(open(index))["tickcast"]
def key(cid):
    return [int(p) for p in cid.split(".")]
try:
    expected = json.load(open(expected_path))
except FileNotFoundError:
    expected = {}
verdicts = {c: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]} for c, r in got.items()}
if update:
    expected.update(verdicts)
    with open(expected_path, "w") as f:
        f.write("{\n" + ",\n".join(
            '  "%s": {"behavior": "%s", "behaviorClose": "%s"}' % (c, expected[c]["behavior"], expected[c]["behaviorClose"])
            for c in sorted(expected, key=key)) + "\n}\n")
    print("[autobahn] wrote %d verdicts to %s" % (len(verdicts), expected_path), file=sys.stderr)
    sys.exit(0)
diffs = []
for c in sorted(verdicts, key=key):
    want = expected.get(c)
    if want != verdicts[c]:
        diffs.append("  %-8s expected %s, got %s/%s" % (
            c, "%s/%s" % (want["behavior"], want["behaviorClose"]) if want else "(no entry)",
            verdicts[c]["behavior"], verdicts[c]["behaviorClose"]))
if diffs:
    print("[autobahn] %d case(s) differ from %s:" % (len(diffs), expected_path), file=sys.stderr)
    print("\n".join(diffs), file=sys.stderr)
    sys.exit(1)
print("[autobahn] all %d cases match the expected verdicts" % len(verdicts), file=sys.stderr)
PY
cmp=$?
set -e
if [ $cmp -ne 0 ]; then
  echo "[autobahn] report: $out/report/index.html (per-case JSON beside it)" >&2
  exit 1
fi
[ "$keep_out" = 1 ] || rm -rf "$out"
