"""ASGI middleware: request size limits (413), secret masking of every text response, and
security headers (no framing, no sniffing, scripts only from this server).

Masking is a last line of defence beside the masked run records and test output: whatever a
handler returns, no secret value from the secrets file leaves the server in a JSON, HTML or
text body (raw, HTML-escaped or JSON-escaped), mirroring `csext.worker.amqp.records.mask`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from csext.worker.amqp.records import MASK


class _TooLarge(BaseException):
    """Raised from `receive`; a BaseException so no handler's `except Exception` (FastAPI's
    body parsing answers 400 for those) turns an oversize body into another error."""


def _header(scope_or_message: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope_or_message.get("headers") or []:
        if key.lower() == name:
            return bytes(value)
    return None


class BodyLimit:
    """413 for a body above `limit` bytes (`upload_limit` for paths ending in /import)."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"].rstrip("/").endswith("/import") else self.limit
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reply_413(send, limit)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply_413(send, limit)


async def _reply_413(send: Send, limit: int) -> None:
    body = orjson.dumps(
        {
            "error": f"the request body is larger than {limit} bytes; send less "
            "(bundles: up to the upload limit of csext serve)",
            "field": "body",
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_TEXTUAL = (b"application/json", b"text/")


class MaskSecrets:
    """Replace every known secret value in textual response bodies with `***`."""

    def __init__(self, app: ASGIApp, *, values: Callable[[], tuple[str, ...]]) -> None:
        self.app = app
        self.values = values

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secrets = self.values()
        if not secrets:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def masking_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                kind = _header(message, b"content-type") or b""
                if kind.startswith(_TEXTUAL):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = mask_bytes(b"".join(chunks), secrets)
                headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, masking_send)


def variants(value: str) -> set[str]:
    """How a value can appear in a body: as is, HTML-escaped, JSON-escaped."""
    return {value, html.escape(value), json.dumps(value)[1:-1], html.escape(value, quote=False)}


def mask_bytes(body: bytes, secrets: tuple[str, ...]) -> bytes:
    text = body.decode("utf-8", "surrogateescape")
    for value in secrets:
        for form in sorted(variants(value), key=len, reverse=True):
            if len(form) >= 3:
                text = text.replace(form, MASK)
    return text.encode("utf-8", "surrogateescape")


# Scripts and everything else only from this server (the vendored htmx, CodeJar, Prism); htmx
# adds one <style> for its indicators, hence 'unsafe-inline' for styles only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)
