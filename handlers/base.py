"""The contract between the worker and a hook type.

The worker knows nothing hook-specific: for every run it asks the extension's hook handler
to turn the caller's payload into the payload file, and to turn the raw
`{stdout, stderr, exit code}` into an outcome, a retry decision and a typed result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from csext.schemas.manifest import HookType, Spec
from csext.schemas.rpc import RpcError
from csext.schemas.run import Outcome, RunResult


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What a run means for its hook."""

    outcome: Outcome
    retry: bool = False
    """The run failed in a way the retry policy says to try again."""
    result: Any = None
    """The hook's typed result as JSON-able data (RPC reply `result`); None if none."""
    error: RpcError | None = None


class HookHandler(Protocol):
    hook: HookType

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        """The content of the payload file the extension reads (argv[2])."""
        ...

    def interpret(self, action: str, run: RunResult, spec: Spec) -> Interpretation:
        ...


def should_retry(run: RunResult, spec: Spec) -> bool:
    """The manifest's retry policy applied to a raw run."""
    policy = spec.retry
    if run.timed_out:
        return policy.retry_on_timeout
    if run.error is not None:
        return False
    return run.exit_code is not None and run.exit_code in policy.retryable_exit_codes


def run_error(run: RunResult) -> RpcError | None:
    if run.error is not None:
        return RpcError(kind="spawn-failed", message=run.error)
    if run.timed_out:
        return RpcError(kind="timeout", message=f"extension timed out after {run.duration_ms} ms")
    return None


class GenericHandler:
    """Runs every extension the same way: JSON payload in, raw stdout/exit code out."""

    def __init__(self, hook: HookType) -> None:
        self.hook = hook

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        return orjson.dumps(payload)

    def interpret(self, action: str, run: RunResult, spec: Spec) -> Interpretation:
        return Interpretation(
            outcome=run.outcome, retry=should_retry(run, spec), error=run_error(run)
        )
