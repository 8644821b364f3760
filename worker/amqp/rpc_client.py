"""Call an extension over RabbitMQ (used by `csext call`, tests and benchmarks).

Uses direct reply-to (`amq.rabbitmq.reply-to`): no reply queue to declare, nothing left behind
when the caller dies. The deadline travels as the `x-csext-deadline` header and the message's
`expiration`, so a call nobody waits for any more is never run. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from types import TracebackType
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from csext.schemas.errors import BrokerUnavailable, CallTimeout
from csext.schemas.rpc import RpcReply
from csext.worker.amqp import broker, topology
from csext.worker.amqp import names as c


class RpcClient:
    def __init__(self, amqp_url: str) -> None:
        self._url = amqp_url
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[RpcReply]] = {}

    async def __aenter__(self) -> RpcClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout: float = broker.CONNECT_TIMEOUT) -> None:
        self._connection = await broker.connect(self._url, timeout)
        self._channel = await self._connection.channel(publisher_confirms=False)
        await topology.declare_rpc_exchange(self._channel)
        replies = await self._channel.get_queue(c.DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # a late or duplicate reply: the caller gave up or already has it
        try:
            future.set_result(RpcReply.model_validate_json(message.body))
        except ValueError as exc:
            future.set_exception(exc)

    async def call(
        self, extension: str, action: str, payload: Any = None, *, timeout: float = 30.0
    ) -> RpcReply:
        """The extension's reply; CallTimeout when nothing answers within `timeout` seconds."""
        assert self._channel is not None, "call connect() first"
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        body = orjson.dumps({"action": action, "payload": {} if payload is None else payload})
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=c.DIRECT_REPLY_TO,
            expiration=timeout,
            headers={c.HEADER_DEADLINE: int((time.time() + timeout) * 1000)},
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            try:
                exchange = await self._channel.get_exchange(c.RPC_EXCHANGE, ensure=False)
                await exchange.publish(message, extension, mandatory=False)
            except (*CONNECTION_EXCEPTIONS, aio_pika.exceptions.ChannelInvalidStateError) as exc:
                raise BrokerUnavailable(
                    f"lost the connection to RabbitMQ before calling {extension!r} "
                    f"({type(exc).__name__}); the call was not sent, try again"
                ) from None
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CallTimeout(
                f"no reply from extension {extension!r} within {timeout:g}s: "
                "is a csext worker running against this broker?"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
