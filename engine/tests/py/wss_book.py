#!/usr/bin/env python3
"""A wss:// subscriber written with Python's `websockets` and `ssl`, independent of the Rust
code: engine/tests/tls.rs runs it against the real daemon and compares its books with the
simulator's truth.

Usage: wss_book.py URL CA_FILE TLS_VERSION DEPTH
  URL          wss://localhost:PORT/ws (format=json is added)
  CA_FILE      PEM file of the CA the client trusts (and nothing else)
  TLS_VERSION  1.3, 1.2 or 1.1: the client offers exactly that version
  DEPTH        subscription depth (docs/protocol.md §1.1)

Stdout, one JSON object per line:
  {"tls": "TLSv1.3", "symbols": [...]}  once subscribed to "*" (the subscribe reply's list)
  {"books": {SYMBOL: {"bids": [[px, qty], ...], "asks": [...]}}, "seq_errors": [...],
   "records": N}                        each time a line "dump" arrives on stdin
  {"refused": "<error>"}                when the TLS handshake fails (exit status 3)
A line "quit" on stdin closes the connection normally (exit 0). Any other failure (a close by
the server, an error reply, a protocol breach) raises and exits with Python's status 1.
"""

import json
import select
import ssl
import sys
from decimal import Decimal

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

VERSIONS = {
    "1.3": ssl.TLSVersion.TLSv1_3,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.1": ssl.TLSVersion.TLSv1_1,
}


def context(ca_file, version):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    v = VERSIONS[version]
    if version == "1.1":
        # OpenSSL 3 refuses TLS 1.1 on its own at the default security level: lower it so that
        # the hello really goes out and the refusal is the server's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = v
    ctx.maximum_version = v
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Book:
    def __init__(self):
        self.bids = {}
        self.asks = {}

    def apply(self, rec, replace):
        if replace:
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, rec["bids"]), (self.asks, rec["asks"])):
            for px, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(px, None)
                else:
                    side[px] = qty

    def levels(self):
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return {"bids": [list(l) for l in bids], "asks": [list(l) for l in asks]}


def main():
    url, ca_file, version, depth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sep = "&" if "?" in url else "?"
    try:
        ws = connect(url + sep + "format=json", ssl=context(ca_file, version), max_size=None,
                     open_timeout=20)
    except (ssl.SSLError, OSError) as e:
        out({"refused": "%s: %s" % (type(e).__name__, e)})
        sys.exit(3)
    tls = ws.socket.version()
    ws.send(json.dumps({"op": "subscribe", "id": 1, "symbols": ["*"], "channels": ["book"],
                        "depth": depth}))
    books, last_seq, seq_errors, records = {}, {}, [], 0
    subscribed = False
    while True:
        r, _, _ = select.select([sys.stdin], [], [], 0)
        if r:
            line = sys.stdin.readline().strip()
            if line == "dump":
                out({"books": {s: b.levels() for s, b in books.items()},
                     "seq_errors": seq_errors, "records": records})
            elif line in ("quit", ""):
                ws.close()
                return
        try:
            msg = ws.recv(timeout=0.05)
        except TimeoutError:
            continue
        except ConnectionClosed as e:
            raise SystemExit("closed by the server: %s" % e)
        if isinstance(msg, bytes):
            raise SystemExit("a binary message on a format=json connection")
        data = json.loads(msg)
        if isinstance(data, dict):
            if data.get("op") == "subscribed" and data.get("id") == 1:
                for info in data["symbols"]:
                    books[info["symbol"]] = Book()
                subscribed = True
                out({"tls": tls, "symbols": data["symbols"]})
            elif data.get("op") == "error":
                raise SystemExit("error reply: %s" % msg)
            continue
        if not subscribed:
            raise SystemExit("data before the subscribe reply")
        for rec in data:
            kind, sym = rec["kind"], rec["symbol"]
            if kind not in ("snapshot", "delta"):
                continue
            records += 1
            seq = rec["seq"]
            if kind == "snapshot":
                books[sym].apply(rec, True)
            else:
                if last_seq.get(sym) is None or seq != last_seq[sym] + 1:
                    seq_errors.append("%s: delta seq %s after %s" % (sym, seq, last_seq.get(sym)))
                books[sym].apply(rec, False)
            last_seq[sym] = seq


if __name__ == "__main__":
    main()
