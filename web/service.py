"""The operations the API and the pages offer, each one call of the function the CLI calls.

Nothing here re-implements a store operation, a test run, a run-log read or a dead-letter
replay: it builds the same `Store`, calls `csext.store.*`, `csext.worker.testrun`,
`csext.worker.amqp.runlog` / `.dlq`, and broadcasts `registry-changed` with the same
best-effort `notify_best_effort` the CLI uses. Blocking store calls (Git, files) run in a
thread so the server keeps answering meanwhile.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from csext.schemas.errors import BrokerUnavailable, CsextError
from csext.schemas.manifest import HookType, Runtime
from csext.store import bundle, index, install, ops, query, scaffold
from csext.store.files import content_problems
from csext.store.git import Author
from csext.worker import testrun
from csext.worker.amqp import dlq, runlog
from csext.worker.amqp.records import mask
from csext.worker.control import notify_best_effort
from csext.worker.runtimes.runner import install_child_watcher
from csext.worker.settings import Settings

from . import workers

T = TypeVar("T")

MIB = 1024 * 1024
RUN_KINDS = frozenset({"event", "rpc"})
"""Run records that are runs of the extension (the statistics count only these)."""
STATS_TTL = 5.0
"""Seconds the last hour's run statistics are reused between page loads."""


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """Everything `csext serve` decides at start-up (built by the CLI, passed down)."""

    settings: Settings
    token_file: Path
    index_home: index.IndexHome
    max_body: int = MIB
    """Bytes any request body may have (413 above), except bundle uploads."""
    max_upload: int = 50 * MIB
    """Bytes a bundle upload may have (the CLI's default --max-total-mib)."""


@dataclass(slots=True)
class _Cached:
    at: float = 0.0
    value: Any = None


