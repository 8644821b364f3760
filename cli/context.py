"""What every `csext` command shares: the common options, one invocation context, errors.

`--registry`, `--amqp-url`, `--json` and `--author` mean the same in every command; a change
to the registry is printed, then broadcast as `registry-changed` on csext.control best-effort
(a broker that is down costs a warning on stderr, never the change: the commit is the truth).
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import orjson
import typer
from pydantic import ValidationError

from csext.schemas.errors import CsextError
from csext.store import ops
from csext.store.git import Author
from csext.worker.control import notify_best_effort
from csext.worker.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")

RegistryOpt = typer.Option(
    None, "--registry", help="Registry folder (default: CSEXT_REGISTRY or ./extensions)."
)
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")
AuthorOpt = typer.Option(
    None,
    "--author",
    envvar="CSEXT_GIT_AUTHOR",
    help="Commit author 'Name <email>' (default: csext <csext@localhost>).",
)
AmqpOpt = typer.Option(
    None, "--amqp-url", help="Broker for the reload broadcast (default: CSEXT_AMQP_URL)."
)


class Ctx:
    """What one command invocation needs: settings, the store, the output mode."""

    def __init__(
        self,
        registry: Path | None,
        json_out: bool,
        author: str | None = None,
        amqp_url: str | None = None,
    ) -> None:
        self.json = json_out
        self.settings: Settings = load_settings(registry=registry, amqp_url=amqp_url)
        who = Author.parse(author) if author else Author()
        self.store = ops.Store(self.settings.registry, self.settings.secrets_file, who)

    def emit(self, data: Any, text: Callable[[], str]) -> None:
        emit(self.json, data, text)

    def changed(self, change: ops.Change) -> None:
        """Print a change, its warnings, and broadcast it when something changed."""
        for warning in change.warnings:
            typer.echo(f"warning: {warning}", err=True)
        if change.commit is not None or change.change == "secret":
            notify(self.settings, change.extension, change.change, change.commit, force=True)
        short = f" ({change.commit[:10]})" if change.commit else ""
        self.emit(change.to_dict(), lambda: f"{change.message}{short}")


def fail_json(message: str, json_out: bool) -> NoReturn:
    if json_out:
        typer.echo(orjson.dumps({"error": message}).decode())
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn csext errors into `error: ...` and exit code 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        json_out = bool(kwargs.get("json_out", False))
        try:
            return func(*args, **kwargs)
        except CsextError as exc:
            fail_json(str(exc), json_out)
        except ValidationError as exc:
            fail_json(f"invalid settings: {exc}", json_out)
        except OSError as exc:  # disk full, read-only registry, permissions: say so plainly
            fail_json(describe_os_error(exc), json_out)
        raise AssertionError("unreachable")

    return wrapper


_OS_HINTS = {
    errno.ENOSPC: "free some space on that file system and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EROFS: "the registry's file system is mounted read-only",
    errno.EACCES: "run csext as the user that owns the registry",
    errno.EPERM: "run csext as the user that owns the registry",
}


def describe_os_error(exc: OSError) -> str:
    """`cannot write <file>: <reason> (<what to do>)`. Store changes are staged and committed
    as one step, so a failure leaves the registry as it was (tests/faults scenario 8)."""
    hint = _OS_HINTS.get(exc.errno or 0)
    reason = exc.strerror or str(exc)
    where = f"cannot write {exc.filename}" if exc.filename else "file system error"
    return f"{where}: {reason}; nothing was changed" + (f" ({hint})" if hint else "")


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Plain aligned columns (the last one is not padded)."""
    if not rows:
        return "(none)"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def emit(json_out: bool, data: Any, text: str | Callable[[], str]) -> None:
    """`data` as indented JSON with --json, else the text (computed only when printed)."""
    if json_out:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        typer.echo(text() if callable(text) else text)


def notify(
    settings: Settings, name: str, change: str, commit: str | None, *, force: bool = False
) -> None:
    """Broadcast `registry-changed` after a commit (best-effort, a warning when it fails)."""
    if commit is None and not force:
        return
    problem = notify_best_effort(settings.amqp_url, name, change, commit)
    if problem:
        typer.echo(problem, err=True)
