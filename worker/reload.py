"""Notice registry changes: `csext.control` broadcasts, and files changed by hand (`git pull`).

The broadcast gives sub-second reloads on every worker of a fleet; polling a cheap fingerprint
(stat of each manifest) catches edits made without csext.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from csext.store.registry import MANIFEST_FILE
from csext.worker.amqp import topology
from csext.worker.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0

ControlHandler = Callable[[AbstractIncomingMessage], Awaitable[bool]]
"""Takes a control message first (worker/fleet.py); True when it was handled there."""


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, mtimes and sizes of every manifest: changes when anything relevant changes."""
    items = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return ()
    for directory in entries:
        try:
            st = (directory / MANIFEST_FILE).stat()
        except OSError:
            continue
        items.append((directory.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(items))


class RegistryWatcher:
    def __init__(
        self,
        settings: Settings,
        connection: AbstractRobustConnection,
        on_change: Callable[[], None],
        on_control: ControlHandler | None = None,
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._on_change = on_change
        self._on_control = on_control
        self._poller: asyncio.Task[None] | None = None
        self._last = fingerprint(settings.registry)

    async def start(self) -> None:
        channel = await self._connection.channel()
        exchange = await topology.declare_control_exchange(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_broadcast, no_ack=True)
        self._poller = asyncio.create_task(self._poll())

    async def _on_broadcast(self, message: AbstractIncomingMessage) -> None:
        if self._on_control is not None:
            try:
                if await self._on_control(message):
                    return
            except Exception:  # a control message must never stop the watcher
                log.exception("control message failed")
        log.info("registry change broadcast received; reloading")
        self._last = fingerprint(self._settings.registry)
        self._on_change()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            current = await asyncio.to_thread(fingerprint, self._settings.registry)
            if current != self._last:
                self._last = current
                log.info("registry changed on disk; reloading")
                self._on_change()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
