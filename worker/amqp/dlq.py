"""Operate the dead-letter queue: list what is in `csext.dead` and why, replay it.

Listing browses without removing anything: messages are consumed unacknowledged and released
back when the channel closes. Replay puts a dead letter back into the queue it came from (never
onto CloudStack's exchange, which would hand the event to every other extension again), with
publisher confirms, and only then removes it from `csext.dead`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from csext.worker.amqp import names as c
from csext.worker.amqp.broker import connect, consume_until_quiet

SCAN_LIMIT = 10_000
"""At most this many dead letters are looked at per command."""


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    extension: str
    reason: str
    detail: str
    attempts: int
    exit_code: int | None
    stderr_tail: str
    queue: str
    routing_key: str
    by: str
    """`csext` (the worker, with reasons) or `broker` (delivery limit, with x-death)."""
    size: int
    body_preview: str


def describe(message: AbstractIncomingMessage) -> DeadLetterInfo:
    headers = message.headers or {}
    death = _first_death(headers)
    by_worker = c.HEADER_REASON in headers
    queue = str(headers.get(c.HEADER_ORIGINAL_QUEUE) or death.get("queue") or "")
    return DeadLetterInfo(
        extension=str(headers.get(c.HEADER_EXTENSION) or _extension_of(queue)),
        reason=str(headers.get(c.HEADER_REASON) or death.get("reason") or "unknown"),
        detail=str(headers.get(c.HEADER_DETAIL) or ""),
        attempts=_int_or_none(headers.get(c.HEADER_ATTEMPTS))
        or _int_or_none(death.get("count"))
        or 0,
        exit_code=_int_or_none(headers.get(c.HEADER_EXIT_CODE)),
        stderr_tail=str(headers.get(c.HEADER_STDERR_TAIL) or ""),
        queue=queue,
        routing_key=str(headers.get(c.HEADER_ORIGINAL_ROUTING_KEY) or message.routing_key or ""),
        by="csext" if by_worker else "broker",
        size=len(message.body),
        body_preview=message.body[:200].decode("utf-8", "replace"),
    )


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death") or []
    return dict(deaths[0]) if deaths and isinstance(deaths[0], dict) else {}


def _extension_of(queue: str) -> str:
    if queue.startswith(c.QUEUE_PREFIX):
        return queue[len(c.QUEUE_PREFIX) :].rsplit(".", 1)[0]
    return ""


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


Matcher = Callable[[DeadLetterInfo], bool]


def matcher(extension: str | None = None, reason: str | None = None) -> Matcher:
    def match(info: DeadLetterInfo) -> bool:
        return (extension is None or info.extension == extension) and (
            reason is None or info.reason == reason
        )

    return match


async def _open(
    amqp_url: str,
) -> tuple[aio_pika.abc.AbstractConnection, AbstractChannel, AbstractQueue, int]:
    connection = await connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.get_queue(c.DEAD_LETTER_QUEUE, ensure=True)
    count = queue.declaration_result.message_count or 0 if queue.declaration_result else 0
    return connection, channel, queue, min(count, SCAN_LIMIT)


async def list_dead(amqp_url: str, match: Matcher, limit: int = 50) -> list[dict[str, Any]]:
    """The first `limit` matching dead letters, left in place."""
    found: list[DeadLetterInfo] = []
    connection, _, queue, total = await _open(amqp_url)
    async with connection:
        seen = 0

        async def on_message(message: AbstractIncomingMessage) -> bool:
            nonlocal seen
            seen += 1
            info = describe(message)
            if match(info) and len(found) < limit:
                found.append(info)
            return seen >= total or len(found) >= limit

        if total:
            await consume_until_quiet(queue, on_message)
    # Closing the channel released every message back to csext.dead.
    return [asdict(info) for info in found]


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """Why dead letters were skipped, with counts."""


async def replay_dead(amqp_url: str, match: Matcher, limit: int | None = None) -> ReplayReport:
    """Put matching dead letters back into their original queues; others stay."""
    report = ReplayReport()
    connection, channel, queue, total = await _open(amqp_url)
    async with connection:
        seen = 0

        async def on_message(message: AbstractIncomingMessage) -> bool:
            nonlocal seen
            seen += 1
            await _replay_one(channel, message, match, report, limit)
            return seen >= total or (limit is not None and report.replayed >= limit)

        if total:
            await consume_until_quiet(queue, on_message)
    return report


async def _replay_one(
    channel: AbstractChannel,
    message: AbstractIncomingMessage,
    match: Matcher,
    report: ReplayReport,
    limit: int | None,
) -> None:
    info = describe(message)
    if not match(info) or (limit is not None and report.replayed >= limit):
        return
    why = _not_replayable(info)
    if why:
        report.skipped += 1
        report.reasons[why] = report.reasons.get(why, 0) + 1
        return
    copy = _replay_copy(message, info.routing_key)
    await channel.default_exchange.publish(copy, info.queue, mandatory=False)
    await message.ack()
    report.replayed += 1


def _not_replayable(info: DeadLetterInfo) -> str | None:
    if info.reason == "no-reply-to":
        return "RPC call without reply_to (nobody to answer)"
    if not info.queue.startswith(c.QUEUE_PREFIX):
        return "original queue unknown"
    if info.queue.endswith(".rpc"):
        return "RPC call (its caller has given up long ago)"
    return None


def _replay_copy(message: AbstractIncomingMessage, routing_key: str) -> aio_pika.Message:
    headers = {
        k: v
        for k, v in (message.headers or {}).items()
        if not k.startswith("x-csext-")
        and k
        not in (
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason",
            "x-delivery-count",
        )
    }
    replays = (message.headers or {}).get(c.HEADER_REPLAYED, 0)
    headers[c.HEADER_REPLAYED] = (replays if isinstance(replays, int) else 0) + 1
    # Sent straight to the queue, the event's own routing key travels in a header.
    headers[c.HEADER_ORIGINAL_ROUTING_KEY] = routing_key
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
    )


def format_dead(found: list[dict[str, Any]]) -> str:
    if not found:
        return "no dead letters match"
    lines = [
        f"{'EXTENSION':20} {'REASON':20} {'BY':6} {'TRIES':>5} {'EXIT':>4}  ROUTING KEY / DETAIL"
    ]
    for d in found:
        exit_code = "-" if d["exit_code"] is None else str(d["exit_code"])
        lines.append(
            f"{d['extension']:20} {d['reason']:20} {d['by']:6} {d['attempts']:>5} {exit_code:>4}  "
            f"{d['routing_key']}"
        )
        if d["detail"]:
            lines.append(f"{'':60}{d['detail'][:120]}")
    return "\n".join(lines)
