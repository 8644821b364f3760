"""What every request handler needs: the server state, who is calling, and error replies.

Reads need nothing on the API (the server listens on loopback by default), except anything
that shows what a run printed; every request that changes anything needs the token (API:
`Authorization: Bearer`) or a browser session plus its CSRF token, and names a Git author.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from jinja2 import Environment

from csext.schemas.errors import CsextError
from csext.store.git import Author

from . import auth
from .service import Operations, WebConfig


class ApiError(Exception):
    """An expected refusal: the status, a message saying what to do, the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **({"field": self.field} if self.field else {})}


class NotSignedIn(ApiError):
    def __init__(self) -> None:
        super().__init__(
            401,
            "sign in: send 'Authorization: Bearer <token>' (csext serve printed the token; "
            "csext serve --rotate-token makes a new one)",
            "authorization",
        )


@dataclass(slots=True)
class WebState:
    config: WebConfig
    ops: Operations
    tokens: auth.TokenKeeper
    sessions: auth.Sessions
    templates: Environment


@dataclass(frozen=True, slots=True)
class Caller:
    session: auth.Session | None
    """None for an API client using the bearer token."""
    author: Author | None


def state(request: Request) -> WebState:
    value: WebState = request.app.state.web
    return value


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def caller(request: Request) -> Caller | None:
    """The signed-in caller, None when anonymous; 401 for a wrong token."""
    web = state(request)
    token = _bearer(request)
    if token is not None:
        if not web.tokens.matches(token):
            raise ApiError(
                401, "the token is not valid (rotated? see csext serve)", "authorization"
            )
        return Caller(None, _author_header(request))
    session = web.sessions.get(request.cookies.get(auth.SESSION_COOKIE))
    if session is not None:
        return Caller(session, session.author)
    return None


def _author_header(request: Request) -> Author | None:
    text = request.headers.get(auth.AUTHOR_HEADER)
    if not text:
        return None
    try:
        return Author.parse(text)
    except CsextError as exc:
        raise ApiError(400, f"{auth.AUTHOR_HEADER}: {exc}", auth.AUTHOR_HEADER) from None


def reader(request: Request) -> Caller:
    """A signed-in caller (run output, dead letters); 401 otherwise."""
    who = caller(request)
    if who is None:
        raise NotSignedIn()
    return who


async def writer(request: Request) -> Caller:
    """A signed-in caller allowed to change things: a browser session must send its CSRF
    token (header X-CSRF-Token, or the csrf_token form field)."""
    who = reader(request)
    if who.session is not None:
        sent = request.headers.get(auth.CSRF_HEADER)
        if sent is None and _is_form(request):
            sent = str((await request.form()).get(auth.CSRF_FIELD) or "") or None
        if not auth.csrf_ok(who.session, sent):
            raise ApiError(
                403,
                "the CSRF token is missing or wrong: reload the page and try again",
                auth.CSRF_HEADER,
            )
    return who


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def author_of(who: Caller) -> Author:
    """The Git author of a write; 400 naming the header when an API client gave none."""
    if who.author is None:
        raise ApiError(
            400,
            f"{auth.AUTHOR_HEADER}: every change is a Git commit with its author; send "
            f"'{auth.AUTHOR_HEADER.title()}: Your Name <you@example.org>'",
            auth.AUTHOR_HEADER,
        )
    return who.author
