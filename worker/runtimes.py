"""Pick the runtime an extension asked for (`spec.runtime`): exec, or a warm coprocess."""

from __future__ import annotations

from csext.schemas.manifest import Runtime
from csext.schemas.run import RunResult
from csext.store.registry import Extension

from .runner import ExecRunner, RunRequest
from .settings import Settings


class Runtimes:
    def __init__(self, settings: Settings, runner: ExecRunner) -> None:
        self._settings = settings
        self._exec = runner

    async def run(self, extension: Extension, request: RunRequest) -> RunResult:
        if extension.spec.runtime is Runtime.COPROCESS:
            pass  # TODO coprocess runtime
        return await self._exec.run(request)

    async def forget(self, name: str) -> None:
        """The extension changed or went away: drop any warm state it had."""

    async def aclose(self) -> None:
        """Stop every warm process."""
