"""`csext serve`: the HTTP API and web UI (csext.web) on uvicorn.

Bound to 127.0.0.1 by default. The token that guards every change is generated on first start
(a 0600 file), printed once, and replaced with `--rotate-token`.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from csext.cli.context import AmqpOpt, RegistryOpt, handled
from csext.web import auth

MIB = 1024 * 1024


def register(app: typer.Typer) -> None:
    """Add `csext serve` to the main app."""
    app.command("serve")(serve_cmd)


@handled
def serve_cmd(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (loopback only by default)."
    ),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port."),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        envvar="CSEXT_WEB_TOKEN_FILE",
        help=f"Where the token lives (default: {auth.default_token_file()}).",
    ),
    rotate_token: bool = typer.Option(
        False,
        "--rotate-token",
        help="Make a new token (the old one and its sessions stop working), print it, exit.",
    ),
    max_body_mib: float = typer.Option(
        1.0, "--max-body-mib", min=0.001, help="Largest request body (413 above)."
    ),
    max_upload_mib: float = typer.Option(
        50.0, "--max-upload-mib", min=0.001, help="Largest bundle upload."
    ),
    registry: Path | None = RegistryOpt,
    amqp_url: str | None = AmqpOpt,
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
) -> None:
    """Serve the Extension Store's HTTP API (/api/v1) and web UI."""
    from csext.store.index import IndexHome
    from csext.web.app import create_app
    from csext.web.service import WebConfig
    from csext.worker.settings import load_settings

    path = (token_file or auth.default_token_file()).expanduser()
    if rotate_token:
        typer.echo(f"new web token (stored in {path}; signed-in browsers must sign in again):")
        typer.echo(auth.rotate_token(path))
        return
    token, created = auth.ensure_token(path)
    settings = load_settings(registry=registry, amqp_url=amqp_url)
    config = WebConfig(
        settings=settings,
        token_file=path,
        index_home=IndexHome.from_environ(os.environ),
        max_body=int(max_body_mib * MIB),
        max_upload=int(max_upload_mib * MIB),
    )
    application = create_app(config)
    shown = f"[{host}]" if ":" in host else host
    if created:
        typer.echo(f"web token (shown once; stored in {path}, mode 0600): {token}")
    else:
        typer.echo(f"web token: in {path} (csext serve --rotate-token makes a new one)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"warning: listening on {host}: put TLS in front of it (a reverse proxy)", err=True
        )
    typer.echo(f"csext web UI and API on http://{shown}:{port}/  (registry {settings.registry})")
    import uvicorn

    uvicorn.run(application, host=host, port=port, log_level=log_level, proxy_headers=False)
