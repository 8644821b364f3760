"""The JSON API, `/api/v1`: one endpoint per store, run, dead-letter and worker operation.

Each endpoint parses, checks who is calling (deps.reader / deps.writer) and calls one
`Operations` method, which calls the same library function as the CLI command of that name.
OpenAPI: /api/v1/openapi.json (load it into any OpenAPI viewer).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from csext.schemas.manifest import HookType, Runtime
from csext.store.scaffold import Language

from .deps import ApiError, Caller, WebState, author_of, reader, state, writer

router = APIRouter(prefix="/api/v1")
Reader = Annotated[Caller, Depends(reader)]
Writer = Annotated[Caller, Depends(writer)]
Web = Annotated[WebState, Depends(state)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewExtension(_Body):
    name: str = Field(description="lower case letters, digits, - and _ (e.g. my-2fa)")
    hook: HookType
    lang: Language = Language.BASH
    runtime: Runtime = Runtime.EXEC


class Content(_Body):
    content: str = Field(description="the entry point's new text, starting with #!")


class EntryPath(_Body):
    path: str = Field(description="absolute path of an executable, e.g. /usr/local/bin/my-ext")


class Rollback(_Body):
    rev: str = Field(description="a commit of the extension's history")


class TestRequest(_Body):
    case: str | None = Field(None, description="a bundled case (tests/<case>.yaml)")
    action: str | None = Field(None, description="ad-hoc run: the action (argv[1])")
    payload: Any = Field(None, description="ad-hoc run: the JSON payload")


class InstallRequest(_Body):
    url: str = Field(description="Git URL or local path, optionally URL@REF")
    ref: str | None = Field(None, description="tag, branch or commit")
    subdir: str | None = None
    name: str | None = None
    replace: bool = False


class Replay(_Body):
    extension: str | None = None
    reason: str | None = None
    limit: int | None = Field(None, ge=1)


# --- extensions -----------------------------------------------------------------------------


@router.get("/extensions", tags=["extensions"])
async def list_extensions(
    web: Web,
    hook: HookType | None = None,
    status: Annotated[str | None, Query(pattern="^(enabled|disabled|broken)$")] = None,
    q: str = "",
    stats: bool = False,
) -> dict[str, Any]:
    """Every extension (broken ones too); filter by hook, status and a search term. With
    `stats=true` each carries `last_hour` (runs, failures, last outcome) from the run log, or
    null when the broker cannot be asked."""
    rows, warnings = await web.ops.list_extensions(hook.value if hook else None, status, q)
    found = [r.to_dict() for r in rows]
    if stats:
        counts = await web.ops.run_stats()
        for item in found:
            empty = {"runs": 0, "failures": 0, "last": None}
            last = None if counts is None else counts.get(item["name"], empty)
            item["last_hour"] = last and {k: v for k, v in last.items() if k != "workers"}
    return {"extensions": found, "warnings": warnings}


@router.get("/extensions/{name}", tags=["extensions"])
async def show(name: str, web: Web) -> dict[str, Any]:
    """Manifest, README, CHANGELOG, status, problems, secret names (never values), history."""
    info: dict[str, Any] = await web.ops.show(name)
    return info


@router.post("/extensions", status_code=201, tags=["extensions"])
async def create(body: NewExtension, who: Writer, web: Web) -> Any:
    """Scaffold a working extension for a hook type (created disabled)."""
    return await web.ops.new(author_of(who), body.name, body.hook, body.lang, body.runtime)


@router.get("/extensions/{name}/content", tags=["extensions"])
async def content(name: str, web: Web) -> Any:
    """The entry point's text, or the external executable it runs."""
    return await web.ops.entrypoint(name)


@router.put("/extensions/{name}/content", tags=["extensions"])
async def set_content(name: str, body: Content, who: Writer, web: Web) -> Any:
    """Replace the entry point's content; refused (nothing saved) when it would not run."""
    return await web.ops.set_content(author_of(who), name, body.content)


@router.put("/extensions/{name}/path", tags=["extensions"])
async def set_path(name: str, body: EntryPath, who: Writer, web: Web) -> Any:
    """Run an executable elsewhere on disk instead of the folder's entry point."""
    return await web.ops.set_path(author_of(who), name, body.path)


@router.get("/extensions/{name}/validate", tags=["extensions"])
async def validate(name: str, web: Web) -> Any:
    """The same checks as csext validate."""
    report = await web.ops.validate(name)
    return report.to_dict()


@router.post("/extensions/{name}/check", tags=["extensions"])
async def check(name: str, body: Content, _: Writer, web: Web) -> Any:
    """Would this content be accepted as the entry point? (nothing is saved)"""
    current = await web.ops.entrypoint(name)
    problems = web.ops.check_content(body.content, Path(current["path"]).name)
    return {"ok": not problems, "problems": problems}


@router.post("/extensions/{name}/enable", tags=["extensions"])
async def enable(name: str, who: Writer, web: Web) -> Any:
    return await web.ops.enable(author_of(who), name)


@router.post("/extensions/{name}/disable", tags=["extensions"])
async def disable(name: str, who: Writer, web: Web) -> Any:
    return await web.ops.disable(author_of(who), name)


@router.delete("/extensions/{name}", tags=["extensions"])
async def remove(name: str, who: Writer, web: Web) -> Any:
    """Remove (one commit; rollback brings it back)."""
    return await web.ops.remove(author_of(who), name)


