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

from csext.schemas.errors import describe_validation_error
from csext.schemas.rpc import RpcError, RpcReply, RpcRequest
from csext.schemas.run import Outcome, RunResult
from csext.store.registry import Extension, RegistryView
from csext.worker import metrics
from csext.worker.amqp import names as c
from csext.worker.amqp.deadletter import DeadLetterPublisher
from csext.worker.amqp.delivery import Incoming
from csext.worker.amqp.records import publish_raw
from csext.worker.events import settle
from csext.worker.retry import retry_runs
from csext.worker.runtimes.environment import event_key
from csext.worker.runtimes.execution import Executor, RunContext, RunOutcome, run_limits

log = logging.getLogger(__name__)

MIN_RETRY_RUN = 0.5
"""Seconds a retry needs at least before the caller's deadline, or it does not start."""


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
        if reply is not None and not await self.reply(message, reply):
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
        try:
            outcome = await self._run_with_retries(ext, ctx, deadline, limits.attempts)
        except ValueError as exc:
            return RpcReply.failure("bad-request", str(exc))
        run, interp = outcome.run, outcome.interpretation
        return reply_body(run, interp.error, interp.result)

    async def _run_with_retries(
        self, ext: Extension, ctx: RunContext, deadline: float, attempts: int
    ) -> RunOutcome:
        """Run, then retry on tenacity (worker/retry.py) while a retry can start before the
        caller's deadline; each run's timeout is cut to the time the caller has left."""

        async def run(attempt: int) -> RunOutcome:
            left = deadline - time.time() - self._margin
            timeout = max(0.001, min(ctx.timeout, left))
            return await self._executor.execute(
                ext, dataclasses.replace(ctx, attempt=attempt, timeout=timeout)
            )

        started = time.monotonic()
        first = await run(1)
        if not first.interpretation.retry or attempts <= 1:
            return first
        budget = deadline - time.time() - self._margin - MIN_RETRY_RUN
        return await retry_runs(
            ext.spec.retry,
            attempts,
            first,
            run,
            elapsed=time.monotonic() - started,
            budget=budget,
        )

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
