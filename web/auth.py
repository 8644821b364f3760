"""Who may change things: the server token, browser sessions and their CSRF tokens.

One secret guards the web server: a token generated on first start, kept in a 0600 file (like
the secrets file) and shown once. API clients send it as `Authorization: Bearer <token>`; the
browser signs in with it once and then holds an HttpOnly, SameSite=Strict session cookie, and
every write from the browser carries that session's CSRF token as well. Rotating the token
(`csext serve --rotate-token`) rewrites the file; the running server re-reads it, so the old
token and every session signed in with it stop working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from csext.schemas.errors import ConfigError
from csext.store.git import Author
from csext.store.secrets import default_secrets_file

SESSION_COOKIE = "csext_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
AUTHOR_HEADER = "x-csext-author"
SESSION_TTL = 12 * 3600.0
"""Seconds a browser session lasts (a working day), then the token is asked again."""


def default_token_file() -> Path:
    """Beside the secrets file: /etc/csext/web-token as root, else ~/.config/csext/web-token."""
    return default_secrets_file().with_name("web-token")


def _write_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    os.replace(temp, path)
    return token


def ensure_token(path: Path) -> tuple[str, bool]:
    """(token, created): the token in `path`, generated (0600) when the file does not exist."""
    if path.exists():
        return read_token(path), False
    return _write_token(path), True


def rotate_token(path: Path) -> str:
    """A new token in `path`; the old one (and its browser sessions) stop working."""
    return _write_token(path)


def read_token(path: Path) -> str:
    """The token, refused when others may read the file (it guards every write)."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot read the web token {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"web token {path} is not a regular file; remove it and start again")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"web token {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): "
            f"chmod 600 {path}, or rotate it with csext serve --rotate-token"
        )
    token = path.read_text(encoding="ascii").strip()
    if len(token) < 16:
        raise ConfigError(f"web token {path} is too short: csext serve --rotate-token")
    return token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenKeeper:
    """The token in force, re-read when its file changes (rotation by another process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._digest = ""

    def current_digest(self) -> str:
        info = self.path.stat()
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._digest = digest(read_token(self.path))
            self._stamp = stamp
        return self._digest

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(digest(token), self.current_digest())


@dataclass(slots=True)
class Session:
    sid: str
    csrf: str
    author: Author
    token_digest: str
    expires: float
    flashes: list[tuple[str, str]] = field(default_factory=list)
    """(kind, message) shown once on the next page: ok, error."""


class Sessions:
    """Browser sessions, in memory: a restart of `csext serve` signs everyone out."""

    def __init__(self, tokens: TokenKeeper) -> None:
        self.tokens = tokens
        self._by_id: dict[str, Session] = {}

    def create(self, author: Author) -> Session:
        self._expire()
        session = Session(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            author=author,
            token_digest=self.tokens.current_digest(),
            expires=time.time() + SESSION_TTL,
        )
        self._by_id[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session `sid` names; None when unknown, expired or the token rotated."""
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if session.expires < time.time() or not hmac.compare_digest(
            session.token_digest, self.tokens.current_digest()
        ):
            self._by_id.pop(sid, None)
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _expire(self) -> None:
        now = time.time()
        for sid in [s for s, session in self._by_id.items() if session.expires < now]:
            del self._by_id[sid]


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")
