"""Build the web application: the JSON API, the pages, static files, guards, error replies."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from csext.schemas.errors import BrokerUnavailable, CsextError, ExtensionNotFound

from . import api, auth, pages, render
from .deps import ApiError, NotSignedIn, WebState
from .guards import BodyLimit, MaskSecrets, SecurityHeaders
from .service import Operations, WebConfig

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
API_PREFIX = "/api/v1"


def create_app(config: WebConfig) -> FastAPI:
    """The ASGI app for `csext serve` (and for tests, driven by httpx or a browser)."""
    auth.ensure_token(config.token_file)
    tokens = auth.TokenKeeper(config.token_file)
    ops = Operations(config)
    app = FastAPI(
        title="csext Extension Store",
        version="1",
        description="Manage CloudStack extensions: the same operations as the csext CLI.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # FastAPI's Swagger page loads its scripts from a CDN: not offline
        redoc_url=None,
    )
    app.state.web = WebState(config, ops, tokens, auth.Sessions(tokens), _templates())
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _handle_errors(app)
    app.add_middleware(MaskSecrets, values=_secret_values(ops))
    app.add_middleware(BodyLimit, limit=config.max_body, upload_limit=config.max_upload)
    app.add_middleware(SecurityHeaders)
    return app


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(render.FILTERS)
    return env


def _secret_values(ops: Operations) -> Any:
    """Every secret value of the secrets file, re-read when the file changes."""
    cache: dict[str, Any] = {"stamp": None, "values": ()}

    def values() -> tuple[str, ...]:
        try:
            path = ops.store().secrets_path
            info = path.stat()
        except (OSError, CsextError):
            return ()
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != cache["stamp"]:
            try:
                secrets = ops.store().load_secrets()
            except CsextError:
                secrets = {}
            found = {v for per in secrets.values() for v in per.values() if len(v) >= 3}
            cache["values"] = tuple(sorted(found, key=len, reverse=True))
            cache["stamp"] = stamp
        result: tuple[str, ...] = cache["values"]
        return result

    return values


def status_of(exc: CsextError) -> int:
    if isinstance(exc, ExtensionNotFound):
        return 404
    if isinstance(exc, BrokerUnavailable):
        return 503
    text = str(exc)
    if "already exists" in text or "already in the registry" in text:
        return 409  # a name clash: pick another name, or replace
    return 400


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if not _is_api(request) and isinstance(exc, NotSignedIn):
            target = f"/login?next={request.url.path}"
            if request.headers.get("hx-request"):  # a fragment: send the whole page there
                return Response(status_code=204, headers={"HX-Redirect": "/login"})
            return RedirectResponse(target, status_code=303)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(CsextError)
    async def csext_error(request: Request, exc: CsextError) -> Response:
        status = status_of(exc)
        if not _is_api(request) and request.method == "GET":
            return pages.error_page(request, status, str(exc))
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [render.describe_problem(p) for p in exc.errors()]
        field = render.problem_field(exc.errors()[0]) if exc.errors() else None
        return JSONResponse(
            {"error": "; ".join(problems), **({"field": field} if field else {})},
            status_code=400,
        )
