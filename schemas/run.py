"""What one extension run produced, and the records csext publishes about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    """The extension ran and exited non-zero."""
    TIMEOUT = "timeout"
    ERROR = "error"
    """The extension could not be run at all (missing, not executable, spawn failed)."""
    EXPIRED = "expired"
    """An RPC call whose deadline had passed before it could run; not run."""
    REJECTED = "rejected"
    """Bad input (not JSON, wrong shape): not run."""
    CIRCUIT_OPEN = "circuit-open"
    """Not run: the extension's circuit breaker is open (spec.circuitBreaker); the caller got
    the hook's failure-policy answer at once. Also recorded when the breaker opens."""


@dataclass(slots=True)
class RunResult:
    """The raw `{stdout, stderr, exit code}` of one run, as bytes, capped."""

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    duration_ms: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    error: str | None = None
    """Why the extension could not be run (spawn failure); None when it ran."""
    pid: int | None = field(default=None, repr=False)

    @property
    def outcome(self) -> Outcome:
        if self.error is not None:
            return Outcome.ERROR
        if self.timed_out:
            return Outcome.TIMEOUT
        return Outcome.SUCCESS if self.exit_code == 0 else Outcome.FAILED

    def stderr_tail(self, limit: int = 512) -> str:
        return tail_text(self.stderr, limit)

    def stdout_tail(self, limit: int = 512) -> str:
        return tail_text(self.stdout, limit)


def tail_text(data: bytes, limit: int) -> str:
    """The last `limit` bytes as text, undecodable bytes replaced."""
    return data[-limit:].decode("utf-8", "replace")


class Truncated(BaseModel):
    model_config = ConfigDict(frozen=True)
    stdout: bool = False
    stderr: bool = False


class RunRecord(BaseModel):
    """Published to `csext.runs` for every run. Never carries the payload."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    extension: str
    version: str
    hook: str
    action: str
    kind: str
    """`event` or `rpc`."""
    attempt: int
    outcome: Outcome
    exit_code: int | None
    duration_ms: int
    truncated: Truncated
    stdout_tail: str
    stderr_tail: str
    event_key: str
    error: str | None = None
    warnings: list[str] = []
    """Where csext's reading of the output disagrees with it but the caller (CloudStack)
    accepts it: e.g. exit 0 with `"status": "error"`. The output itself is passed on unchanged."""
    worker: str
    finished_at: float = 0.0
    """Epoch seconds when the run ended (or was refused)."""
