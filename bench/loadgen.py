"""RPC load generator: K calls in flight over direct reply-to, for a fixed time.

    python -m bench.loadgen --url URL --exchange EX --key KEY --inflight K --seconds S
        [--warmup W] [--count N] [--payload-bytes B]

The same client drives csext and the raw floors, so the figures differ only by the server.
Requests are csext calls (`{"action", "payload"}`, deadline header, expiration); a raw echo
server just returns them. Prints one JSON line: requests, seconds, rate, p50/p99 (ms), errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from .stats import percentile

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


async def run(args: argparse.Namespace) -> dict[str, float]:
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel(publisher_confirms=False)
    pending: dict[str, asyncio.Future[bytes]] = {}

    def on_reply(message: AbstractIncomingMessage) -> None:
        future = pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
    await replies.consume(on_reply, no_ack=True)  # type: ignore[arg-type]
    exchange = (
        channel.default_exchange
        if not args.exchange
        else await channel.get_exchange(args.exchange, ensure=False)
    )
    payload = {"virtualmachinename": "i-2-4-VM"}
    if args.payload_bytes:
        payload["data"] = "x" * args.payload_bytes
    body = orjson.dumps({"action": "status", "payload": payload})
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop_at = measure_from + args.seconds
    done = 0

    async def one() -> None:
        nonlocal errors, done
        cid = uuid.uuid4().hex
        future: asyncio.Future[bytes] = loop.create_future()
        pending[cid] = future
        sent = time.perf_counter()
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=cid,
            reply_to=DIRECT_REPLY_TO,
            expiration=30,
            headers={"x-csext-deadline": int((time.time() + 30) * 1000)},
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        await exchange.publish(message, args.key, mandatory=False)
        reply = await asyncio.wait_for(future, 30)
        end = time.perf_counter()
        if b'"error":{' in reply:
            errors += 1
        if args.count or (sent >= measure_from and end <= stop_at):
            latencies.append(end - sent)
        done += 1

    async def lane() -> None:
        while True:
            now = time.perf_counter()
            if (args.count and done >= args.count) or (not args.count and now >= stop_at):
                return
            await one()

    await asyncio.gather(*(lane() for _ in range(args.inflight)))
    await connection.close()
    seconds = args.seconds if not args.count else time.perf_counter() - start
    count = len(latencies) if not args.count else done
    return {
        "requests": count,
        "seconds": seconds,
        "rate": count / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else float("nan"),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--exchange", default="")
    parser.add_argument("--key", required=True)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--count", type=int, default=0, help="stop after N calls (smoke)")
    parser.add_argument("--payload-bytes", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