@dataclass(slots=True)
class Operations:
    config: WebConfig
    _stats: _Cached = field(default_factory=_Cached)

    @property
    def settings(self) -> Settings:
        return self.config.settings

    def store(self, author: Author | None = None) -> ops.Store:
        return ops.Store(
            self.settings.registry, self.settings.secrets_file, author or Author("csext web")
        )

    # --- reading the store ----------------------------------------------------------------

    async def list_extensions(
        self, hook: str | None = None, status: str | None = None, term: str = ""
    ) -> tuple[list[query.Summary], list[str]]:
        enabled = {"enabled": True, "disabled": False}.get(status or "")
        rows, warnings = await run_in_threadpool(
            query.list_extensions, self.store(), hook or None, enabled
        )
        if status == "broken":
            rows = [r for r in rows if r.status == "broken"]
        needle = term.strip().lower()
        if needle:
            rows = [
                r
                for r in rows
                if any(needle in t.lower() for t in (r.name, r.description, *r.tags))
            ]
        return rows, warnings

    async def show(self, name: str) -> dict[str, Any]:
        info = await run_in_threadpool(query.show, self.store(), name)
        info.pop("last_runs", None)  # run output is only shown to signed-in users (runs API)
        folder = Path(info["path"])
        changelog = folder / "CHANGELOG.md"
        info["changelog"] = (
            changelog.read_text(encoding="utf-8", errors="replace") if changelog.is_file() else ""
        )
        info["cases"] = await run_in_threadpool(_case_names, folder)
        return info

    async def entrypoint(self, name: str) -> dict[str, Any]:
        """The entry point's content (or the external path it runs)."""

        def read() -> dict[str, Any]:
            folder = ops.extension_dir(self.store(), name)
            local = ops.local_entrypoint(folder, name)
            if local is None:
                return {"external": True, "path": query.show(self.store(), name)["entrypoint"]}
            text = local.read_bytes().decode("utf-8", "replace") if local.is_file() else ""
            return {"external": False, "path": local.name, "content": text}

        return await run_in_threadpool(read)

    async def validate(self, name: str) -> query.Report:
        store = self.store()
        folder = await run_in_threadpool(ops.extension_dir, store, name)
        reports = await run_in_threadpool(query.validate, folder, store)
        return reports[0]

    @staticmethod
    def check_content(content: str, filename: str) -> list[str]:
        """What `csext set --content` would refuse in this text (nothing saved)."""
        return content_problems(content.encode(), filename)

    async def history(self, name: str | None, limit: int = 50) -> list[dict[str, Any]]:
        commits = await run_in_threadpool(query.history, self.store(), name, limit)
        return [asdict(c) for c in commits]

    async def diff(
        self, name: str, rev: str | None = None, to: str | None = None
    ) -> dict[str, Any]:
        return await run_in_threadpool(query.diff, self.store(), name, rev, to)

    # --- changing the store (one commit each, then the reload broadcast) -------------------

    async def _change(self, operation: Callable[[], ops.Change]) -> dict[str, Any]:
        change = await run_in_threadpool(operation)
        result = change.to_dict()
        if change.commit is not None:
            warning = await self.notify(change.extension, change.change, change.commit)
            if warning:
                result["warnings"] = [*change.warnings, warning]
        return result

    async def notify(self, name: str, change: str, commit: str | None) -> str | None:
        if commit is None:
            return None
        return await run_in_threadpool(
            notify_best_effort, self.settings.amqp_url, name, change, commit
        )

    async def new(
        self, author: Author, name: str, hook: HookType, lang: scaffold.Language, rt: Runtime
    ) -> dict[str, Any]:
        return await self._change(lambda: scaffold.new(self.store(author), name, hook, lang, rt))

    async def set_content(self, author: Author, name: str, content: str) -> dict[str, Any]:
        """`csext set NAME --content FILE`, the file being the text the user sent."""
        current = await self.entrypoint(name)
        filename = Path(current["path"]).name if not current["external"] else "entrypoint"
        scratch = Path(tempfile.mkdtemp(prefix=f"csext-web-{name}-"))
        try:
            source = scratch / filename
            source.write_bytes(content.encode())
            return await self._change(lambda: ops.set_content(self.store(author), name, source))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def set_path(self, author: Author, name: str, path: str) -> dict[str, Any]:
        return await self._change(lambda: ops.set_path(self.store(author), name, Path(path)))

    async def enable(self, author: Author, name: str) -> dict[str, Any]:
        return await self._change(lambda: ops.enable(self.store(author), name))

    async def disable(self, author: Author, name: str) -> dict[str, Any]:
        return await self._change(lambda: ops.disable(self.store(author), name))

    async def remove(self, author: Author, name: str) -> dict[str, Any]:
        return await self._change(lambda: ops.remove(self.store(author), name))

    async def rollback(self, author: Author, name: str, rev: str) -> dict[str, Any]:
        return await self._change(lambda: ops.rollback(self.store(author), name, rev))

    # --- bundles and Git --------------------------------------------------------------------

    async def export(self, name: str) -> tuple[Path, bundle.ExportResult]:
        """The bundle in a private temporary folder; the caller deletes `path.parent`."""
        ops.check_name(name)
        folder = Path(tempfile.mkdtemp(prefix="csext-web-export-"))
        try:
            result = await run_in_threadpool(
                bundle.export_bundle, self.settings.registry, name, folder
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return result.path, result

    async def import_bundle(
        self, author: Author, file: Path, replace: bool = False
    ) -> dict[str, Any]:
        limits = bundle.BundleLimits(
            max_member_bytes=min(20 * MIB, self.config.max_upload),
            max_total_bytes=self.config.max_upload,
        )
        result = await run_in_threadpool(
            lambda: bundle.import_bundle(
                self.settings.registry, file, replace=replace, limits=limits, author=author
            )
        )
        data = result.as_dict()
        warning = await self.notify(result.name, "import", result.commit)
        data["warnings"] = [warning] if warning else []
        return data

    async def install(
        self,
        author: Author,
        url: str,
        *,
        ref: str | None = None,
        subdir: str | None = None,
        name: str | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        result = await run_in_threadpool(
            lambda: install.install_extension(
                self.settings.registry,
                url,
                ref=ref or None,
                subdir=subdir or None,
                name=name or None,
                replace=replace,
                author=author,
            )
        )
        data = result.as_dict()
        warning = await self.notify(result.name, "install", result.registry_commit)
        data["warnings"] = [warning] if warning else []
        return data

    async def search(self, term: str, hook: str | None = None) -> index.SearchResult:
        return await run_in_threadpool(index.search, self.config.index_home, term, hook or None)

    async def indexes(self) -> list[dict[str, Any]]:
        statuses = await run_in_threadpool(index.list_indexes, self.config.index_home)
        return [s.as_dict() for s in statuses]

    # --- testing ---------------------------------------------------------------------------

    async def test(
        self,
        name: str,
        *,
        case: str | None = None,
        action: str | None = None,
        payload: Any = None,
    ) -> dict[str, Any]:
        """`csext test NAME [--case C | --action A --payload P]` through the worker's executor;
        output is masked with the extension's secrets, as run records are."""
        install_child_watcher()  # as the worker does: the runs' children are awaited here
        store = self.store()
        if action:
            ext, warnings = await run_in_threadpool(testrun.load_for_test, store, name)
            cases = [testrun.adhoc_case(action, None, payload if payload is not None else {})]
        else:
            ext, cases, warnings = await run_in_threadpool(
                testrun.select_cases, store, name, [case] if case else [], None, None
            )
        results = await testrun.run_cases(self.settings, ext, cases)
        values = tuple(ext.secret_values.values())
        out = []
        for result in results:
            item = result.to_dict()
            for key in ("stdout", "stderr", "error"):
                if item[key]:
                    item[key] = mask(item[key], values)
            out.append(item)
        return {
            "extension": name,
            "hook": ext.hook.value,
            "results": out,
            "passed": sum(r.passed for r in results),
            "failed": sum(not r.passed for r in results),
            "warnings": warnings,
        }

    # --- runs, dead letters, workers -------------------------------------------------------

    async def runs(
        self,
        extension: str | None = None,
        *,
        outcome: str | None = None,
        since: str = "24h",
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        window = runlog.parse_duration(since)
        records = await runlog.recent_runs(
            self.settings.amqp_url, extension or None, limit=100_000, since=window, timeout=8
        )
        if outcome:
            records = [r for r in records if r.get("outcome") == outcome]
        return list(reversed(records[-limit:]))  # newest first

    async def run(self, run_id: str, since: str = "7d") -> dict[str, Any] | None:
        records = await runlog.recent_runs(
            self.settings.amqp_url,
            None,
            limit=100_000,
            since=runlog.parse_duration(since),
            timeout=8,
        )
        return next((r for r in reversed(records) if r.get("run_id") == run_id), None)

    async def run_stats(self) -> dict[str, dict[str, Any]] | None:
        """Per extension over the last hour: runs, failures, last outcome; None when the
        broker cannot be asked (the pages say so instead of showing zeros)."""
        now = time.monotonic()
        if self._stats.value is not None and now - self._stats.at < STATS_TTL:
            return dict(self._stats.value)
        try:
            records = await runlog.recent_runs(
                self.settings.amqp_url, None, limit=1_000_000, since=3600, timeout=4
            )
        except BrokerUnavailable:
            return None
        stats: dict[str, dict[str, Any]] = {}
        for record in records:
            if record.get("kind") not in RUN_KINDS:
                continue  # e.g. an operator's dead-letter replay: a record, not a run
            entry = stats.setdefault(
                str(record.get("extension")),
                {"runs": 0, "failures": 0, "last": None, "workers": []},
            )
            entry["runs"] += 1
            entry["failures"] += record.get("outcome") != "success"
            entry["last"] = record.get("outcome")
            if record.get("worker") and record["worker"] not in entry["workers"]:
                entry["workers"].append(record["worker"])
        self._stats = _Cached(now, stats)
        return stats

    def forget_stats(self) -> None:
        self._stats = _Cached()

    async def dead(
        self, extension: str | None = None, reason: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await dlq.list_dead(
            self.settings.amqp_url, dlq.matcher(extension or None, reason or None), limit
        )

    async def replay(
        self, extension: str | None = None, reason: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        report = await dlq.replay_dead(
            self.settings.amqp_url, dlq.matcher(extension or None, reason or None), limit
        )
        return asdict(report)

    async def workers(self) -> workers.WorkerStatus:
        """The broker's consumer counts, plus which workers (host:pid) ran each extension in
        the last hour according to the run log."""
        rows, _ = await self.list_extensions()
        found = await workers.status(self.settings.amqp_url, rows)
        stats = await self.run_stats() if found.broker == "up" else None
        for ext in found.extensions:
            ext.ran_on.extend((stats or {}).get(ext.name, {}).get("workers", []))
        return found


def _case_names(folder: Path) -> list[str]:
    from csext.store.testcases import load_cases

    cases, _ = load_cases(folder)
    return [c.name for c in cases]


def describe_error(exc: CsextError) -> str:
    return str(exc)
