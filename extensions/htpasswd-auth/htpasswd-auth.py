#!/usr/bin/env python3
"""htpasswd-auth: a CloudStack user authenticator backed by an htpasswd-style file.

    htpasswd-auth.py authenticate <payload-file> <timeout>   (called by csext)
    htpasswd-auth.py --hash PASSWORD                          (prints a line's hash part)

File: one `username:hash` per line, `#` comments. Hashes, stdlib only:
  $pbkdf2-sha256$<rounds>$<salt b64>$<hash b64>   salted, slow (what --hash writes)
  {SHA256}<base64 of sha256(password)>            unsalted, for existing files
An optional `domain/username:` prefix restricts a line to one CloudStack domain path.

Answer: exit 0 = authenticated, 1 = not. An unknown user is "not mine" (the failed attempt is
not counted, so CloudStack's next authenticator decides); a wrong password is counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
from pathlib import Path

ROUNDS = 200_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def make_hash(password: str, rounds: int = ROUNDS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"$pbkdf2-sha256${rounds}${_b64(salt)}${_b64(digest)}"


def verify(password: str, stored: str) -> bool:
    if stored.startswith("$pbkdf2-sha256$"):
        _, _, rounds, salt, digest = stored.split("$")
        mine = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(rounds))
        return hmac.compare_digest(mine, _unb64(digest))
    if stored.startswith("{SHA256}"):
        mine = base64.b64encode(hashlib.sha256(password.encode()).digest()).decode()
        return hmac.compare_digest(mine, stored[len("{SHA256}") :])
    return False  # unknown scheme: never a match


def lookup(path: Path, username: str, domain: str | None) -> str | None:
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        who, stored = line.split(":", 1)
        line_domain, _, line_user = who.rpartition("/")
        if line_user == username and (not line_domain or line_domain == (domain or "").strip("/")):
            return stored
    return None


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--hash":
        print(make_hash(argv[2]))
        return 0
    if len(argv) < 3 or argv[1] != "authenticate":
        print(
            json.dumps(
                {
                    "authenticated": False,
                    "error": "usage: htpasswd-auth.py authenticate <payload-file> [timeout]",
                }
            )
        )
        return 2
    with open(argv[2], encoding="utf-8") as handle:
        request = json.load(handle)
    path = Path(os.environ.get("HTPASSWD_FILE", "users.htpasswd"))
    stored = lookup(path, request["username"], request.get("domain"))
    if stored is None:
        print(
            json.dumps(
                {"authenticated": False, "count_failed_attempt": False, "message": "unknown user"}
            )
        )
        return 1
    if not verify(request["password"], stored):
        print(
            json.dumps(
                {"authenticated": False, "count_failed_attempt": True, "message": "wrong password"}
            )
        )
        return 1
    print(json.dumps({"authenticated": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