@router.post("/extensions/{name}/test", tags=["extensions"])
async def test(name: str, body: TestRequest, _: Writer, web: Web) -> Any:
    """Run bundled cases (all, or `case`) or one ad-hoc `action` + `payload`, as the worker
    would, without the broker: stdout, stderr, exit code, typed result, duration."""
    if body.case and body.action:
        raise ApiError(400, "give either case or action (+ payload), not both", "case")
    if body.payload is not None and not body.action:
        raise ApiError(400, "payload needs an action, e.g. {'action': 'start'}", "action")
    return await web.ops.test(name, case=body.case, action=body.action, payload=body.payload)


@router.get("/extensions/{name}/history", tags=["history"])
async def history(name: str, web: Web, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    return {"commits": await web.ops.history(name, limit)}


@router.get("/history", tags=["history"])
async def registry_history(web: Web, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    return {"commits": await web.ops.history(None, limit)}


@router.get("/extensions/{name}/diff", tags=["history"])
async def diff(name: str, web: Web, rev: str | None = None, to: str | None = None) -> Any:
    """What changed since `rev` (default: what the last change did), up to commit `to`
    (default: the files as they are now): the diff between any two versions."""
    return await web.ops.diff(name, rev, to)


@router.post("/extensions/{name}/rollback", tags=["history"])
async def rollback(name: str, body: Rollback, who: Writer, web: Web) -> Any:
    return await web.ops.rollback(author_of(who), name, body.rev)


# --- sharing --------------------------------------------------------------------------------


@router.get("/extensions/{name}/export", tags=["sharing"], response_class=FileResponse)
async def export(name: str, web: Web) -> FileResponse:
    """Download the extension as a .tar.gz bundle with sha256 checksums."""
    path, _ = await web.ops.export(name)
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=path.name,
        background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True),
    )


@router.post("/import", tags=["sharing"])
async def import_bundle(
    who: Writer,
    file: Annotated[UploadFile, File(description="a bundle made by csext export")],
    web: Web,
    replace: Annotated[bool, Form()] = False,
) -> Any:
    """Verify a bundle and add its extension (one commit); unsafe bundles are refused."""
    scratch = Path(tempfile.mkdtemp(prefix="csext-web-import-"))
    try:
        target = scratch / (Path(file.filename or "bundle.tar.gz").name or "bundle.tar.gz")
        await run_in_threadpool(_save_upload, file, target)
        return await web.ops.import_bundle(author_of(who), target, replace)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _save_upload(upload: UploadFile, target: Path) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out)


@router.post("/install", tags=["sharing"])
async def install(body: InstallRequest, who: Writer, web: Web) -> Any:
    """Install from Git at a ref, pinned to the commit it resolves to."""
    return await web.ops.install(
        author_of(who),
        body.url,
        ref=body.ref,
        subdir=body.subdir,
        name=body.name,
        replace=body.replace,
    )


@router.get("/index/search", tags=["sharing"])
async def search(web: Web, q: str = "", hook: str | None = None) -> Any:
    """Search the followed indexes (csext index add)."""
    result = await web.ops.search(q, hook)
    return result.as_dict()


@router.get("/indexes", tags=["sharing"])
async def indexes(web: Web) -> Any:
    return {"indexes": await web.ops.indexes()}


# --- runs, dead letters, workers ------------------------------------------------------------


@router.get("/runs", tags=["runs"])
async def runs(
    _: Reader,
    web: Web,
    extension: str | None = None,
    outcome: str | None = None,
    since: str = "24h",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> Any:
    """Run records from the csext.runs.log stream, newest first (they carry output tails)."""
    try:
        found = await web.ops.runs(extension, outcome=outcome, since=since, limit=limit)
    except ValueError as exc:
        raise ApiError(400, str(exc).replace("--since", "since"), "since") from None
    return {"runs": found}


@router.get("/runs/{run_id}", tags=["runs"])
async def run(run_id: str, _: Reader, web: Web) -> Any:
    found = await web.ops.run(run_id)
    if found is None:
        raise ApiError(404, f"no run {run_id!r} in the last 7 days of csext.runs.log", "run_id")
    return found


@router.get("/dead", tags=["dead letters"])
async def dead(
    _: Reader,
    web: Web,
    extension: str | None = None,
    reason: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> Any:
    """Dead letters and why they died (nothing is removed)."""
    return {"dead": await web.ops.dead(extension, reason, limit)}


@router.get("/dead/{position}", tags=["dead letters"])
async def dead_one(
    position: int,
    _: Reader,
    web: Web,
    extension: str | None = None,
    reason: str | None = None,
) -> Any:
    """The dead letter at `position` (0 = oldest) of the same filtered list."""
    found = await web.ops.dead(extension, reason, position + 1)
    if position < 0 or len(found) <= position:
        raise ApiError(404, f"no dead letter at position {position} of that list", "position")
    return found[position]


@router.post("/dead/replay", tags=["dead letters"])
async def replay(body: Replay, _: Writer, web: Web) -> Any:
    """Put matching dead letters back into the queue they came from."""
    return await web.ops.replay(body.extension, body.reason, body.limit)


@router.get("/workers", tags=["workers"])
async def workers(web: Web) -> Any:
    """Worker processes attached to the broker and which extensions they consume."""
    found = await web.ops.workers()
    return found.to_dict()
