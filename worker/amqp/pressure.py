"""A broker under pressure: RabbitMQ's `connection.blocked` / `connection.unblocked`.

When a memory or disk alarm goes off, RabbitMQ blocks every connection that publishes: it stops
reading from its socket (rabbit_reader: a `blocked` connection is not read) until the alarm
clears, and tells clients that asked for it (`connection.blocked` capability) with
`connection.blocked` (reason "low on memory" / "low on disk") and later `connection.unblocked`.
A connection that only consumes and acks is never blocked.

So the worker publishes (run records, replies, dead letters) on a connection of its own, and
consumes and acks on another (worker/app.py): an alarm blocks the publishing one, acks keep
flowing on the other, and `watch_blocked` tells the run recorder to hold its records until the
alarm clears (worker/amqp/records.py) instead of queueing them into a socket nobody reads.

aiormq handles both frames (it logs them and keeps an internal event) but offers no callback,
and aio-pika exposes nothing: `watch_blocked` wraps aiormq's two handlers on each underlying
connection (again after every reconnect). Written against aiormq 7; if a later aiormq renames
them, the worker logs a WARNING and works as before (records queue up behind the block), and
tests/faults/test_11_memory_alarm.py fails.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractRobustConnection

log = logging.getLogger(__name__)

OnChange = Callable[[bool, str], None]
"""`(blocked, reason)`: True with RabbitMQ's reason when blocked, False when unblocked."""

_BLOCKED = "_Connection__handle_connection_blocked"
_UNBLOCKED = "_Connection__handle_connection_unblocked"


def watch_blocked(connection: AbstractRobustConnection, on_change: OnChange) -> bool:
    """Call `on_change` when RabbitMQ blocks or unblocks `connection`; False when this aiormq
    cannot be hooked (logged)."""

    def hook(*_: Any) -> None:
        transport = connection.transport
        if transport is not None:
            on_change(False, "")  # a new connection starts unblocked
            _wrap(transport.connection, on_change)

    if connection.transport is None or not _hookable(connection.transport.connection):
        log.warning(
            "cannot watch connection.blocked on this aiormq: run records are not held "
            "while RabbitMQ blocks publishing (memory or disk alarm)"
        )
        return False
    _wrap(connection.transport.connection, on_change)
    connection.reconnect_callbacks.add(hook)
    return True


def _hookable(underlay: object) -> bool:
    return callable(getattr(underlay, _BLOCKED, None)) and callable(
        getattr(underlay, _UNBLOCKED, None)
    )


def _wrap(underlay: object, on_change: OnChange) -> None:
    if getattr(underlay, "_csext_watched", False) or not _hookable(underlay):
        return
    blocked: Callable[[Any], Awaitable[None]] = getattr(underlay, _BLOCKED)
    unblocked: Callable[[Any], Awaitable[None]] = getattr(underlay, _UNBLOCKED)

    async def on_blocked(frame: Any) -> None:
        await blocked(frame)
        on_change(True, str(getattr(frame, "reason", "") or "a resource alarm"))

    async def on_unblocked(frame: Any) -> None:
        await unblocked(frame)
        on_change(False, "")

    setattr(underlay, _BLOCKED, on_blocked)
    setattr(underlay, _UNBLOCKED, on_unblocked)
    setattr(underlay, "_csext_watched", True)  # noqa: B010 (not a plain attribute to mypy)
