"""The aio-pika / aiormq / pamqp surface the hot path relies on, checked against a real broker.

csext reads extension queues straight from aiormq (worker/amqp/delivery.py) and publishes replies
and run records with pamqp properties on the underlying aiormq channel (worker/amqp/records.py).
Those are not aio-pika's documented public API, so an upgrade that renames or changes them must
fail here, not in production: every name and behaviour used is exercised once.
"""

from __future__ import annotations

import asyncio
import inspect

import aio_pika
import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from aiormq.channel import Channel as AiormqChannel
from aiormq.exceptions import ChannelInvalidStateError, ChannelPreconditionFailed
from pamqp import commands as spec
from pamqp.common import FieldTable

pytestmark = pytest.mark.broker


def test_the_names_exist_with_the_expected_shape() -> None:
    assert hasattr(aio_pika.RobustChannel, "get_underlay_channel")
    publish = inspect.signature(AiormqChannel.basic_publish).parameters
    for name in ("body", "exchange", "routing_key", "properties", "mandatory", "wait"):
        assert name in publish, f"aiormq.Channel.basic_publish lost its {name!r} parameter"
    consume = inspect.signature(AiormqChannel.basic_consume).parameters
    assert {"queue", "consumer_callback"} <= set(consume)
    assert {"delivery", "header", "body", "channel"} <= set(DeliveredMessage.__annotations__)
    assert FieldTable is not None and ChannelPreconditionFailed is not None
    assert ChannelInvalidStateError is not None
    assert aiormq.Channel is AiormqChannel


async def test_underlay_publish_consume_and_reopen_callbacks(amqp_url: str, unique: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        assert isinstance(channel, aio_pika.RobustChannel)
        queue = await channel.declare_queue(unique, auto_delete=True)
        underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, AiormqChannel)
        assert hasattr(underlay, "on_consumer_cancel_callbacks")
        assert hasattr(underlay, "publisher_confirms")

        reopened: list[object] = []
        channel.reopen_callbacks.add(lambda *args: reopened.append(args))  # delivery.py uses it
        assert len(channel.reopen_callbacks) == 1

        got: asyncio.Future[DeliveredMessage] = asyncio.get_running_loop().create_future()

        async def deliver(message: DeliveredMessage) -> None:
            if not got.done():
                got.set_result(message)

        ok = await underlay.basic_consume(queue.name, deliver)
        assert isinstance(ok, spec.Basic.ConsumeOk) and ok.consumer_tag
        properties = spec.Basic.Properties(correlation_id="c-1", content_type="application/json")
        await underlay.basic_publish(
            b'{"x":1}', exchange="", routing_key=queue.name, properties=properties, wait=False
        )
        message = await asyncio.wait_for(got, 30)
        assert message.body == b'{"x":1}'
        assert message.header.properties.correlation_id == "c-1"
        assert isinstance(message.delivery, spec.Basic.Deliver)
        await message.channel.basic_ack(message.delivery.delivery_tag)
        await underlay.basic_cancel(ok.consumer_tag)
