"""The event path: a CloudStack event → the extension, with retries, then ack or dead-letter.

Every delivery is settled in exactly one place (`handle`), after the work is done and its run
recorded: ack on success or when filtered out, dead-letter (publish with reasons, then ack) on
bad input or exhausted retries, requeue on an unexpected crash of this code path (the queue's
delivery limit dead-letters a message that keeps crashing), nothing on cancellation (the broker
redelivers when the channel closes).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from csext.schemas.errors import DeadLetter, RetryableRun
from csext.schemas.event import CloudStackEvent, topic_matches
from csext.schemas.manifest import RetryPolicy
from csext.schemas.run import Outcome
from csext.store.registry import Extension

from . import constants as c
from .bindings import event_accepts, event_patterns
from .deadletter import DeadLetterPublisher
from .environment import event_key
from .execution import Executor, RunContext, RunOutcome, run_limits
from .records import mask

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    last: RunOutcome | None = None


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How often the broker delivered this message before (quorum queues count returns)."""
    value = (message.headers or {}).get(c.HEADER_DELIVERY_COUNT, 0)
    return value if isinstance(value, int) else 0


def parse_event(message: AbstractIncomingMessage) -> CloudStackEvent:
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        raise DeadLetter("invalid-body", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DeadLetter("invalid-body", f"body must be a JSON object, got {type(body).__name__}")
    return CloudStackEvent.from_delivery(message.routing_key or "", body)


def retrying(policy: RetryPolicy, attempts: int) -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_attempt(attempts) | stop_after_delay(policy.max_elapsed),
        wait=wait_exponential_jitter(
            multiplier=policy.backoff.initial,
            max=policy.backoff.max,
            exp_base=policy.backoff.multiplier,
            jitter=policy.backoff.jitter,
        ),
        retry=retry_if_exception_type(RetryableRun),
        reraise=True,
    )


class EventDelivery:
    def __init__(self, executor: Executor, dead_letters: DeadLetterPublisher) -> None:
        self._executor = executor
        self._dead_letters = dead_letters

    async def handle(self, ext: Extension, message: AbstractIncomingMessage) -> None:
        attempts = _Attempts()
        try:
            await self._process(ext, message, attempts)
        except asyncio.CancelledError:
            raise
        except DeadLetter as exc:
            try:
                await self._dead_letter(ext, message, exc, attempts)
            except Exception:
                log.exception("could not dead-letter; requeued", extra={"extension": ext.name})
                await _settle(message.nack(requeue=True))
                return
        except Exception:
            log.exception("event path crashed; requeued", extra={"extension": ext.name})
            await _settle(message.nack(requeue=True))
            return
        await _settle(message.ack())

    async def _process(
        self, ext: Extension, message: AbstractIncomingMessage, attempts: _Attempts
    ) -> None:
        event = parse_event(message)
        if not self._wanted(ext, event):
            log.debug("event %s filtered out", event.routing_key, extra={"extension": ext.name})
            return
        key = event_key(message.routing_key or "", message.body)
        base = delivery_count(message)
        payload = event.model_dump()
        limits = run_limits(ext)
        try:
            async for attempt in retrying(ext.spec.retry, limits.attempts):
                with attempt:
                    attempts.count += 1
                    ctx = RunContext(
                        action=event.category or "event",
                        payload=payload,
                        kind="event",
                        attempt=base + attempts.count,
                        event_key=key,
                        timeout=limits.timeout,
                    )
                    attempts.last = await self._run(ext, ctx)
                    if attempts.last.interpretation.retry:
                        raise RetryableRun(attempts.last.run_id)
        except RetryableRun:
            raise DeadLetter("retries-exhausted", "the extension kept failing") from None
        assert attempts.last is not None
        if attempts.last.interpretation.outcome is not Outcome.SUCCESS:
            raise DeadLetter("extension-failed", "the extension failed (not retryable)")

    def _wanted(self, ext: Extension, event: CloudStackEvent) -> bool:
        patterns = event_patterns(ext.spec)
        if not any(topic_matches(p, event.routing_key) for p in patterns):
            return False  # a stale binding left from an older manifest
        return event_accepts(event, ext.spec)

    async def _run(self, ext: Extension, ctx: RunContext) -> RunOutcome:
        try:
            outcome = await self._executor.execute(ext, ctx)
        except ValueError as exc:
            raise DeadLetter("bad-payload", str(exc)) from None
        return outcome

    async def _dead_letter(
        self,
        ext: Extension,
        message: AbstractIncomingMessage,
        exc: DeadLetter,
        attempts: _Attempts,
    ) -> None:
        last = attempts.last
        log.warning(
            "event dead-lettered: %s",
            exc.reason,
            extra={"extension": ext.name, "routing_key": message.routing_key, "detail": exc.detail},
        )
        await asyncio.shield(
            self._dead_letters.publish(
                message,
                extension=ext.name,
                queue=c.events_queue(ext.name),
                reason=exc.reason,
                detail=exc.detail,
                attempts=attempts.count,
                exit_code=last.run.exit_code if last else None,
                stderr_tail=mask(last.run.stderr_tail(512), ext.secret_values.values())
                if last
                else "",
            )
        )


async def _settle(operation: Any) -> None:
    """Ack/nack, tolerating a channel that closed meanwhile (the broker redelivers then)."""
    try:
        await asyncio.shield(operation)
    except Exception:
        log.warning("could not settle a delivery; the broker will redeliver it", exc_info=True)
