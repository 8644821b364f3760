"""The RPC wire format (see docs/protocol.md): request and reply bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .run import RunResult, Truncated


class RpcRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str = Field(min_length=1, max_length=255)
    payload: Any = Field(default_factory=dict)


class RpcError(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    """unknown-extension, disabled, bad-request, timeout, spawn-failed, expired, internal."""
    message: str


class RpcReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_ms: int = 0
    truncated: Truncated = Truncated()
    error: RpcError | None = None
    result: Any = None
    """The hook's typed result (hook catalog); null when there is none or on error."""

    @classmethod
    def from_run(
        cls, run: RunResult, error: RpcError | None = None, result: Any = None
    ) -> RpcReply:
        return cls(
            exit_code=run.exit_code,
            stdout=run.stdout.decode("utf-8", "replace"),
            stderr=run.stderr.decode("utf-8", "replace"),
            duration_ms=run.duration_ms,
            truncated=Truncated(stdout=run.stdout_truncated, stderr=run.stderr_truncated),
            error=error,
            result=result,
        )

    @classmethod
    def failure(cls, kind: str, message: str) -> RpcReply:
        return cls(error=RpcError(kind=kind, message=message))
