"""Recorded replies: a call the broker redelivers gets the reply it already got, not a second run.

Why: the worker acks a call after publishing its reply. If the channel is lost in between (a
broker restart, a network cut, `rabbitmqctl close_connection`), RabbitMQ redelivers the call
(`redelivered` set) and the extension would run twice: a VM started twice, a 2FA code checked
twice. For extensions that declare `spec.idempotentReplies: true`, and for read-only actions of
any extension (the hook's `read_only_actions`, e.g. `status`), the worker keeps the reply it
published, keyed by (extension, correlation id, reply_to, SHA-256 of the body), and answers a
redelivery of the same call with it.

Window: until the call's own deadline (`x-csext-deadline`, else the hook's timeout), at most
`MAX_WINDOW`: after the deadline a redelivered call is dropped unrun anyway (nobody waits).
Memory: at most `MAX_ENTRIES` replies and `MAX_BYTES` of reply bodies per worker process; the
oldest go first. Only redelivered calls are looked up, so a caller that reuses a correlation id
for a new call (not a redelivery) always gets a fresh run.

A redelivery can also arrive while the first delivery still runs here (the channel closed
mid-run and the robust connection consumed again at once): it waits for that run's reply
(`running`) instead of starting a second run.

Scope: the process that ran the call. RabbitMQ redelivers to any consumer of the queue, so with
several worker processes a redelivery that lands on another process runs again (at-least-once,
as without this); a worker that crashed took its recorded replies with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_WINDOW = 3600.0
"""Seconds; also the RPC queues' x-message-ttl, so no older call can be redelivered."""
MAX_ENTRIES = 10_000
MAX_BYTES = 64 * 1024 * 1024

Key = tuple[str, str, str, bytes]


def reply_key(extension: str, correlation_id: str, reply_to: str, body: bytes) -> Key:
    return (extension, correlation_id, reply_to, hashlib.sha256(body).digest())


@dataclass(frozen=True, slots=True)
class _Entry:
    body: bytes
    expires: float


class RecordedReplies:
    """Replies by call key, bounded in count and bytes, each kept until its call's deadline."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._running: dict[Key, asyncio.Future[bytes]] = {}
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of reply bodies held."""
        return self._bytes

    def remember(self, key: Key, body: bytes, deadline: float) -> None:
        """Keep `body` as the reply to `key` until `deadline` (epoch seconds)."""
        now = self._clock()
        expires = min(deadline, now + MAX_WINDOW)
        if expires <= now or len(body) > self._max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._entries[key] = _Entry(body, expires)
        self._bytes += len(body)
        self._evict(now)

    def recorded(self, key: Key) -> bytes | None:
        """The reply recorded for `key`, if its window is still open."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self.replayed += 1
        return entry.body

    def started(self, key: Key) -> None:
        """A call with `key` starts running here: redeliveries meanwhile wait for its reply."""
        if key not in self._running:
            self._running[key] = asyncio.get_running_loop().create_future()

    def finished(self, key: Key, body: bytes | None, deadline: float) -> None:
        """Its reply (None: no reply, e.g. it crashed): recorded and given to the waiters."""
        if body is not None:
            self.remember(key, body, deadline)
        future = self._running.pop(key, None)
        if future is not None and not future.done():
            future.set_result(body or b"")  # b"": no reply, the waiters run the call themselves

    async def running(self, key: Key, deadline: float) -> bytes | None:
        """The reply of the same call still running here, once it ends (None if it is not
        running, ends without a reply, or `deadline` passes first)."""
        future = self._running.get(key)
        if future is None:
            return None
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                body = await asyncio.shield(future)
        except TimeoutError:
            return None
        if not body:
            return None
        self.replayed += 1
        return body

    def _evict(self, now: float) -> None:
        """Oldest first: over the count or byte bound, or expired at the front."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            over = len(self._entries) > self._max_entries or self._bytes > self._max_bytes
            if not over and entry.expires > now:
                return
            self._drop(key)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key)
        self._bytes -= len(entry.body)
