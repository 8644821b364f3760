"""The RPC path: a call → the extension → a reply on `reply_to` with the same correlation id.

The caller's deadline travels in the `x-csext-deadline` header (epoch ms): a call already past
it is dropped unrun (nobody waits for the answer), and the extension's timeout is cut to the
time left minus a margin so the reply arrives before the caller gives up. Calls are acked once
the reply is published; bad calls get an immediate error reply, never a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aio_pika.abc import AbstractExchange
from aiormq import spec
from pydantic import ValidationError

from csext.handlers import get_handler
from csext.schemas.errors import describe_validation_error
from csext.schemas.rpc import RpcError, RpcReply, RpcRequest
from csext.schemas.run import Outcome, RunResult
from csext.store.registry import Extension, RegistryView
from csext.worker import metrics
from csext.worker.amqp import names as c
from csext.worker.amqp.deadletter import DeadLetterPublisher
from csext.worker.amqp.delivery import Incoming
from csext.worker.amqp.records import publish_raw
from csext.worker.breaker import Breaker, CircuitOpen, State, Ticket, run_counted
from csext.worker.events import settle
from csext.worker.replies import Key, RecordedReplies, reply_key
from csext.worker.retry import retry_runs
from csext.worker.runtimes.environment import event_key
from csext.worker.runtimes.execution import Executor, RunContext, RunOutcome, run_limits

log = logging.getLogger(__name__)

MIN_RETRY_RUN = 0.5
"""Seconds a retry needs at least before the caller's deadline, or it does not start."""
REPLY_WAIT = 5.0
"""Seconds a reply waits for its publishing connection to come back before the call is handed
back to the queue."""


class BadCall(Exception):
    pass


def call_deadline(message: Incoming, default_timeout: float) -> float:
    """The caller's absolute deadline in epoch seconds."""
    raw = (message.headers or {}).get(c.HEADER_DEADLINE)
    if raw is None:
        return time.time() + default_timeout
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise BadCall(f"header {c.HEADER_DEADLINE} must be epoch milliseconds (an integer)")
    return float(raw) / 1000.0


