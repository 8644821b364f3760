"""Publish an event exactly as CloudStack's RabbitMQ event bus does (for trying extensions out).

RabbitMQEventBus declares the exchange (topic, durable) before every publish and sends the JSON
text as a persistent `text/plain` message with the routing key built by `build_routing_key`.
"""

from __future__ import annotations

import aio_pika

from csext.schemas.event import build_routing_key
from csext.worker.amqp import topology
from csext.worker.amqp.broker import connect


async def emit_event(
    amqp_url: str,
    exchange: str,
    *,
    category: str,
    event_type: str,
    resource_type: str | None,
    resource_uuid: str | None,
    body: bytes,
) -> str:
    """Publish one event; returns the routing key used."""
    key = build_routing_key(category, event_type, resource_type, resource_uuid)
    connection = await connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await topology.declare_cloudstack_exchange(channel, exchange)
        message = aio_pika.Message(
            body, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await target.publish(message, key, mandatory=False)
    return key
