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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from csext.handlers.event import accepts
from csext.schemas.errors import DeadLetter
from csext.schemas.event import event_fields, topic_matches
from csext.schemas.run import Outcome
from csext.store.registry import Extension
from csext.worker import metrics
from csext.worker.amqp import names as c
from csext.worker.amqp.bindings import event_patterns
from csext.worker.amqp.deadletter import DeadLetterPublisher
from csext.worker.amqp.delivery import Incoming
from csext.worker.amqp.records import mask
from csext.worker.breaker import Breaker, CircuitOpen, Released, State, Ticket, run_counted
from csext.worker.retry import retry_runs
from csext.worker.runtimes.environment import event_key
from csext.worker.runtimes.execution import Executor, RunContext, RunOutcome, run_limits

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    last: RunOutcome | None = None


def delivery_count(message: Incoming) -> int:
    """How often the broker delivered this message before (quorum queues count returns)."""
    value = (message.headers or {}).get(c.HEADER_DELIVERY_COUNT, 0)
    return value if isinstance(value, int) else 0


def cloudstack_routing_key(message: Incoming) -> str:
    """The event's CloudStack routing key. A replayed dead letter (`csext dead replay`) comes
    straight to the queue through the default exchange and carries it in a header."""
    if not message.exchange:
        original = (message.headers or {}).get(c.HEADER_ORIGINAL_ROUTING_KEY)
        if isinstance(original, str):
            return original
    return message.routing_key or ""


def parse_event(message: Incoming) -> dict[str, Any]:
    """The event payload, `CloudStackEvent`'s fields as a plain dict (validating the model then
    dumping it for every event cost more than the split)."""
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        raise DeadLetter("invalid-body", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DeadLetter("invalid-body", f"body must be a JSON object, got {type(body).__name__}")
    return event_fields(cloudstack_routing_key(message), body)


class EventDelivery:
    def __init__(self, executor: Executor, dead_letters: DeadLetterPublisher) -> None:
        self._executor = executor
        self._dead_letters = dead_letters
        self._routes: dict[str, tuple[Extension, tuple[str, ...], bool]] = {}
        """(extension, binding patterns, has filters) by name, once per manifest, not per event."""

    def release_held(self) -> None:
        """Shutdown: events a circuit breaker holds go back to their queue now."""
        self._executor.breakers.release_all()

    async def handle(self, ext: Extension, message: Incoming) -> None:
        if self._executor.metrics is not None:
            self._executor.metrics.received(ext, message)
        attempts = _Attempts()
        try:
            await self._process(ext, message, attempts)
        except asyncio.CancelledError:
            raise
        except Released:  # the worker stops while the breaker holds this event
            await settle(message.nack(requeue=True))
            return
        except DeadLetter as exc:
            try:
                await self._dead_letter(ext, message, exc, attempts)
            except Exception:
                log.exception("could not dead-letter; requeued", extra={"extension": ext.name})
                await settle(message.nack(requeue=True))
                return
        except Exception:
            log.exception("event path crashed; requeued", extra={"extension": ext.name})
            await settle(message.nack(requeue=True))
            return
        await settle(message.ack())

    async def _process(self, ext: Extension, message: Incoming, attempts: _Attempts) -> None:
        event = parse_event(message)
        if not self._wanted(ext, event):
            log.debug("event %s filtered out", event["routing_key"], extra={"extension": ext.name})
            return
        key = event_key(event["routing_key"], message.body)
        base = delivery_count(message)
        limits = run_limits(ext)

        def context(attempt: int) -> RunContext:
            return RunContext(
                action=event["category"] or "event",
                payload=event,
                kind="event",
                attempt=base + attempt,
                event_key=key,
                timeout=limits.timeout,
            )

        breaker = self._executor.breakers.of(ext)
        while True:  # more than once only when a circuit breaker holds the event
            ticket = await breaker.wait_turn() if breaker is not None else None
            try:
                await self._runs(ext, context, attempts, breaker, ticket)
                return
            except CircuitOpen:
                log.info("event held until the circuit breaker lets it run", extra=_of(ext))
            finally:
                if breaker is not None:
                    breaker.abandon(ticket)

    async def _runs(
        self,
        ext: Extension,
        context: Callable[[int], RunContext],
        attempts: _Attempts,
        breaker: Breaker | None,
        ticket: Ticket | None,
    ) -> None:
        """The first run, then retries (worker/retry.py) while the breaker, if any, stays
        closed; CircuitOpen when it opened (the event is held, not dead-lettered)."""
        started = time.monotonic()
        limits = run_limits(ext)
        done = attempts.count
        # The first run goes without tenacity: most events need no retry, and setting up
        # the retry loop cost more than the rest of the event path.
        attempts.count = done + 1
        attempts.last = await self._run(ext, context(done + 1), breaker, ticket)
        if attempts.last.interpretation.retry:

            async def again(attempt: int) -> RunOutcome:
                if breaker is not None and breaker.state is not State.CLOSED:
                    raise CircuitOpen(ext.name)
                attempts.count = done + attempt
                return await self._run(ext, context(done + attempt), breaker, ticket)

            attempts.last = await retry_runs(
                ext.spec.retry,
                limits.attempts,
                attempts.last,
                again,
                elapsed=time.monotonic() - started,
            )
            if attempts.last.interpretation.retry:
                raise DeadLetter("retries-exhausted", "the extension kept failing")
        if attempts.last.interpretation.outcome is not Outcome.SUCCESS:
            raise DeadLetter("extension-failed", "the extension failed (not retryable)")

    def _wanted(self, ext: Extension, event: dict[str, Any]) -> bool:
        route = self._routes.get(ext.name)
        if route is None or route[0] is not ext:  # new or changed manifest
            patterns = tuple(event_patterns(ext.spec))
            route = self._routes[ext.name] = (ext, patterns, not ext.spec.events.filters.empty)
        if not any(topic_matches(p, event["routing_key"]) for p in route[1]):
            return False  # a stale binding left from an older manifest
        return not route[2] or accepts(event, ext.spec)

    async def _run(
        self, ext: Extension, ctx: RunContext, breaker: Breaker | None, ticket: Ticket | None
    ) -> RunOutcome:
        try:
            outcome = await run_counted(self._executor, ext, ctx, breaker, ticket)
        except ValueError as exc:
            raise DeadLetter("bad-payload", str(exc)) from None
        return outcome

    async def _dead_letter(
        self,
        ext: Extension,
        message: Incoming,
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
                stderr_tail=mask(last.run.stderr_tail(512), last.secrets()) if last else "",
            )
        )
        metrics.dead_lettered(ext.name, exc.reason)


def _of(ext: Extension) -> dict[str, str]:
    return {"extension": ext.name}


async def settle(operation: Any) -> None:
    """Ack/nack, tolerating a channel that closed meanwhile (the broker redelivers then)."""
    try:
        await asyncio.shield(operation)
    except Exception:
        log.warning("could not settle a delivery; the broker will redeliver it", exc_info=True)
