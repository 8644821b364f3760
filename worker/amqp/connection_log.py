"""The worker's connection to RabbitMQ in plain words, one line per change of state.

    connection to RabbitMQ at amqp://guest:***@host:5672/ lost: CONNECTION_FORCED - ...
    reconnecting to RabbitMQ at ...: attempt 1 failed (Connect call failed ...); next in 1s
    reconnected to RabbitMQ at ... after 7.2s (8 attempts); consumers restored: 6 of 6

aio-pika reconnects by itself and says so only in its own words (a warning per failed attempt,
nothing when it succeeds), next to aiormq's and aio-pika's callback tracebacks for what is, for
a worker, an expected disconnect. worker/logs.py keeps those libraries out of the log at INFO;
this module reports the same facts once each. It reads aio-pika's attempt warning (a logging
filter on `aio_pika.robust_connection`) for the attempt's reason and delay, and would let that
warning through unchanged if aio-pika ever worded it differently. Failed attempts are logged
1, 2, 3, then 4, 8, 16...: a long outage costs a few lines, not one per second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("csext.worker.connection")

LIBRARY_LOGGER = "aio_pika.robust_connection"
ATTEMPT_FAILED = 'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.'
"""aio-pika 9/10's warning for a failed reconnect attempt (robust_connection.py)."""
CLOSED = "Connection to %s closed. Reconnecting after %r seconds."
"""aio-pika's INFO line when the connection drops (reported here as `lost`)."""
RESTORE_WAIT = 10.0
"""Seconds to wait, after reconnecting, for every consumer to subscribe again."""


class Consumer(Protocol):
    @property
    def tag(self) -> str | None: ...


class Watchable(Protocol):
    close_callbacks: Any
    reconnect_callbacks: Any


class ConnectionLog(logging.Filter):
    """Log lost / reconnecting / reconnected for one robust connection."""

    def __init__(self, url: str, consumers: Callable[[], Iterable[Consumer]]) -> None:
        super().__init__()
        self._url = url
        self._consumers = consumers
        self._lost_at: float | None = None
        self._attempts = 0
        self._tags_before: dict[int, str | None] = {}
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection: Watchable | None = None

    def watch(self, connection: Watchable) -> None:
        self._connection = connection
        connection.close_callbacks.add(self._on_close)
        connection.reconnect_callbacks.add(self._on_reconnect)
        library = logging.getLogger(LIBRARY_LOGGER)
        if library.getEffectiveLevel() > logging.WARNING:
            library.setLevel(logging.WARNING)  # its attempt lines must reach this filter
        library.addFilter(self)

    def close(self) -> None:
        """Before closing the connection on purpose: that is no loss."""
        self._closing = True
        logging.getLogger(LIBRARY_LOGGER).removeFilter(self)
        if self._connection is not None:
            self._connection.close_callbacks.discard(self._on_close)
            self._connection.reconnect_callbacks.discard(self._on_reconnect)
        for task in self._tasks:
            task.cancel()

    @property
    def url(self) -> str:
        """The node in use now (a failover connection moves between nodes), redacted."""
        current = getattr(self._connection, "current_url", None)
        return current if isinstance(current, str) else self._url

    # --- aio-pika's own lines -------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == ATTEMPT_FAILED and len(args) == 3:
            self._attempt_failed(args[1], args[2])
            return False
        return not (record.msg == CLOSED and self._lost_at is not None)

    # --- state changes --------------------------------------------------------------------

    def _on_close(self, _sender: object, exc: BaseException | None = None) -> None:
        if self._closing or self._lost_at is not None:
            return
        self._lost_at = time.monotonic()
        self._attempts = 0
        consumers = list(self._consumers())
        self._tags_before = {id(c): c.tag for c in consumers}
        log.warning(
            "connection to RabbitMQ at %s lost: %s; reconnecting",
            self.url,
            _reason(exc),
            extra={"consumers": len(consumers)},
        )

    def _attempt_failed(self, exc: object, delay: object) -> None:
        if self._lost_at is None:
            return  # the first connection: worker/app.py's own retry loop reports those
        self._attempts += 1
        n = self._attempts
        if n <= 3 or n & (n - 1) == 0:
            log.warning(
                "reconnecting to RabbitMQ at %s: attempt %d failed (%s); next attempt in %ss",
                self.url,
                n,
                _reason(exc),
                delay,
                extra={"attempt": n},
            )

    def _on_reconnect(self, _sender: object) -> None:
        if self._lost_at is None or self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._report_restored(self._lost_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._lost_at = None

    async def _report_restored(self, lost_at: float) -> None:
        """Wait (briefly) for the consumers to subscribe again, then say how many did."""
        deadline = time.monotonic() + RESTORE_WAIT
        restored, total = self._restored()
        while restored < total and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            restored, total = self._restored()
        level = logging.INFO if restored == total else logging.WARNING
        log.log(
            level,
            "reconnected to RabbitMQ at %s after %.1fs (%d attempts); consumers restored: "
            "%d of %d%s",
            self.url,
            time.monotonic() - lost_at,
            self._attempts + 1,
            restored,
            total,
            "" if restored == total else " (the others are retried until they consume)",
            extra={"restored": restored, "consumers": total},
        )

    def _restored(self) -> tuple[int, int]:
        """(consumers subscribed again since the loss, consumers there were at the loss)."""
        consumers = [c for c in self._consumers() if id(c) in self._tags_before]
        fresh = [c for c in consumers if c.tag is not None and c.tag != self._tags_before[id(c)]]
        return len(fresh), len(self._tags_before)


def _reason(exc: object) -> str:
    """`CONNECTION_FORCED - broker forced ...` rather than `[Errno 320] CONNECTION_FORCED ...`."""
    if exc is None:
        return "closed by the broker"
    text = str(exc) or type(exc).__name__
    if text.startswith("[Errno ") and "] " in text:
        text = text.split("] ", 1)[1]
    return text
