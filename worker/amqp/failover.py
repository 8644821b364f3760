"""A robust connection that fails over between the nodes of a RabbitMQ cluster.

aio-pika's `RobustConnection` reconnects to the one URL it was given, and brings back every
channel, queue, binding and consumer on the new connection. The worker needs exactly that, but
towards the *next* node when its node died: a dead node refuses connections until it is back,
and a quorum queue is served by any node of the cluster meanwhile.

How: the robust connection starts every connection attempt by setting `transport` to None (in
`__connect_transport`); this class moves to the next URL at that moment, except for the very
first attempt. So the first connection goes to `urls[0]`, and each reconnect after a loss or a
failed attempt goes round the list. Written against aio-pika 10; tests/cluster checks it
against a real three-node cluster, so an aio-pika that stops doing this fails there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import UnderlayConnection
from yarl import URL

from csext.worker.settings import redact_url

log = logging.getLogger(__name__)


class FailoverConnection(RobustConnection):
    """`RobustConnection` over several URLs, tried in order, round-robin on reconnect."""

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        if not urls:
            raise ValueError("FailoverConnection needs at least one URL")
        self._urls = [URL(url) for url in urls]
        self._index = 0
        self._first_attempt = True
        self._ready = False
        super().__init__(self._urls[0], **kwargs)
        self._ready = True  # Connection.__init__ sets transport too: that is no attempt

    @property
    def transport(self) -> UnderlayConnection | None:
        return self._failover_transport

    @transport.setter
    def transport(self, value: UnderlayConnection | None) -> None:
        self._failover_transport = value
        if value is None and getattr(self, "_ready", False) and not self._close_called:
            self._advance()

    def _advance(self) -> None:
        """Called as each connection attempt starts: the first keeps urls[0], later ones rotate."""
        if self._first_attempt:
            self._first_attempt = False
            return
        if len(self._urls) == 1:
            return
        self._index = (self._index + 1) % len(self._urls)
        self.url = self._urls[self._index]
        log.warning("reconnecting to RabbitMQ at %s", redact_url(str(self.url)))

    @property
    def current_url(self) -> str:
        """The URL of the node this connection uses (or tries) now, password redacted."""
        return redact_url(str(self.url))


def rotated(urls: Sequence[str], start: int) -> list[str]:
    """`urls` starting at index `start` (mod len): where attempt number `start` begins."""
    if not urls:
        return []
    start %= len(urls)
    return [*urls[start:], *urls[:start]]
