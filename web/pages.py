"""The web UI: server-rendered pages over the same `Operations` as the API.

Every page needs a browser session (sign in with the token once); every form that changes
something carries the session's CSRF token, and its commit carries the author given at sign-in.
Writes answer with a redirect (post/redirect/get) and a one-time message; the editor and the
test panel answer in place (htmx), so a refused save keeps what was typed.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from csext.schemas.errors import BrokerUnavailable, CsextError
from csext.schemas.manifest import HookType, Runtime
from csext.store.git import Author
from csext.store.scaffold import Language

from . import api, auth
from .deps import ApiError, Caller, NotSignedIn, WebState, author_of, state, writer

router = APIRouter(include_in_schema=False)
Web = Annotated[WebState, Depends(state)]
UiWriter = Annotated[Caller, Depends(writer)]

NAV = [
    ("extensions", "/", "Extensions"),
    ("new", "/new", "New"),
    ("discover", "/discover", "Discover"),
    ("runs", "/runs", "Runs"),
    ("dead", "/dead", "Dead letters"),
]
HOOKS = [h.value for h in HookType]


def session_of(request: Request) -> auth.Session:
    session = state(request).sessions.get(request.cookies.get(auth.SESSION_COOKIE))
    if session is None:
        raise NotSignedIn()
    return session


Session = Annotated[auth.Session, Depends(session_of)]


def page(
    request: Request, template: str, session: auth.Session | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    web = state(request)
    flashes = list(session.flashes) if session else []
    if session:
        session.flashes.clear()
    html = web.templates.get_template(template).render(
        request=request,
        session=session,
        csrf=session.csrf if session else "",
        flashes=flashes,
        nav=NAV,
        hooks=HOOKS,
        active=ctx.pop("active", ""),
        **ctx,
    )
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """A page (not JSON) for an expected failure of a page's GET, e.g. an unknown extension."""
    session = state(request).sessions.get(request.cookies.get(auth.SESSION_COOKIE))
    return page(request, "error.html", session, status, code=status, message=message)


def back(session: auth.Session, url: str, kind: str, message: str) -> RedirectResponse:
    session.flashes.append((kind, message))
    return RedirectResponse(url, status_code=303)


def _change_message(result: dict[str, Any], done: str) -> tuple[str, str]:
    commit = result.get("commit") or result.get("registry_commit")
    text = f"{done} ({commit[:10]})" if commit else str(result.get("message") or done)
    warnings = result.get("warnings") or []
    return ("warn" if warnings else "ok", "; ".join([text, *warnings]))


# --- sign in ---------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return page(request, "login.html", None, next=_safe_next(next), error="")


@router.post("/login")
async def login(
    request: Request,
    web: Web,
    token: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    error = ""
    if not token or not web.tokens.matches(token.strip()):
        error = "That token is not valid. csext serve printed it when it first started."
    elif not name.strip() or "@" not in email:
        error = "Give your name and e-mail: every change is a Git commit with you as its author."
    if error:
        return page(request, "login.html", None, 401, next=_safe_next(next), error=error)
    session = web.sessions.create(Author(name.strip(), email.strip()))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        session.sid,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(auth.SESSION_TTL),
        path="/",
    )
    return response


