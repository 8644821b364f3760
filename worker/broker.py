"""One way for short-lived clients (CLI commands) to connect, with one clear error."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection

from csext.schemas.errors import BrokerUnavailable

from .settings import redact_url

CONNECT_TIMEOUT = 5.0


async def connect(amqp_url: str, timeout: float = CONNECT_TIMEOUT) -> AbstractConnection:
    """A plain (non-robust) connection; BrokerUnavailable names the broker, never the password."""
    try:
        return await aio_pika.connect(amqp_url, timeout=timeout)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        reason = str(exc) or type(exc).__name__
        raise BrokerUnavailable(
            f"cannot reach RabbitMQ at {redact_url(amqp_url)}: {reason}"
        ) from None
