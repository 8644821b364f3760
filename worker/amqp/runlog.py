"""Read recent run records back from the `csext.runs.log` stream (`csext runs`, `csext show`).

Workers publish every run record to `csext.runs`; the stream bound to it keeps them (bounded by
size and age) so any host can answer "what did this extension do lately" without a database.
Reading starts at a timestamp offset and stops once it reaches records newer than the moment the
read began, or when the stream goes quiet.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from csext.worker.amqp import names as c
from csext.worker.amqp.broker import connect, consume_until_quiet


async def recent_runs(
    amqp_url: str,
    extension: str | None = None,
    *,
    limit: int = 20,
    since: float = 86400.0,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The last `limit` run records (oldest first) of `extension` (or of all), within `since` s."""
    connection = await connect(amqp_url, timeout=min(timeout, 5.0))
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        try:
            queue = await channel.get_queue(c.RUNS_LOG_QUEUE, ensure=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return []  # no worker has declared it yet: nothing was recorded
        return await _read(queue, extension, limit, since, timeout)


async def _read(
    queue: aio_pika.abc.AbstractQueue,
    extension: str | None,
    limit: int,
    since: float,
    timeout: float,
) -> list[dict[str, Any]]:
    started = time.time()
    found: list[dict[str, Any]] = []

    async def on_message(message: AbstractIncomingMessage) -> bool:
        await message.ack()
        try:
            body = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return False
        # A message is a batch (JSON array) of records; a single object is read too.
        for record in body if isinstance(body, list) else [body]:
            if not isinstance(record, dict):
                continue
            if record.get("finished_at", 0) >= started:
                return True  # caught up with the present
            if extension is None or record.get("extension") == extension:
                found.append(record)
        return False

    offset = datetime.fromtimestamp(started - since, tz=UTC)
    await consume_until_quiet(
        queue, on_message, timeout=timeout, arguments={"x-stream-offset": offset}
    )
    return found[-limit:]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `24h`, `7d` (or plain seconds) → seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"--since {text!r}: use a number with s, m, h or d, e.g. 24h") from None
    if seconds <= 0:
        raise ValueError(f"--since {text!r}: must be positive")
    return seconds


def format_runs(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no runs recorded in that window"
    lines = [
        f"{'FINISHED':19}  {'EXTENSION':20} {'ACTION':18} {'OUTCOME':8} {'EXIT':>4} {'MS':>6}  RUN"
    ]
    for r in records:
        when = datetime.fromtimestamp(r.get("finished_at", 0), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        exit_code = "-" if r.get("exit_code") is None else str(r["exit_code"])
        lines.append(
            f"{when:19}  {r.get('extension', ''):20} {r.get('action', ''):18} "
            f"{r.get('outcome', ''):8} {exit_code:>4} {r.get('duration_ms', 0):>6}  "
            f"{r.get('run_id', '')}"
        )
    return "\n".join(lines)
