#!/usr/bin/env python3
"""Mint an HS256 JWT for tickcast (testing and simple setups; standard library only).

    scripts/mint-jwt.py --secret-file /etc/tickcast/jwt.secret --ttl 3600 --symbols 'BTC-USD,SOL-*'

The secret is the file's bytes with surrounding whitespace trimmed, as tickcast reads it.
Without --symbols the token entitles to every symbol. Prints the token on stdout.
"""
import argparse
import base64
import hashlib
import hmac
import json
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    p.add_argument("--symbols", help="comma-separated names and *-patterns")
    p.add_argument("--sub", help="optional subject claim")
    a = p.parse_args()
    with open(a.secret_file, "rb") as f:
        secret = f.read().strip()
    claims = {"exp": int(time.time()) + a.ttl}
    if a.symbols is not None:
        claims["symbols"] = [s.strip() for s in a.symbols.split(",") if s.strip()]
    if a.sub:
        claims["sub"] = a.sub
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    print(f"{head}.{body}.{b64(sig)}")


if __name__ == "__main__":
    main()
