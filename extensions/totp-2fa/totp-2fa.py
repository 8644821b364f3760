#!/usr/bin/env python3
"""totp-2fa: RFC 6238 TOTP for CloudStack two-factor authentication, stdlib only.

    totp-2fa.py check <payload-file> <timeout>   code + user_account (with its key) -> pass?
    totp-2fa.py setup <payload-file> <timeout>   user_account -> a new base32 secret

Exit codes, as declared in extension.yaml: **1 = passed / done, 0 = failed**.
TOTP: HMAC-SHA1, 30 s steps, 6 digits, one step of clock skew tolerated either way.
TOTP_NOW (epoch seconds) fixes the clock, for tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import sys
import time
from urllib.parse import quote

PASSED, FAILED = 1, 0
STEP, DIGITS, SKEW = 30, 6, 1


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def decode_secret(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def check(code: str, secret: str, now: float) -> bool:
    if not (code.isdigit() and len(code) == DIGITS):
        return False
    key = decode_secret(secret)
    step = int(now // STEP)
    return any(hmac.compare_digest(hotp(key, step + d), code) for d in range(-SKEW, SKEW + 1))


def setup(account: dict) -> dict:
    secret = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    issuer = os.environ.get("TOTP_ISSUER", "CloudStack")
    label = quote(f"{issuer}:{account.get('username', 'user')}")
    uri = f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}&digits={DIGITS}&period={STEP}"
    return {"secret": secret, "uri": uri}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("check", "setup"):
        print(json.dumps({"error": "usage: totp-2fa.py check|setup <payload-file> [timeout]"}))
        return FAILED
    with open(argv[2], encoding="utf-8") as handle:
        request = json.load(handle)
    account = request.get("user_account") or {}
    if argv[1] == "setup":
        print(json.dumps(setup(account)))
        return PASSED
    secret = account.get("key") or account.get("user_2fa_key")
    if not secret:
        print(json.dumps({"passed": False, "message": "2FA is not set up for this user"}))
        return FAILED
    now = float(os.environ.get("TOTP_NOW") or time.time())
    try:
        ok = check(str(request.get("code", "")).strip(), secret, now)
    except ValueError:  # binascii.Error (a bad secret) is one
        ok = False
    print(json.dumps({"passed": ok}))
    return PASSED if ok else FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
