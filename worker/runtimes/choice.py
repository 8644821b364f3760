"""Pick the runtime an extension asked for (`spec.runtime`): exec, or a warm coprocess."""

from __future__ import annotations

from csext.schemas.manifest import Runtime
from csext.schemas.run import RunResult
from csext.store.registry import Extension
from csext.worker.runtimes.coprocess import CoprocessLimits, CoprocessRuntime
from csext.worker.runtimes.runner import ExecRunner, RunRequest
from csext.worker.settings import Settings


class Runtimes:
    def __init__(self, settings: Settings, runner: ExecRunner) -> None:
        self._exec = runner
        self._coprocess = CoprocessRuntime(
            CoprocessLimits(
                output_cap=settings.output_cap,
                kill_grace=settings.kill_grace,
                max_requests=settings.coprocess_max_requests,
                max_rss_mb=settings.coprocess_max_rss_mb,
            ),
            fork_gate=runner.fork_gate,
        )

    async def run(self, extension: Extension, request: RunRequest) -> RunResult:
        if extension.spec.runtime is Runtime.COPROCESS:
            return await self._coprocess.run(
                extension.name, request, concurrency=extension.spec.concurrency
            )
        return await self._exec.run(request)

    async def forget(self, name: str) -> None:
        """The extension changed or went away: its warm processes are drained and replaced."""
        await self._coprocess.close_extension(name)

    async def aclose(self) -> None:
        """Stop every warm process; remove the exec runtime's pooled run cgroups."""
        await self._coprocess.aclose()
        self._exec.close()
