"""The `csext` command line: a thin layer that parses, builds settings and calls the library."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import typer

from csext.cli import bundles as cli_bundles
from csext.cli import hooks as cli_hooks
from csext.cli import serve as cli_serve
from csext.cli import shim as cli_forward
from csext.cli import store as cli_store
from csext.schemas.errors import CsextError
from csext.worker.logs import configure_logging
from csext.worker.settings import Settings, load_settings

app = typer.Typer(
    name="csext",
    help="Extend Apache CloudStack with small programs in any language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_UNAVAILABLE = 69
"""sysexits EX_UNAVAILABLE: broker unreachable."""


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"csext: {message}", err=True)
    return typer.Exit(code)


def read_input(source: str) -> bytes:
    """Bytes from a file path, or stdin for `-`."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}", 2) from None


@app.command()
def worker(
    registry: Path | None = typer.Option(None, help="Extensions directory [env CSEXT_REGISTRY]"),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
    concurrency: int | None = typer.Option(None, help="Runs at once per process"),
    processes: int | None = typer.Option(None, help="Worker processes under one supervisor"),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING, ERROR"),
) -> None:
    """Consume CloudStack events and RPC calls and run the registry's extensions."""
    settings = _settings(
        registry=registry,
        amqp_url=amqp_url,
        concurrency=concurrency,
        processes=processes,
        log_level=log_level,
    )
    configure_logging(settings.log_level, settings.log_json)
    if settings.processes > 1:
        from csext.worker.supervisor import supervise

        raise typer.Exit(supervise(settings))
    from csext.worker.app import Worker
    from csext.worker.supervisor import die_with_parent

    die_with_parent()
    try:
        asyncio.run(Worker(settings).run())
    except CsextError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None


@app.command()
def call(
    name: str = typer.Argument(..., help="Extension name"),
    action: str = typer.Argument(..., help="Action passed to the extension as argv[1]"),
    payload: str | None = typer.Option(None, help="JSON payload file, or - for stdin"),
    timeout: float = typer.Option(30.0, help="Seconds to wait for the reply"),
    json_output: bool = typer.Option(False, "--json", help="Print the whole reply as JSON"),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
) -> None:
    """Call an extension through the worker pool, like CloudStack would."""
    from csext.cli.call import run_call

    settings = _settings(amqp_url=amqp_url)
    body = orjson.loads(read_input(payload)) if payload else {}
    code = asyncio.run(run_call(settings, name, action, body, timeout, json_output))
    raise typer.Exit(code)


@app.command()
def emit(
    category: str = typer.Option(
        ..., help="ActionEvent, AlertEvent, UsageEvent, ResourceStateEvent, AsyncJobEvent"
    ),
    type_: str = typer.Option(
        ..., "--type", help="Event type, e.g. VM.START or OperationSucceeded"
    ),
    resource_type: str | None = typer.Option(None, help="e.g. VirtualMachine"),
    uuid: str | None = typer.Option(None, help="Resource UUID"),
    body: str = typer.Option(..., help="JSON body file, or - for stdin"),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
) -> None:
    """Publish an event exactly as CloudStack's RabbitMQ event bus does."""
    from csext.worker.amqp.emit import emit_event

    settings = _settings(amqp_url=amqp_url)
    data = read_input(body)
    try:
        key = asyncio.run(
            emit_event(
                settings.amqp_url,
                settings.cloudstack_exchange,
                category=category,
                event_type=type_,
                resource_type=resource_type,
                resource_uuid=uuid,
                body=data,
            )
        )
    except CsextError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    typer.echo(key)


@app.command()
def runs(
    name: str | None = typer.Argument(None, help="Extension name (all extensions if omitted)"),
    limit: int = typer.Option(20, help="Most recent records to show"),
    since: str = typer.Option("24h", help="How far back to look: 90s, 15m, 24h, 7d"),
    json_output: bool = typer.Option(False, "--json", help="Print the records as JSON"),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
) -> None:
    """Recent runs from the csext.runs.log stream (every worker's run records)."""
    from csext.worker.amqp.runlog import format_runs, parse_duration, recent_runs

    settings = _settings(amqp_url=amqp_url)
    try:
        window = parse_duration(since)
        records = asyncio.run(recent_runs(settings.amqp_url, name, limit=limit, since=window))
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    except CsextError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    if json_output:
        typer.echo(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(format_runs(records))


dead_app = typer.Typer(help="Dead letters in csext.dead: list them, replay them.")
app.add_typer(dead_app, name="dead")


@dead_app.command("list")
def dead_list(
    extension: str | None = typer.Option(None, help="Only this extension's dead letters"),
    reason: str | None = typer.Option(None, help="Only this reason, e.g. retries-exhausted"),
    limit: int = typer.Option(50, help="At most this many"),
    json_output: bool = typer.Option(False, "--json", help="Print them as JSON"),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
) -> None:
    """List dead letters and why they died (nothing is removed)."""
    from csext.worker.amqp.dlq import format_dead, list_dead, matcher

    settings = _settings(amqp_url=amqp_url)
    try:
        found = asyncio.run(list_dead(settings.amqp_url, matcher(extension, reason), limit))
    except CsextError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    if json_output:
        typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(format_dead(found))


@dead_app.command("replay")
def dead_replay(
    extension: str | None = typer.Option(None, help="Only this extension's dead letters"),
    reason: str | None = typer.Option(None, help="Only this reason"),
    limit: int | None = typer.Option(None, help="At most this many"),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation"),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
) -> None:
    """Put dead letters back into the queue they came from, to be run again."""
    from dataclasses import asdict

    from csext.worker.amqp.dlq import matcher, replay_dead

    if not yes and not (sys.stdin.isatty() and typer.confirm("Replay the matching dead letters?")):
        raise fail("nothing replayed: confirm, or pass --yes", 1)
    settings = _settings(amqp_url=amqp_url)
    try:
        report = asyncio.run(replay_dead(settings.amqp_url, matcher(extension, reason), limit))
    except CsextError as exc:
        raise fail(str(exc), EXIT_UNAVAILABLE) from None
    typer.echo(orjson.dumps(asdict(report)).decode())


def _settings(**overrides: object) -> Settings:
    from pydantic import ValidationError

    from csext.schemas.errors import describe_validation_error

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        lines = describe_validation_error(exc)
        raise fail(
            "invalid settings (flags, CSEXT_* environment or config file):\n  "
            + "\n  ".join(lines),
            2,
        ) from None


for _module in (cli_store, cli_bundles, cli_hooks, cli_forward, cli_serve):
    _module.register(app)
