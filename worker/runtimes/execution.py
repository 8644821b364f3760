"""One extension run, the same for events and RPC calls: payload → process → typed outcome.

The hook handler builds the payload file and interprets the raw result; the runtime (exec or
coprocess) runs it; a run record is published before the caller settles the delivery.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from csext.handlers import HookHandler, Interpretation, get_handler
from csext.handlers.base import effective_attempts, effective_timeout
from csext.schemas.run import Outcome, RunResult
from csext.store.registry import Extension
from csext.worker.amqp.records import RunRecorder, build_record
from csext.worker.breaker import Breakers
from csext.worker.metrics import RunMetrics
from csext.worker.runtimes.environment import extension_env
from csext.worker.runtimes.runner import RunRequest
from csext.worker.settings import Settings


class Runtime(Protocol):
    async def run(self, extension: Extension, request: RunRequest) -> RunResult: ...


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the delivery path knows about the run it asks for."""

    action: str
    payload: Any
    kind: str
    attempt: int
    event_key: str
    timeout: float
    secrets: tuple[str, ...] = ()
    """Values to mask in records, beyond the manifest's secrets (e.g. payload credentials)."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run: RunResult
    interpretation: Interpretation
    run_id: str
    secrets: Callable[[], tuple[str, ...]] = tuple
    """Every value to mask in text about this run (manifest secrets, payload credentials)."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    timeout: float
    """The manifest's `spec.timeout`, else the hook's default."""
    attempts: int
    """The manifest's `spec.retry.attempts`, else the hook's default."""


_LIMITS: dict[int, tuple[Extension, RunLimits]] = {}


def run_limits(ext: Extension) -> RunLimits:
    """The extension's limits, computed once per manifest (not per message): reading pydantic's
    `model_fields_set` twice per event cost more than the rest of the lookup."""
    cached = _LIMITS.get(id(ext))
    if cached is not None and cached[0] is ext:
        return cached[1]
    defaults = get_handler(ext.hook).defaults
    limits = RunLimits(
        effective_timeout(ext.spec, defaults), effective_attempts(ext.spec, defaults)
    )
    if len(_LIMITS) >= 4096:  # reloads make new Extension objects; drop the old ones
        _LIMITS.clear()
    _LIMITS[id(ext)] = (ext, limits)
    return limits


def _payload_bytes(handler: HookHandler, ext: Extension, ctx: RunContext) -> bytes:
    """The payload file's content; ValueError (bad input, not a crash) when it cannot be
    encoded, e.g. JSON nested deeper than orjson writes (254 levels)."""
    try:
        return handler.payload_bytes(ctx.action, ctx.payload, ext.spec)
    except orjson.JSONEncodeError as exc:
        raise ValueError(
            f"the payload cannot be written as JSON ({exc}); nest it less than 254 levels deep"
        ) from None


class Executor:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        recorder: RunRecorder,
        metrics: RunMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._recorder = recorder
        self._global = asyncio.Semaphore(settings.concurrency)
        self.metrics = metrics
        """None: metrics are off (no port set), and the run path skips them entirely."""
        self.breakers = Breakers()
        """The extensions' circuit breakers in this process (both paths count runs on them)."""

    async def execute(self, ext: Extension, ctx: RunContext) -> RunOutcome:
        """Run once and record it. Raises ValueError when the payload does not fit the hook."""
        handler = get_handler(ext.hook)
        payload = _payload_bytes(handler, ext, ctx)
        run_id = uuid.uuid4().hex
        request = RunRequest(
            entrypoint=ext.entrypoint,
            action=ctx.action,
            payload=payload,
            timeout=ctx.timeout,
            env=self._environment(ext, ctx, run_id),
            cwd=ext.directory,
        )
        bound = self.metrics.of(ext) if self.metrics is not None else None
        async with self._global:
            if bound is None:
                run = await self._runtime.run(ext, request)
            else:
                bound.flying += 1
                try:
                    run = await self._runtime.run(ext, request)
                finally:
                    bound.flying -= 1
        interpretation = handler.interpret(ctx.action, run, ext.spec, ctx.payload)
        if bound is not None:
            bound.finished(run, interpretation.outcome.value, ctx.attempt)

        def secrets() -> tuple[str, ...]:  # walked only when the record has text to mask
            return (
                *ext.secret_values.values(),
                *ctx.secrets,
                *handler.secret_values(ctx.action, ctx.payload),
                *interpretation.secrets,
            )

        error = interpretation.error.message if interpretation.error else None
        result = interpretation.result
        warnings = result.get("warnings") or () if isinstance(result, dict) else ()
        await self._publish(ext, ctx, run_id, interpretation.outcome, run, error, secrets, warnings)
        return RunOutcome(run, interpretation, run_id, secrets)

    def _environment(self, ext: Extension, ctx: RunContext, run_id: str) -> dict[str, str]:
        return extension_env(
            path=self._settings.extension_path,
            lang=self._settings.extension_lang,
            env=ext.spec.env,
            secrets=ext.secret_values,
            extension=ext.name,
            hook=ext.hook.value,
            action=ctx.action,
            run_id=run_id,
            attempt=ctx.attempt,
            deadline=time.time() + ctx.timeout,
            event_key=ctx.event_key,
        )

    async def record_unrun(
        self, ext: Extension, ctx: RunContext, outcome: Outcome, error: str
    ) -> None:
        """A record for a call that was not run (expired, rejected)."""
        if self.metrics is not None:
            self.metrics.of(ext).runs[outcome.value].n += 1
        await self._publish(ext, ctx, uuid.uuid4().hex, outcome, None, error, ())

    async def _publish(
        self,
        ext: Extension,
        ctx: RunContext,
        run_id: str,
        outcome: Outcome,
        run: RunResult | None,
        error: str | None,
        secrets: tuple[str, ...] | Callable[[], tuple[str, ...]],
        warnings: Iterable[str] = (),
    ) -> None:
        record = build_record(
            run_id=run_id,
            extension=ext.name,
            version=ext.version,
            hook=ext.hook.value,
            action=ctx.action,
            kind=ctx.kind,
            attempt=ctx.attempt,
            outcome=outcome,
            run=run,
            event_key=ctx.event_key,
            secrets=secrets,
            error=error,
            warnings=warnings,
        )
        self._recorder.record(record)
