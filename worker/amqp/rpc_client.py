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

from csext.schemas.errors import BrokerUnavailable, CallFailed, CallTimeout
from csext.schemas.rpc import RpcReply
from csext.worker.amqp import broker, topology
from csext.worker.amqp import names as c

NO_QUEUE = -1
"""`RpcClient.queue_consumers`: the queue does not exist."""
PROBE_INTERVAL = 0.2
"""Seconds between two looks at the extension's queue while waiting for a worker."""


class NoWorker(CallFailed):
    """Nothing consumed the extension's RPC queue within the grace, and no reply came."""


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

    async def queue_consumers(self, queue: str) -> int | None:
        """Consumers of `queue` (a passive declare answers with the count): NO_QUEUE when it
        does not exist, None when the broker would not say."""
        assert self._connection is not None, "call connect() first"
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.consumer_count or 0
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return NO_QUEUE
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def call(
        self,
        extension: str,
        action: str,
        payload: Any = None,
        *,
        timeout: float = 30.0,
        grace: float | None = None,
    ) -> RpcReply:
        """The extension's reply; CallTimeout when nothing answers within `timeout` seconds.

        With `grace`, the extension's queue is checked for a consumer first (what
        `csext forward` does, docs/forward.md): with none, the call may wait `grace` seconds
        for one, then NoWorker is raised, not a wait until `timeout`."""
        assert self._channel is not None, "call connect() first"
        served = True
        if grace is not None:
            consumers = await self.queue_consumers(c.rpc_queue(extension))
            served = consumers is None or consumers > 0
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        body = orjson.dumps({"action": action, "payload": {} if payload is None else payload})
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=c.DIRECT_REPLY_TO,
            expiration=timeout if served or grace is None else max(0.001, grace),
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
            started = time.monotonic()
            if not served and grace is not None:
                await self._await_worker(extension, future, min(grace, timeout))
            return await asyncio.wait_for(future, max(0.0, timeout - (time.monotonic() - started)))
        except TimeoutError:
            raise CallTimeout(
                f"no reply from extension {extension!r} within {timeout:g}s: "
                "is a csext worker running against this broker?"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)

    async def _await_worker(
        self, extension: str, reply: asyncio.Future[RpcReply], grace: float
    ) -> None:
        """Return once the reply came or the queue has a consumer; NoWorker after `grace`."""
        give_up = time.monotonic() + grace
        queue = c.rpc_queue(extension)
        while not reply.done():
            await asyncio.wait({reply}, timeout=PROBE_INTERVAL)
            if reply.done():
                return
            consumers = await self.queue_consumers(queue)
            if consumers is None or consumers > 0:
                return
            if time.monotonic() >= give_up:
                where = (
                    f"nothing consumes its queue {queue}"
                    if consumers == 0
                    else (f"it has no queue {queue}")
                )
                raise NoWorker(
                    f"no csext worker serves extension {extension!r}: {where} "
                    f"(waited {grace:g}s); is `csext worker` running with a registry that has it?"
                )
