"""One run record per run: published to `csext.runs` and logged as one structured line.

Records carry tails of stdout/stderr for diagnosis but never the payload, and every known secret
value (manifest secrets, hook credential fields) is masked out of them first.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractExchange

from csext.schemas.run import Outcome, RunRecord, RunResult, Truncated

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
    secrets: Iterable[str] = (),
    error: str | None = None,
) -> RunRecord:
    secrets = tuple(secrets)
    return RunRecord(
        run_id=run_id,
        extension=extension,
        version=version,
        hook=hook,
        action=action,
        kind=kind,
        attempt=attempt,
        outcome=outcome,
        exit_code=run.exit_code if run else None,
        duration_ms=run.duration_ms if run else 0,
        truncated=Truncated(
            stdout=bool(run and run.stdout_truncated), stderr=bool(run and run.stderr_truncated)
        ),
        stdout_tail=mask(run.stdout_tail(TAIL_BYTES), secrets) if run else "",
        stderr_tail=mask(run.stderr_tail(TAIL_BYTES), secrets) if run else "",
        event_key=event_key,
        error=mask(error, secrets)
        if error
        else (mask(run.error, secrets) if run and run.error else None),
        worker=WORKER_ID,
        finished_at=time.time(),
    )


class RunRecorder:
    """Publishes run records (fire-and-forget: records are telemetry, not work)."""

    def __init__(self, exchange: AbstractExchange | None) -> None:
        self._exchange = exchange

    async def record(self, record: RunRecord) -> None:
        log.info(
            "run %s %s",
            record.extension,
            record.outcome.value,
            extra={
                "run_id": record.run_id,
                "extension": record.extension,
                "action": record.action,
                "kind": record.kind,
                "attempt": record.attempt,
                "outcome": record.outcome.value,
                "exit_code": record.exit_code,
                "duration_ms": record.duration_ms,
            },
        )
        if self._exchange is None:
            return
        message = aio_pika.Message(
            record.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            await self._exchange.publish(
                message, f"{record.extension}.{record.outcome.value}", mandatory=False
            )
        except Exception:  # a lost record must never fail the run it describes
            log.warning("could not publish run record %s", record.run_id, exc_info=True)
