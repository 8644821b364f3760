"""One run record per run: published to `csext.runs` and logged as one structured line.

Records carry tails of stdout/stderr for diagnosis but never the payload, and every known secret
value (manifest secrets, hook credential fields) is masked out of them first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import aio_pika
import aiormq
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
    warnings: Iterable[str] = (),
) -> dict[str, Any]:
    """A run record as the JSON-able dict `RunRecord` describes (same fields, same order).

    A plain dict rather than the pydantic model: it is built once per run and only
    serialised, and validation bought nothing here. `secrets` may be a callable: it is only
    called when there is text to mask (most runs of a quiet extension have none).
    """
    stdout = run.stdout_tail(TAIL_BYTES) if run else ""
    stderr = run.stderr_tail(TAIL_BYTES) if run else ""
    error = error or (run.error if run else None)
    notes = list(warnings)
    if stdout or stderr or error or notes:
        values = tuple(secrets() if callable(secrets) else secrets)
        stdout, stderr = mask(stdout, values), mask(stderr, values)
        error = mask(error, values) if error else None
        notes = [mask(note, values) for note in notes]
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
        "warnings": notes,
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
    underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
    await underlay.basic_publish(
        body,
        exchange=exchange.name,
        routing_key=routing_key,
        properties=properties,
        mandatory=False,
        wait=_wait(underlay),
    )


def _wait(channel: aiormq.Channel) -> bool:
    """Wait for the socket write only where publisher confirms need it. Without confirms the
    frames are queued on the connection's one write queue, ahead of the ack that follows them,
    so not waiting changes no ordering; it saves a writer-task round trip per publish."""
    return bool(channel.publisher_confirms)


class RunRecorder:
    """Logs every run and publishes its record to `csext.runs`, batched.

    Records are telemetry, not work: fire-and-forget, and published in batches (one message
    per routing key `<extension>.<outcome>` per flush, its body a JSON array of records) every
    `flush_interval` seconds or every `max_batch` records. One publish per record cost the
    worker ~100 µs and the broker one stream write per run; a batch costs that once. A record
    is therefore visible up to `flush_interval` after its run, and the records of the last
    interval are lost if the worker is killed (they are flushed on a clean shutdown).

    While RabbitMQ blocks publishing (a memory or disk alarm, `pause`), records are held here,
    at most `max_held` (the oldest go first, counted and logged), and published when it
    unblocks (`resume`): publishing into a blocked connection would only queue them in a
    socket the broker does not read (worker/amqp/pressure.py).

    Per-run log lines: failures always (WARNING for errors and timeouts, INFO otherwise);
    successes only with `log_successes` (a line per run at thousands of runs per second is
    noise in journald; the records keep every run).
    """

    def __init__(
        self,
        exchange: AbstractExchange | None,
        *,
        flush_interval: float = 0.05,
        max_batch: int = 256,
        log_successes: bool = False,
        max_held: int = 50_000,
    ) -> None:
        self._exchange = exchange
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._log_successes = log_successes
        self._pending: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._max_held = max_held
        self.paused = False
        self.dropped = 0
        """Records dropped while paused, over `max_held`."""

    def pause(self, reason: str) -> None:
        """RabbitMQ blocks publishing: hold records until `resume`."""
        if not self.paused:
            self.paused = True
            log.warning(
                "RabbitMQ is blocking this worker's publishing (%s: a memory or disk alarm); "
                "run records are held until it clears, deliveries are still acked",
                reason,
            )

    def resume(self) -> None:
        """Publishing is unblocked: publish what was held."""
        if not self.paused:
            return
        self.paused = False
        held, dropped, self.dropped = len(self._pending), self.dropped, 0
        log.warning(
            "RabbitMQ unblocked publishing: publishing %d held run records%s",
            held,
            f" ({dropped} older ones were dropped over the limit of {self._max_held})"
            if dropped
            else "",
        )
        self._start_flush()

    def record(self, record: dict[str, Any]) -> None:
        outcome = record["outcome"]
        if outcome != "success" or self._log_successes:
            _log_run(record, logging.WARNING if outcome in _LOUD else logging.INFO)
        if self._exchange is None:
            return
        self._pending.append(record)
        if self.paused:
            if len(self._pending) > self._max_held:
                del self._pending[0]
                self.dropped += 1
            return
        if len(self._pending) >= self._max_batch:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._flush_interval, self._start_flush
            )

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.paused:
            return
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._publish(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _publish(self, batch: list[dict[str, Any]]) -> None:
        assert self._exchange is not None
        by_key: dict[str, list[dict[str, Any]]] = {}
        for record in batch:
            by_key.setdefault(f"{record['extension']}.{record['outcome']}", []).append(record)
        for key, records in by_key.items():
            try:
                await publish_raw(self._exchange, orjson.dumps(records), key, _RECORD_PROPERTIES)
            except Exception:  # a lost record must never fail a run
                log.warning(
                    "could not publish %d run records (%s)", len(records), key, exc_info=True
                )

    async def aclose(self) -> None:
        """Publish what is pending (clean shutdown); call before the connection closes."""
        if self.paused and self._pending:
            log.warning(
                "stopping while RabbitMQ blocks publishing: %d run records not published",
                len(self._pending),
            )
        self._start_flush()
        if self._flushing:
            await asyncio.wait(set(self._flushing), timeout=5)


_LOUD = frozenset({"error", "timeout"})


def _log_run(record: dict[str, Any], level: int) -> None:
    log.log(
        level,
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
