"""The `csext` command line: a thin layer that parses, builds settings and calls the library.

Errors, exit codes and output styles are shared by every command through cli/context.py (the
root app's class, `CsextGroup`, reports whatever a command raises): see docs/cli.md.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from csext.cli import bundles as cli_bundles
from csext.cli import dead as cli_dead
from csext.cli import fleet as cli_fleet
from csext.cli import hooks as cli_hooks
from csext.cli import serve as cli_serve
from csext.cli import shim as cli_forward
from csext.cli import store as cli_store
from csext.cli import top as cli_top
from csext.cli.context import (
    EXIT_DATAERR,
    EXIT_NOINPUT,
    EXIT_USAGE,
    AmqpOpt,
    CsextGroup,
    JsonOpt,
    command_settings,
    emit,
    fail,
    progress,
    set_debug,
    table,
)
from csext.worker.logs import configure_logging

app = typer.Typer(
    name="csext",
    help="Extend Apache CloudStack with small programs in any language.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=CsextGroup,
    context_settings={"help_option_names": ["--help", "-h"]},
)


def _print_version(value: bool) -> None:
    if value:
        from csext.store.compat import csext_version

        typer.echo(f"csext {csext_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks, for bug reports (also CSEXT_DEBUG=1)."
    ),
) -> None:
    """Extend Apache CloudStack with small programs in any language."""
    set_debug(debug)


def read_input(source: str) -> bytes:
    """Bytes from a file path, or stdin for `-`."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        fail(
            f"cannot read {source}: {exc.strerror}",
            "give a readable file, or - to read standard input",
            EXIT_NOINPUT,
        )


def read_json(source: str, what: str) -> Any:
    """JSON from a file or stdin; not JSON: exit 65 saying where it broke."""
    data = read_input(source)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        shown = "standard input" if source == "-" else source
        fail(
            f"{what} from {shown} is not JSON: {exc}",
            "check the file with `python3 -m json.tool FILE`",
            EXIT_DATAERR,
        )


@app.command()
def worker(
    registry: Path | None = typer.Option(None, help="Extensions directory [env CSEXT_REGISTRY]"),
    registry_remote: str | None = typer.Option(
        None, help="Follow this Git registry: URL or URL@BRANCH (env CSEXT_REGISTRY_REMOTE)"
    ),
    amqp_url: str | None = typer.Option(None, help="RabbitMQ URL [env CSEXT_AMQP_URL]"),
    concurrency: int | None = typer.Option(None, help="Runs at once per process"),
    processes: int | None = typer.Option(None, help="Worker processes under one supervisor"),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING, ERROR"),
) -> None:
    """Consume CloudStack events and RPC calls and run the registry's extensions."""
    settings = command_settings(
        registry=registry,
        registry_remote=registry_remote,
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
    asyncio.run(Worker(settings).run())


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

    settings = command_settings(amqp_url=amqp_url)
    body = read_json(payload, "the payload") if payload else {}
    code = asyncio.run(run_call(settings, name, action, body, timeout, json_output))
    raise typer.Exit(code)


@app.command("emit")
def emit_cmd(
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

    settings = command_settings(amqp_url=amqp_url)
    data = read_input(body)
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
    typer.echo(key)


@app.command()
def runs(
    name: str | None = typer.Argument(None, help="Extension name (all extensions if omitted)"),
    limit: int = typer.Option(20, help="Most recent records to show"),
    since: str = typer.Option("24h", help="How far back to look: 90s, 15m, 24h, 7d"),
    json_output: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Recent runs from the csext.runs.log stream (every worker's run records)."""
    from csext.worker.amqp.runlog import format_runs, parse_duration, recent_runs

    settings = command_settings(amqp_url=amqp_url)
    try:
        window = parse_duration(since)
    except ValueError as exc:
        fail(str(exc), "e.g. --since 90s, 15m, 24h or 7d", EXIT_USAGE)
    with progress("reading the run records (csext.runs.log)"):
        records = asyncio.run(recent_runs(settings.amqp_url, name, limit=limit, since=window))
    emit(json_output, records, lambda: runs_table(records) if records else format_runs([]))


def runs_table(records: list[dict[str, Any]]) -> str:
    """The run records as a table (rich on a terminal), oldest first."""
    from datetime import UTC, datetime

    rows = [
        [
            datetime.fromtimestamp(r.get("finished_at", 0), tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
            str(r.get("extension", "")),
            str(r.get("action", "")),
            str(r.get("outcome", "")),
            "-" if r.get("exit_code") is None else str(r["exit_code"]),
            str(r.get("duration_ms", 0)),
            str(r.get("run_id", "")),
        ]
        for r in records
    ]
    return table(rows, ["FINISHED", "EXTENSION", "ACTION", "OUTCOME", "EXIT", "MS", "RUN"])


for _module in (cli_store, cli_bundles, cli_hooks, cli_forward, cli_serve, cli_dead, cli_top):
    _module.register(app)
cli_fleet.register(app)
