"""Fault injection for tests/plugin: answers csext RPC calls for a few extension names with
malformed replies, the way a broken or foreign responder on csext.rpc would.

usage: python garbler.py AMQP_URL NAME=KIND ...   (KIND: text | no-result | bad-ids)
Prints "ready" once its queue is bound, then answers until killed.
"""

from __future__ import annotations

import asyncio
import sys

import aio_pika

BODIES = {
    "text": b"\x00this is not JSON",
    "no-result": b'{"exit_code": 0, "error": null, "result": null}',
    "bad-ids": b'{"exit_code": 0, "error": null, "result": {"cluster_ids": "two, one"}}',
}


async def main(url: str, kinds: dict[str, str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("csext.rpc", ensure=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for name in kinds:
            await queue.bind(exchange, routing_key=name)

        async def answer(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                if message.reply_to:
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            BODIES[kinds[message.routing_key or ""]],
                            correlation_id=message.correlation_id,
                            content_type="application/json",
                        ),
                        routing_key=message.reply_to,
                    )

        await queue.consume(answer)
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    pairs = dict(arg.split("=", 1) for arg in sys.argv[2:])
    asyncio.run(main(sys.argv[1], pairs))
