#!/usr/bin/env bash
# RFC 6455 / RFC 7692 conformance: runs the Autobahn|Testsuite fuzzingclient against tickcast's
# /echo endpoint and compares every case's verdicts with scripts/autobahn/expected-results.json.
#
# Usage: scripts/autobahn.sh [--core | --deflate | --all] [--update] [--out DIR] [CASE ...]
#   --core      cases 1.* to 10.* (the default; ~20 s)
#   --deflate   cases 12.* and 13.* (permessage-deflate; several minutes: wstest is slow)
#   --all       every case
#   CASE ...    only these case patterns (e.g. '6.4.*' 9.1.6), instead of the sets above
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
out=""
cases=()
while [ $# -gt 0 ]; do
  case "$1" in
    --core) set_name=core ;;
    --deflate) set_name=deflate ;;
    --all) set_name=all ;;
    --update) update=1 ;;
    --out) [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }; out="$2"; shift ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# One shard, a quiet embedded feed: the echo endpoint shares the shard loop with /ws.
RUST_LOG=warn "$BIN" --echo --listen 127.0.0.1:0 --shards 1 --sim-symbols 4 --sim-rate 50 \
  >"$out/tickcast.stdout" 2>"$log" &
daemon=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's#^tickcast listening on ws://\([^/]*\)/ws$#\1#p' "$out/tickcast.stdout" | head -n1)"
  [ -n "$addr" ] && break
  kill -0 "$daemon" 2>/dev/null || { echo "tickcast exited:" >&2; cat "$log" >&2; exit 2; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "tickcast did not print its address" >&2; exit 2; }
port="${addr##*:}"
echo "[autobahn] tickcast --echo on $addr (pid $daemon); cases: ${cases[*]}" >&2

set +e
summary="$("$TOOLS/run.sh" --agent tickcast --path /echo --out "$out/report" -q "$port" "${cases[@]}")"
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
