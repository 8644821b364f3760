"""One run record per run: published to `csext.runs` and logged as one structured line.

Records carry tails of stdout/stderr for diagnosis but never the payload, and every known secret
value (manifest secrets, hook credential fields) is masked out of them first.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange
from aiormq import spec
from aiormq.exceptions import ChannelInvalidStateError

from csext.schemas.run import Outcome, RunResult

log = logging.getLogger("csext.runs")

TAIL_BYTES = 512
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
MASK = "***"


def mask(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, MASK)
    return text


def build_record(
    *,
    run_id: str,
    extension: str,
    version: str,
    hook: str,
    action: str,
    kind: str,
    attempt: int,
    outcome: Outcome,
    run: RunResult | None,
    event_key: str,
    secrets: Iterable[str] | Callable[[], Iterable[str]] = (),
    error: str | None = None,
) -> dict[str, Any]:
    """A run record as the JSON-able dict `RunRecord` describes (same fields, same order).

    A plain dict rather than the pydantic model: it is built once per run and only
    serialised, and validation bought nothing here. `secrets` may be a callable: it is only
    called when there is text to mask (most runs of a quiet extension have none).
    """
    stdout = run.stdout_tail(TAIL_BYTES) if run else ""
    stderr = run.stderr_tail(TAIL_BYTES) if run else ""
    error = error or (run.error if run else None)
    if stdout or stderr or error:
        values = tuple(secrets() if callable(secrets) else secrets)
        stdout, stderr = mask(stdout, values), mask(stderr, values)
        error = mask(error, values) if error else None
    return {
        "run_id": run_id,
        "extension": extension,
        "version": version,
        "hook": hook,
        "action": action,
        "kind": kind,
        "attempt": attempt,
        "outcome": outcome.value,
        "exit_code": run.exit_code if run else None,
        "duration_ms": run.duration_ms if run else 0,
        "truncated": {
            "stdout": bool(run and run.stdout_truncated),
            "stderr": bool(run and run.stderr_truncated),
        },
        "stdout_tail": stdout,
        "stderr_tail": stderr,
        "event_key": event_key,
        "error": error,
        "worker": WORKER_ID,
        "finished_at": time.time(),
    }


_RECORD_PROPERTIES = spec.Basic.Properties(content_type="application/json", delivery_mode=1)


async def publish_raw(
    exchange: AbstractExchange,
    body: bytes,
    routing_key: str,
    properties: spec.Basic.Properties,
) -> None:
    """`exchange.publish` without an `aio_pika.Message`.

    Building a Message (every attribute set through a checked `__setattr__`, then turned back
    into `Basic.Properties` on publish) cost more than the publish itself on the hot path;
    this does what `Exchange.publish` does with properties built once. Not mandatory, no
    confirms awaited beyond what the channel does.
    """
    if not isinstance(exchange, aio_pika.Exchange):
        raise TypeError(f"publish_raw needs an aio_pika.Exchange, got {type(exchange).__name__}")
    channel = exchange.channel
    if channel.is_closed:
        raise ChannelInvalidStateError(f"{channel!r} closed")
    underlay = await channel.get_underlay_channel()
    await underlay.basic_publish(
        body,
        exchange=exchange.name,
        routing_key=routing_key,
        properties=properties,
        mandatory=False,
    )


class RunRecorder:
    """Publishes run records (fire-and-forget: records are telemetry, not work)."""

    def __init__(self, exchange: AbstractExchange | None) -> None:
        self._exchange = exchange

    async def record(self, record: dict[str, Any]) -> None:
        log.info(
            "run %s %s",
            record["extension"],
            record["outcome"],
            extra={
                "run_id": record["run_id"],
                "extension": record["extension"],
                "action": record["action"],
                "kind": record["kind"],
                "attempt": record["attempt"],
                "outcome": record["outcome"],
                "exit_code": record["exit_code"],
                "duration_ms": record["duration_ms"],
            },
        )
        if self._exchange is None:
            return
        key = f"{record['extension']}.{record['outcome']}"
        try:
            await publish_raw(self._exchange, orjson.dumps(record), key, _RECORD_PROPERTIES)
        except Exception:  # a lost record must never fail the run it describes
            log.warning("could not publish run record %s", record["run_id"], exc_info=True)
