"""Dead-lettering with reasons: the original body byte for byte, plus why, in headers.

The broker's own dead-lettering (nack without requeue) cannot add headers, so the worker
publishes the copy itself to `csext.dlx` with publisher confirms and only then acks the
original: a crash in between means a redelivery (and at worst a duplicate dead letter),
never a lost message.
"""

from __future__ import annotations

import time
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange

from csext.worker.amqp import names as c
from csext.worker.amqp.delivery import Incoming

DETAIL_LIMIT = 1024


class DeadLetterPublisher:
    def __init__(self, exchange: AbstractExchange) -> None:
        self._exchange = exchange
        """csext.dlx on a channel with publisher confirms."""

    async def publish(
        self,
        message: Incoming,
        *,
        extension: str,
        queue: str,
        reason: str,
        detail: str = "",
        attempts: int = 0,
        exit_code: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        headers: dict[str, Any] = dict(message.headers or {})
        headers.update(
            {
                c.HEADER_REASON: reason,
                c.HEADER_DETAIL: detail[:DETAIL_LIMIT],
                c.HEADER_ATTEMPTS: attempts,
                c.HEADER_EXTENSION: extension,
                c.HEADER_ORIGINAL_EXCHANGE: message.exchange or "",
                c.HEADER_ORIGINAL_ROUTING_KEY: message.routing_key or "",
                c.HEADER_ORIGINAL_QUEUE: queue,
                c.HEADER_STDERR_TAIL: stderr_tail,
                c.HEADER_DEAD_AT: int(time.time() * 1000),
            }
        )
        if exit_code is not None:
            headers[c.HEADER_EXIT_CODE] = exit_code
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
        )
        await self._exchange.publish(copy, message.routing_key or queue, mandatory=False)