def _safe_next(target: str) -> str:
    """Only paths on this server (no //host or scheme): no open redirect after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.post("/logout")
async def logout(request: Request, web: Web, _: UiWriter) -> Response:
    web.sessions.drop(request.cookies.get(auth.SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


# --- extensions ------------------------------------------------------------------------------


@router.get("/")
async def extensions(
    request: Request, web: Web, session: Session, hook: str = "", status: str = "", q: str = ""
) -> Response:
    rows, warnings = await web.ops.list_extensions(hook or None, status or None, q)
    stats = await web.ops.run_stats()
    return page(
        request,
        "extensions.html",
        session,
        active="extensions",
        rows=rows,
        warnings=warnings,
        stats=stats,
        filters={"hook": hook, "status": status, "q": q},
    )


@router.get("/x/{name}")
async def extension(
    request: Request, web: Web, session: Session, name: str, rev: str = "", to: str = ""
) -> Response:
    info = await web.ops.show(name)
    history = await web.ops.history(name, 30)
    diff_error = ""
    try:
        diff = await web.ops.diff(name, rev or None, to or None)
    except CsextError as exc:
        diff, diff_error = {"diff": "", "base": rev}, str(exc)
    runs, runs_error = await _runs_or_reason(web, name, 10)
    return page(
        request,
        "extension.html",
        session,
        active="extensions",
        info=info,
        history=history,
        diff=diff,
        diff_error=diff_error,
        rev=rev,
        to=to,
        runs=runs,
        runs_error=runs_error,
    )


async def _runs_or_reason(web: WebState, name: str | None, limit: int) -> tuple[list[Any], str]:
    try:
        return await web.ops.runs(name, since="7d", limit=limit), ""
    except BrokerUnavailable as exc:
        return [], str(exc)


async def _write(session: auth.Session, url: str, done: str, action: Any) -> Response:
    try:
        result = await action
    except (CsextError, ApiError) as exc:
        return back(session, url, "error", str(exc))
    kind, message = _change_message(result, done)
    return back(session, url, kind, message)


@router.post("/x/{name}/enable")
async def enable(web: Web, who: UiWriter, session: Session, name: str) -> Response:
    web.ops.forget_stats()
    return await _write(session, f"/x/{name}", "enabled", web.ops.enable(author_of(who), name))


@router.post("/x/{name}/disable")
async def disable(web: Web, who: UiWriter, session: Session, name: str) -> Response:
    return await _write(session, f"/x/{name}", "disabled", web.ops.disable(author_of(who), name))


@router.post("/x/{name}/remove")
async def remove(web: Web, who: UiWriter, session: Session, name: str) -> Response:
    return await _write(
        session, "/", f"removed {name} (roll back from its history to restore it)",
        web.ops.remove(author_of(who), name),
    )  # fmt: skip


@router.post("/x/{name}/rollback")
async def rollback(
    web: Web, who: UiWriter, session: Session, name: str, rev: Annotated[str, Form()]
) -> Response:
    return await _write(
        session, f"/x/{name}", f"rolled back to {rev[:10]}",
        web.ops.rollback(author_of(who), name, rev),
    )  # fmt: skip


# --- editor ----------------------------------------------------------------------------------


@router.get("/x/{name}/edit")
async def editor(request: Request, web: Web, session: Session, name: str) -> Response:
    entry = await web.ops.entrypoint(name)
    return page(
        request, "editor.html", session, active="extensions", name=name, entry=entry,
        problems=[], content=entry.get("content", ""),
    )  # fmt: skip


@router.post("/x/{name}/edit")
async def save(
    request: Request,
    web: Web,
    who: UiWriter,
    session: Session,
    name: str,
    content: Annotated[str, Form()],
) -> Response:
    entry = await web.ops.entrypoint(name)
    content = content.replace("\r\n", "\n")
    try:
        result = await web.ops.set_content(author_of(who), name, content)
    except CsextError as exc:
        return page(
            request, "editor.html", session, 400, active="extensions", name=name, entry=entry,
            problems=[str(exc)], content=content,
        )  # fmt: skip
    kind, message = _change_message(result, "saved")
    return back(session, f"/x/{name}/edit", kind, message)


@router.post("/x/{name}/check")
async def check(
    request: Request, web: Web, _: UiWriter, name: str, content: Annotated[str, Form()]
) -> Response:
    entry = await web.ops.entrypoint(name)
    problems = web.ops.check_content(content.replace("\r\n", "\n"), entry["path"])
    html = web.templates.get_template("_problems.html").render(problems=problems, checked=True)
    return HTMLResponse(html)


@router.post("/x/{name}/path")
async def set_path(
    web: Web, who: UiWriter, session: Session, name: str, path: Annotated[str, Form()]
) -> Response:
    return await _write(
        session, f"/x/{name}/edit", f"now runs {path}", web.ops.set_path(author_of(who), name, path)
    )


# --- test panel ------------------------------------------------------------------------------


@router.get("/x/{name}/test")
async def test_panel(request: Request, web: Web, session: Session, name: str) -> Response:
    info = await web.ops.show(name)
    return page(request, "test.html", session, active="extensions", info=info)


@router.post("/x/{name}/test")
async def run_test(
    request: Request,
    web: Web,
    _: UiWriter,
    name: str,
    mode: Annotated[str, Form()] = "case",
    case: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "",
    payload: Annotated[str, Form()] = "",
) -> Response:
    template = web.templates.get_template("_test_result.html")
    try:
        if mode == "adhoc":
            body = api.TestRequest(action=action or None, payload=_json(payload))
            if not body.action:
                raise ApiError(400, "action: choose the action to run", "action")
            result = await web.ops.test(name, action=body.action, payload=body.payload)
        else:
            result = await web.ops.test(name, case=case or None)
    except (CsextError, ApiError) as exc:
        return HTMLResponse(template.render(error=str(exc), result=None))
    return HTMLResponse(template.render(error="", result=result))


def _json(text: str) -> Any:
    import orjson

    if not text.strip():
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"payload: not valid JSON ({exc})", "payload") from None


# --- new -------------------------------------------------------------------------------------


@router.get("/new")
async def new_form(request: Request, session: Session) -> Response:
    return page(
        request, "new.html", session, active="new", error="", form={},
        languages=[lang.value for lang in Language], runtimes=[r.value for r in Runtime],
    )  # fmt: skip


@router.post("/new")
async def create(
    request: Request,
    web: Web,
    who: UiWriter,
    session: Session,
    name: Annotated[str, Form()] = "",
    hook: Annotated[str, Form()] = "",
    lang: Annotated[str, Form()] = "bash",
    runtime: Annotated[str, Form()] = "exec",
) -> Response:
    form = {"name": name, "hook": hook, "lang": lang, "runtime": runtime}
    try:
        body = api.NewExtension.model_validate(form)
        result = await web.ops.new(author_of(who), body.name, body.hook, body.lang, body.runtime)
    except (CsextError, ValueError) as exc:
        return page(
            request, "new.html", session, 400, active="new", error=_short_error(exc), form=form,
            languages=[lang.value for lang in Language], runtimes=[r.value for r in Runtime],
        )  # fmt: skip
    kind, message = _change_message(result, f"created {name}, disabled: edit it, test it")
    return back(session, f"/x/{name}/edit?new=1", kind, message)


def _short_error(exc: Exception) -> str:
    from pydantic import ValidationError

    from .render import describe_problem

    if isinstance(exc, ValidationError):
        return "; ".join(describe_problem(p) for p in exc.errors())
    return str(exc)


# --- sharing ---------------------------------------------------------------------------------


@router.get("/discover")
async def discover(
    request: Request, web: Web, session: Session, q: str = "", hook: str = ""
) -> Response:
    hits: list[dict[str, Any]] = []
    problems: list[str] = []
    error = ""
    try:
        result = await web.ops.search(q, hook or None)
        hits, problems = [h.as_dict() for h in result.hits], result.problems
    except CsextError as exc:
        error = str(exc)
    indexes = await web.ops.indexes()
    return page(
        request, "discover.html", session, active="discover", hits=hits, problems=problems,
        error=error, indexes=indexes, q=q, hook=hook,
    )  # fmt: skip


@router.post("/discover/install")
async def install(
    web: Web,
    who: UiWriter,
    session: Session,
    url: Annotated[str, Form()],
    ref: Annotated[str, Form()] = "",
    subdir: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    try:
        result = await web.ops.install(
            author_of(who), url, ref=ref or None, subdir=subdir or None, name=name or None
        )
    except CsextError as exc:
        return back(session, "/discover", "error", str(exc))
    kind, message = _change_message(result, f"installed {result['name']} {result['version']}")
    return back(session, f"/x/{result['name']}", kind, message)


@router.post("/import")
async def import_bundle(
    web: Web,
    who: UiWriter,
    session: Session,
    file: Annotated[UploadFile, File()],
    replace: Annotated[bool, Form()] = False,
) -> Response:
    try:
        result = await api.import_bundle(who, file, web, replace)
    except CsextError as exc:
        return back(session, "/", "error", str(exc))
    kind, message = _change_message(result, f"imported {result['name']} {result['version']}")
    return back(session, f"/x/{result['name']}", kind, message)


# --- runs and dead letters -------------------------------------------------------------------


@router.get("/runs")
async def runs(
    request: Request,
    web: Web,
    session: Session,
    extension: str = "",
    outcome: str = "",
    since: str = "24h",
) -> Response:
    found: list[Any] = []
    error = ""
    try:
        found = await web.ops.runs(extension or None, outcome=outcome or None, since=since)
    except (BrokerUnavailable, ValueError) as exc:
        error = str(exc).replace("--since", "since")
    return page(
        request, "runs.html", session, active="runs", runs=found, error=error,
        filters={"extension": extension, "outcome": outcome, "since": since},
    )  # fmt: skip


@router.get("/runs/{run_id}")
async def run(request: Request, web: Web, session: Session, run_id: str) -> Response:
    found = await web.ops.run(run_id)
    return page(request, "run.html", session, 200 if found else 404, active="runs", run=found,
                run_id=run_id)  # fmt: skip


@router.get("/dead")
async def dead(
    request: Request, web: Web, session: Session, extension: str = "", reason: str = ""
) -> Response:
    found: list[Any] = []
    error = ""
    try:
        found = await web.ops.dead(extension or None, reason or None, 200)
    except BrokerUnavailable as exc:
        error = str(exc)
    return page(
        request, "dead.html", session, active="dead", dead=found, error=error,
        filters={"extension": extension, "reason": reason},
    )  # fmt: skip


@router.post("/dead/replay")
async def replay(
    web: Web,
    _: UiWriter,
    session: Session,
    extension: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    url = "/dead?" + urlencode({"extension": extension, "reason": reason})
    try:
        report = await web.ops.replay(extension or None, reason or None)
    except CsextError as exc:
        return back(session, url, "error", str(exc))
    skipped = f", {report['skipped']} skipped ({report['reasons']})" if report["skipped"] else ""
    web.ops.forget_stats()
    return back(session, url, "ok", f"replayed {report['replayed']} dead letters{skipped}")


# --- fragments -------------------------------------------------------------------------------


@router.get("/ui/worker")
async def worker_pill(request: Request, web: Web, _: Session) -> Response:
    status = await web.ops.workers()
    html = web.templates.get_template("_worker.html").render(status=status)
    return HTMLResponse(html)
