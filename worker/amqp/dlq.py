"""Operate the dead-letter queue: list, show, replay and purge what is in `csext.dead`.

Listing and showing browse without removing anything: messages are consumed unacknowledged and
released back when the channel closes. Replay puts a dead letter back into the queue it came
from (never onto CloudStack's exchange, which would hand the event to every other extension
again), with publisher confirms, and only then removes it from `csext.dead`. Purge removes the
dead letters it names.

Every replay and purge is written to the run history first (a record on `csext.runs`, outcome
`replayed` or `purged`, kind `operator`, confirmed by the broker), so `csext runs` shows who
removed what and when; a dead letter whose record cannot be written stays where it is.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from csext.handlers.base import find_secrets, scrub
from csext.schemas.errors import CsextError
from csext.worker.amqp import names as c
from csext.worker.amqp.broker import connect, consume_until_quiet

SCAN_LIMIT = 10_000
"""At most this many dead letters are looked at per command."""


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    id: str
    """A short digest of the dead letter (body and why): what `csext dead show ID` takes."""
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
    dead_at: float | None = None
    """Epoch seconds it was dead-lettered (worker header, else the broker's x-death time)."""


def describe(message: AbstractIncomingMessage) -> DeadLetterInfo:
    headers = message.headers or {}
    death = _first_death(headers)
    by_worker = c.HEADER_REASON in headers
    queue = str(headers.get(c.HEADER_ORIGINAL_QUEUE) or death.get("queue") or "")
    reason = str(headers.get(c.HEADER_REASON) or death.get("reason") or "unknown")
    dead_at = _dead_at(headers, death, message.timestamp)
    return DeadLetterInfo(
        id=_digest(message.body, queue, reason, dead_at),
        extension=str(headers.get(c.HEADER_EXTENSION) or _extension_of(queue)),
        reason=reason,
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
        dead_at=dead_at,
    )


def _dead_at(
    headers: dict[str, Any], death: dict[str, Any], stamp: datetime | None
) -> float | None:
    millis = headers.get(c.HEADER_DEAD_AT)
    if isinstance(millis, int) and not isinstance(millis, bool):
        return millis / 1000.0
    when = death.get("time")
    if isinstance(when, datetime):
        return when.timestamp()
    return stamp.timestamp() if stamp is not None else None


def _digest(body: bytes, queue: str, reason: str, dead_at: float | None) -> str:
    head = f"{queue}|{reason}|{dead_at}|".encode()
    return hashlib.sha256(head + body).hexdigest()[:12]


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


async def _each_dead_letter(
    amqp_url: str,
    handle: Callable[[AbstractChannel, History, AbstractIncomingMessage], Awaitable[bool]],
) -> None:
    """Hand each dead letter the queue held at the start to `handle`, one at a time (aio-pika
    may run callbacks concurrently: a replay or purge could otherwise return before its work
    was done), with the run history open. `handle` returns True to stop early; what it does
    not ack stays in the queue (released when the channel closes)."""
    connection, channel, queue, total = await _open(amqp_url)
    async with connection:
        history = await History.open(connection)
        seen = 0
        one_at_a_time = asyncio.Lock()

        async def on_message(message: AbstractIncomingMessage) -> bool:
            nonlocal seen
            async with one_at_a_time:
                stop = await handle(channel, history, message)
                seen += 1
                return stop or seen >= total

        if total:
            await consume_until_quiet(queue, on_message)


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

    async def replay(
        channel: AbstractChannel, history: History, message: AbstractIncomingMessage
    ) -> bool:
        await _replay_one(channel, history, message, match, report, limit)
        return limit is not None and report.replayed >= limit

    await _each_dead_letter(amqp_url, replay)
    return report


async def _replay_one(
    channel: AbstractChannel,
    history: History,
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
    await history.write(info, "replayed", f"put back into {info.queue}")
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
        f"{'ID':12} {'EXTENSION':20} {'REASON':20} {'BY':6} {'TRIES':>5} {'EXIT':>4}  "
        "ROUTING KEY / DETAIL"
    ]
    for d in found:
        exit_code = "-" if d["exit_code"] is None else str(d["exit_code"])
        lines.append(
            f"{d['id']:12} {d['extension']:20} {d['reason']:20} {d['by']:6} {d['attempts']:>5} "
            f"{exit_code:>4}  {d['routing_key']}"
        )
        if d["detail"]:
            lines.append(f"{'':73}{d['detail'][:120]}")
    return "\n".join(lines)


# --- show and purge --------------------------------------------------------------------------

MIN_ID = 6
"""Shortest id prefix `csext dead show` accepts."""


async def show_dead(amqp_url: str, dead_id: str) -> dict[str, Any]:
    """One dead letter in full, left in place: what `describe` says, every header, and the body
    pretty-printed; credentials in the body (and wherever they recur) masked. CsextError when
    no dead letter, or more than one, has an id starting with `dead_id`."""
    wanted = dead_id.strip().lower()
    if len(wanted) < MIN_ID:
        raise CsextError(
            f"dead letter id {dead_id!r} is too short: give at least {MIN_ID} characters"
        )
    found: list[dict[str, Any]] = []
    connection, _, queue, total = await _open(amqp_url)
    async with connection:
        seen = 0

        async def on_message(message: AbstractIncomingMessage) -> bool:
            nonlocal seen
            seen += 1
            info = describe(message)
            if info.id.startswith(wanted):
                found.append(_full(info, message))
            return seen >= total

        if total:
            await consume_until_quiet(queue, on_message)
    if not found:
        raise CsextError(f"no dead letter with id {dead_id!r} in {c.DEAD_LETTER_QUEUE}")
    if len({d["id"] for d in found}) > 1:
        raise CsextError(
            f"{len(found)} dead letters have ids starting with {dead_id!r}: give more of it"
        )
    return found[0]


def _full(info: DeadLetterInfo, message: AbstractIncomingMessage) -> dict[str, Any]:
    try:
        body: Any = orjson.loads(message.body)
        text = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        secrets = find_secrets(body)
    except orjson.JSONDecodeError:
        text, secrets = message.body.decode("utf-8", "replace"), ()
    headers = {k: _plain(v) for k, v in sorted((message.headers or {}).items())}
    headers_text = orjson.dumps(headers).decode()
    masked_headers: dict[str, Any] = (
        orjson.loads(scrub(headers_text, secrets)) if secrets else headers
    )
    details = asdict(info)
    for key in ("body_preview", "stderr_tail", "detail"):
        details[key] = scrub(details[key], secrets)
    details.update(
        {
            "headers": masked_headers,
            "body": scrub(text, secrets),
            "content_type": message.content_type,
            "masked": len(secrets),
        }
    )
    return details


def _plain(value: Any) -> Any:
    """A header value as JSON can carry it (x-death tables hold datetimes and bytes)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(slots=True)
class PurgeReport:
    purged: int = 0
    kept_age_unknown: int = 0
    """Matching dead letters that carry no time, kept when --older-than was given."""
    ids: list[str] = field(default_factory=list)


async def purge_dead(
    amqp_url: str, match: Matcher, *, older_than: float | None = None, now: float | None = None
) -> PurgeReport:
    """Remove the matching dead letters (those dead for more than `older_than` seconds, if
    given); every other dead letter stays. Each is written to the run history first."""
    report = PurgeReport()
    cutoff = None if older_than is None else (now or time.time()) - older_than

    async def purge(
        _channel: AbstractChannel, history: History, message: AbstractIncomingMessage
    ) -> bool:
        info = describe(message)
        if match(info):
            await _purge_one(history, message, info, cutoff, report)
        return False

    await _each_dead_letter(amqp_url, purge)
    return report


async def _purge_one(
    history: History,
    message: AbstractIncomingMessage,
    info: DeadLetterInfo,
    cutoff: float | None,
    report: PurgeReport,
) -> None:
    if cutoff is not None:
        if info.dead_at is None:
            report.kept_age_unknown += 1
            return
        if info.dead_at > cutoff:
            return
    await history.write(info, "purged", "removed from csext.dead")
    await message.ack()
    report.purged += 1
    report.ids.append(info.id)


# --- run history -----------------------------------------------------------------------------


class History:
    """Run records for operator actions on dead letters, on `csext.runs` with confirms."""

    def __init__(self, exchange: AbstractExchange) -> None:
        self._exchange = exchange
        self._who = f"{_user()}@{socket.gethostname()}"

    @classmethod
    async def open(cls, connection: aio_pika.abc.AbstractConnection) -> History:
        channel = await connection.channel(publisher_confirms=True)
        try:
            exchange = await channel.get_exchange(c.RUNS_EXCHANGE, ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            raise CsextError(
                f"exchange {c.RUNS_EXCHANGE} does not exist, so this cannot be written to the "
                "run history; start a worker once against this broker (it declares it)"
            ) from None
        return cls(exchange)

    async def write(self, info: DeadLetterInfo, outcome: str, what: str) -> None:
        record = history_record(
            info, outcome, f"dead letter {info.id} ({info.reason}) {what} by {self._who}"
        )
        body = orjson.dumps([record])
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await self._exchange.publish(message, f"{info.extension or 'unknown'}.{outcome}")


def history_record(info: DeadLetterInfo, outcome: str, note: str) -> dict[str, Any]:
    """A run record (the fields of worker/amqp/records.py's) for an operator action."""
    action = "dead-replay" if outcome == "replayed" else "dead-purge"
    return {
        "run_id": uuid.uuid4().hex,
        "extension": info.extension,
        "version": "",
        "hook": "",
        "action": action,
        "kind": "operator",
        "attempt": info.attempts,
        "outcome": outcome,
        "exit_code": info.exit_code,
        "duration_ms": 0,
        "truncated": {"stdout": False, "stderr": False},
        "stdout_tail": "",
        "stderr_tail": "",
        "event_key": info.id,
        "error": note,
        "warnings": [],
        "worker": f"cli:{socket.gethostname()}:{os.getpid()}",
        "finished_at": time.time(),
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def format_dead_letter(d: dict[str, Any]) -> str:
    """`csext dead show` as text."""
    dead_at = d["dead_at"]
    when = (
        "-"
        if dead_at is None
        else f"{datetime.fromtimestamp(dead_at, tz=UTC):%Y-%m-%d %H:%M:%S} UTC"
    )
    exit_code = "-" if d["exit_code"] is None else str(d["exit_code"])
    lines = [
        f"id:          {d['id']}",
        f"extension:   {d['extension']}",
        f"reason:      {d['reason']} (dead-lettered by {d['by']})",
        f"detail:      {d['detail'] or '-'}",
        f"attempts:    {d['attempts']}",
        f"exit code:   {exit_code}",
        f"dead since:  {when}",
        f"queue:       {d['queue']}",
        f"routing key: {d['routing_key']}",
        "stderr tail:",
        *(f"  {line}" for line in (d["stderr_tail"] or "-").splitlines()),
        "headers:",
        *(f"  {k}: {orjson.dumps(v).decode()}" for k, v in d["headers"].items()),
        f"body ({d['size']} bytes, {d['content_type'] or 'no content type'}"
        + (f", {d['masked']} secret value(s) masked):" if d["masked"] else "):"),
        d["body"],
    ]
    return "\n".join(lines)