def parse_call(body: bytes) -> RpcRequest:
    """The call's `{"action", "payload"}`; BadCall naming what is wrong otherwise.

    A well-formed body is checked with orjson and a few type tests (pydantic validation
    cost more than the rest of a warm call); anything else goes through the model, whose
    errors name the problem.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is dict and doc.keys() <= _CALL_KEYS:
        action = doc.get("action")
        if type(action) is str and 0 < len(action) <= 255:
            payload = doc.get("payload", {})
            return RpcRequest.model_construct(action=action, payload=payload)
    try:
        return RpcRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc))
        raise BadCall(
            'body must be JSON {"action": "<action>", "payload": {...}}: ' + problems
        ) from None


_CALL_KEYS = frozenset({"action", "payload"})


def reply_body(run: RunResult, error: RpcError | None, result: Any) -> bytes:
    """`RpcReply.from_run(...)` as JSON, built without the model (same fields, same order)."""
    return orjson.dumps(
        {
            "exit_code": run.exit_code,
            "stdout": run.stdout.decode("utf-8", "replace"),
            "stderr": run.stderr.decode("utf-8", "replace"),
            "duration_ms": run.duration_ms,
            "truncated": {"stdout": run.stdout_truncated, "stderr": run.stderr_truncated},
            "error": None if error is None else {"kind": error.kind, "message": error.message},
            "result": result,
        }
    )


class RpcDelivery:
    def __init__(
        self,
        executor: Executor,
        default_exchange: AbstractExchange,
        dead_letters: DeadLetterPublisher,
        margin: float,
    ) -> None:
        self._executor = executor
        self._replies = default_exchange
        self._dead_letters = dead_letters
        self._margin = margin
        self._recorded = RecordedReplies()
        """Replies of idempotent and read-only calls, for redeliveries (worker/replies.py)."""

    async def handle(self, ext: Extension, message: Incoming) -> None:
        received = time.monotonic()
        if self._executor.metrics is not None:
            self._executor.metrics.received(ext, message)
        if not message.reply_to:
            await self._no_reply_to(ext.name, message)
            return
        try:
            reply = await self._call(ext, message)
        except asyncio.CancelledError:
            raise
        except BadCall as exc:
            reply = RpcReply.failure("bad-request", str(exc))
        except Exception:
            log.exception("RPC path crashed", extra={"extension": ext.name})
            reply = RpcReply.failure("internal", "the worker failed to run the call; see its log")
        if reply is not None and not await self._reply_or_wait(message, reply):
            # The reply was lost (connection being restored): hand the call back, so it runs
            # again while the caller still waits, or is dropped unrun once its deadline passed.
            await settle(message.nack(requeue=True))
            return
        if reply is not None and self._executor.metrics is not None:
            self._executor.metrics.of(ext).reply.observe(time.monotonic() - received)
        await settle(message.ack())

    async def _call(self, ext: Extension, message: Incoming) -> RpcReply | bytes | None:
        limits = run_limits(ext)
        deadline = call_deadline(message, limits.timeout + self._margin)
        request = parse_call(message.body)
        ctx = RunContext(
            action=request.action,
            payload=request.payload,
            kind="rpc",
            attempt=1,
            event_key=event_key(ext.name, request.action, message.body),
            timeout=limits.timeout,
        )
        left = deadline - time.time() - self._margin
        if left <= 0:
            log.info("call expired before it ran", extra={"extension": ext.name})
            await self._executor.record_unrun(ext, ctx, Outcome.EXPIRED, "deadline passed")
            return None
        key = self._replay_key(ext, request.action, message)
        if key is not None and message.redelivered:
            recorded = self._recorded.recorded(key) or await self._recorded.running(key, deadline)
            if recorded is not None:
                metrics.reply_replayed(ext.name)
                log.info(
                    "redelivered call answered with its recorded reply, not run again",
                    extra={"extension": ext.name, "correlation_id": message.correlation_id},
                )
                return recorded
        if key is None:
            return await self._run_call(ext, ctx, deadline, limits.attempts)
        self._recorded.started(key)
        body: RpcReply | bytes | None = None
        try:
            body = await self._run_call(ext, ctx, deadline, limits.attempts)
        finally:  # recorded before the reply is published: a lost ack must find it
            self._recorded.finished(key, body if isinstance(body, bytes) else None, deadline)
        return body

    async def _run_call(
        self, ext: Extension, ctx: RunContext, deadline: float, attempts: int
    ) -> RpcReply | bytes:
        """The call's reply: the breaker's answer, or the runs' (with retries)."""
        breaker = self._executor.breakers.of(ext)
        ticket = breaker.admit() if breaker is not None else None
        if breaker is not None and ticket is None:
            return await self._refuse(ext, ctx, breaker)
        try:
            outcome = await self._run_with_retries(ext, ctx, deadline, attempts, ticket)
        except ValueError as exc:
            return RpcReply.failure("bad-request", str(exc))
        finally:
            if breaker is not None:
                breaker.abandon(ticket)
        run, interp = outcome.run, outcome.interpretation
        return reply_body(run, interp.error, interp.result)

    def _replay_key(self, ext: Extension, action: str, message: Incoming) -> Key | None:
        """The call's key in the recorded replies, when its reply may be replayed."""
        if not (message.correlation_id and message.reply_to):
            return None
        replayable = ext.spec.idempotent_replies or (
            action.strip().lower() in get_handler(ext.hook).read_only_actions
        )
        if not replayable:
            return None
        return reply_key(ext.name, message.correlation_id, message.reply_to, message.body)

    async def _refuse(self, ext: Extension, ctx: RunContext, breaker: Breaker) -> bytes:
        """The breaker is open: the hook's failure-policy answer at once, recorded, not run."""
        breaker.refused += 1
        text = (
            f"circuit breaker open (about {breaker.cooldown_left():.0f}s of cooldown left, then "
            "one trial call): the extension kept failing, so this call was not run"
        )
        answer = get_handler(ext.hook).circuit_open(ctx.action, ctx.payload, ext.spec, text)
        await self._executor.record_unrun(ext, ctx, Outcome.CIRCUIT_OPEN, text)
        return reply_body(RunResult(exit_code=None), answer.error, answer.result)

    async def _run_with_retries(
        self,
        ext: Extension,
        ctx: RunContext,
        deadline: float,
        attempts: int,
        ticket: Ticket | None = None,
    ) -> RunOutcome:
        """Run, then retry on tenacity (worker/retry.py) while a retry can start before the
        caller's deadline; each run's timeout is cut to the time the caller has left. A
        circuit breaker that opens meanwhile ends the retries (the last outcome is the answer)."""
        breaker = self._executor.breakers.of(ext)
        last: list[RunOutcome] = []

        async def run(attempt: int) -> RunOutcome:
            if attempt > 1 and breaker is not None and breaker.state is not State.CLOSED:
                raise CircuitOpen(ext.name)
            left = deadline - time.time() - self._margin
            timeout = max(0.001, min(ctx.timeout, left))
            attempt_ctx = dataclasses.replace(ctx, attempt=attempt, timeout=timeout)
            outcome = await run_counted(self._executor, ext, attempt_ctx, breaker, ticket)
            last.append(outcome)
            return outcome

        started = time.monotonic()
        first = await run(1)
        if not first.interpretation.retry or attempts <= 1:
            return first
        budget = deadline - time.time() - self._margin - MIN_RETRY_RUN
        try:
            return await retry_runs(
                ext.spec.retry,
                attempts,
                first,
                run,
                elapsed=time.monotonic() - started,
                budget=budget,
            )
        except CircuitOpen:
            return last[-1]

    async def _reply_or_wait(self, message: Incoming, reply: RpcReply | bytes) -> bool:
        """Publish the reply; if the publishing connection is being restored, wait for it (at
        most REPLY_WAIT seconds) and publish once more. Replies go out on a connection of their
        own (worker/app.py): without the wait, a call handed back while only that connection is
        down would come straight back and run again, in a loop, until it is restored."""
        if await self.reply(message, reply):
            return True
        channel = getattr(self._replies, "channel", None)
        if channel is None:
            return False
        waited = 0.0
        while channel.is_closed and waited < REPLY_WAIT:
            await asyncio.sleep(0.1)
            waited += 0.1
        return not channel.is_closed and await self.reply(message, reply)

    async def reply(self, message: Incoming, reply: RpcReply | bytes) -> bool:
        """Publish `reply` (a model, or its JSON) to the caller's reply_to; False if that failed
        (never raises)."""
        body = reply if isinstance(reply, bytes) else orjson.dumps(reply.model_dump(mode="json"))
        properties = spec.Basic.Properties(
            correlation_id=message.correlation_id,
            content_type="application/json",
            delivery_mode=1,
        )
        try:
            await asyncio.shield(
                publish_raw(self._replies, body, message.reply_to or "", properties)
            )
        except Exception:
            log.warning("could not publish a reply to %s", message.reply_to, exc_info=True)
            return False
        return True

    async def _no_reply_to(self, extension: str, message: Incoming) -> None:
        log.warning("RPC call without reply_to dead-lettered", extra={"extension": extension})
        await asyncio.shield(
            self._dead_letters.publish(
                message,
                extension=extension,
                queue=c.rpc_queue(extension),
                reason="no-reply-to",
                detail="RPC calls must set the reply_to property (e.g. amq.rabbitmq.reply-to)",
            )
        )
        metrics.dead_lettered(extension, "no-reply-to")
        await settle(message.ack())

    async def handle_unrouted(self, view: Callable[[], RegistryView], message: Incoming) -> None:
        """A call csext.rpc could not route: the extension is unknown, disabled or broken."""
        name = message.routing_key or ""
        kind, text = view().why_unavailable(name)
        if message.reply_to:
            await self.reply(message, RpcReply.failure(kind, text))
        else:
            log.warning("unroutable call without reply_to dropped: %s", text)
        await settle(message.ack())
