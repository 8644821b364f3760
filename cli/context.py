"""What every `csext` command shares: common options, one invocation context, one error style.

Errors. Every command reports a failure the same way, on stderr:

    csext: error: <what is wrong>
      fix: <what to do>                 (when there is one)

and exits with one of the codes below (docs/cli.md lists them). A command gets this by
raising: `fail(message, fix=..., code=...)`, any `CsextError` (its `fix` is printed), a
pydantic `ValidationError` of the settings, an `OSError`. `CsextGroup` (the root app's class)
maps whatever a command raises to that report, so a new command needs nothing more; the
`handled` decorator does the same for a function called outside the app. Anything else is a
bug: reported the same way with exit 70 and a hint to re-run with `--debug` (or
`CSEXT_DEBUG=1`), which prints the traceback. With `--json` the error is also printed on
stdout as `{"error": ..., "fix": ...}`.

Output. Tables and progress use rich on a terminal and plain text when piped; `--json` is
never decorated. rich is imported only when something is drawn (the fast paths import none
of this module).

`--registry`, `--amqp-url`, `--json` and `--author` mean the same in every command; a change
to the registry is printed, then broadcast as `registry-changed` on csext.control best-effort
(a broker that is down costs a warning on stderr, never the change: the commit is the truth).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import orjson
import typer
from pydantic import ValidationError
from typer.core import TyperGroup, TyperOption

from csext.schemas.errors import (
    BrokerUnavailable,
    CallFailed,
    CallTimeout,
    CsextError,
    describe_validation_error,
)
from csext.schemas.manifest import HOOK_NAMES, HookType, parse_hook
from csext.store import ops
from csext.store.git import Author
from csext.worker.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

P = ParamSpec("P")
R = TypeVar("R")

# --- exit codes (docs/cli.md, "Exit codes"; sysexits.h where one fits) ----------------------

EXIT_OK = 0
EXIT_FAILURE = 1
"""The command ran and the answer is no: invalid extension, failed test, refused change."""
EXIT_USAGE = 2
"""Wrong flags or arguments, or settings that cannot work (click's own usage errors too)."""
EXIT_DATAERR = 65
"""EX_DATAERR: input data is malformed (a payload that is not JSON, a bad request)."""
EXIT_NOINPUT = 66
"""EX_NOINPUT: an input file does not exist or cannot be read."""
EXIT_UNAVAILABLE = 69
"""EX_UNAVAILABLE: RabbitMQ cannot be reached, or the extension called cannot run."""
EXIT_SOFTWARE = 70
"""EX_SOFTWARE: a bug in csext (re-run with --debug and report it)."""
EXIT_IOERR = 74
"""EX_IOERR: the registry or a file could not be written (disk full, read-only, permissions)."""
EXIT_TIMEOUT = 124
"""As timeout(1): no reply within the deadline."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT)."""


class CliError(CsextError):
    """A failure a command reports as is: message, optional fix, exit code."""

    def __init__(self, message: str, fix: str | None = None, code: int = EXIT_FAILURE) -> None:
        super().__init__(message, fix=fix)
        self.code = code


def fail(message: str, fix: str | None = None, code: int = EXIT_FAILURE) -> NoReturn:
    """Stop the command: `csext: error: <message>` (+ `fix: <fix>`), exit `code`."""
    raise CliError(message, fix, code)


# --- process-wide output state (set by the root callback and by --json) --------------------


@dataclass
class _State:
    debug: bool = False
    json: bool = False

    def reset(self) -> None:
        """At the start of each invocation (tests run many in one process)."""
        self.json = False
        self.debug = False
        set_debug(os.environ.get("CSEXT_DEBUG", "") not in ("", "0", "false", "no"))


state = _State()


def set_debug(value: bool) -> None:
    """--debug: tracebacks for every error, and the AMQP client libraries' own log lines
    (otherwise silent: a broker that cannot be reached is reported once, as the error)."""
    state.debug = state.debug or value
    level = logging.DEBUG if state.debug else logging.CRITICAL
    for library in ("aiormq", "aio_pika"):
        logging.getLogger(library).setLevel(level)


def _remember_json(value: bool) -> bool:
    state.json = bool(value)
    return value


RegistryOpt = typer.Option(
    None, "--registry", help="Registry folder (default: CSEXT_REGISTRY or ./extensions)."
)
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.", callback=_remember_json)
AuthorOpt = typer.Option(
    None,
    "--author",
    envvar="CSEXT_GIT_AUTHOR",
    help="Commit author 'Name <email>' (default: csext <csext@localhost>).",
)
AmqpOpt = typer.Option(
    None, "--amqp-url", help="RabbitMQ URL (default: CSEXT_AMQP_URL or the config file)."
)


def hook_option(value: str) -> HookType:
    """`--hook` in csext's spelling or CloudStack's (`Orchestrator`), as the manifest takes."""
    try:
        return parse_hook(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


HOOK_HELP = f"Hook type: {HOOK_NAMES} (CloudStack's Orchestrator, NetworkOrchestrator too)."


def command_settings(**overrides: object) -> Settings:
    """Settings from flags over CSEXT_* over the config file (a bad value: exit 2 listing
    every problem, through `explain`)."""
    return load_settings(**overrides)


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
        _remember_json(json_out)
        self.settings: Settings = load_settings(registry=registry, amqp_url=amqp_url)
        who = Author.parse(author) if author else Author()
        self.store = ops.Store(self.settings.registry, self.settings.secrets_file, who)

    def emit(self, data: Any, text: Callable[[], str]) -> None:
        emit(self.json, data, text)

    def changed(self, change: ops.Change) -> None:
        """Print a change, its warnings, and broadcast it when something changed."""
        for warning in change.warnings:
            warn(warning)
        if change.commit is not None or change.change == "secret":
            notify(self.settings, change.extension, change.change, change.commit, force=True)
        short = f" ({change.commit[:10]})" if change.commit else ""
        self.emit(change.to_dict(), lambda: f"{change.message}{short}")


# --- errors -----------------------------------------------------------------------------


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


_BROKER_FIX = "start RabbitMQ, or point --amqp-url (CSEXT_AMQP_URL) at a running one"
_BROKER_RETRY = "check that RabbitMQ is up (rabbitmqctl status), then run the command again"
_AMQP_CLIENTS = ("aiormq", "aio_pika", "pamqp")


def _from_amqp_client(exc: BaseException) -> bool:
    """An error of the AMQP client libraries (checked by module: importing them would slow
    every command down) or a dropped socket."""
    if isinstance(exc, ConnectionError):
        return True
    return any(cls.__module__.split(".")[0] in _AMQP_CLIENTS for cls in type(exc).__mro__)


def explain(exc: BaseException) -> tuple[str, str | None, int]:
    """(message, fix, exit code) for an exception a command let through."""
    if isinstance(exc, CliError):
        return str(exc), exc.fix, exc.code
    if isinstance(exc, BrokerUnavailable):
        return str(exc), exc.fix or _BROKER_FIX, EXIT_UNAVAILABLE
    if isinstance(exc, CallTimeout):
        return str(exc), exc.fix, EXIT_TIMEOUT
    if isinstance(exc, CallFailed):
        return str(exc), exc.fix, EXIT_UNAVAILABLE
    if isinstance(exc, CsextError):
        return str(exc), exc.fix, EXIT_FAILURE
    if _from_amqp_client(exc):  # the connection dropped under a command (broker restart)
        reason = str(exc) or type(exc).__name__
        return f"lost the connection to RabbitMQ: {reason}", _BROKER_RETRY, EXIT_UNAVAILABLE
    if isinstance(exc, ValidationError):
        lines = describe_validation_error(exc)
        message = "invalid settings (flags, CSEXT_* environment or config file):\n  " + (
            "\n  ".join(lines)
        )
        return message, "docs/operations.md lists every setting", EXIT_USAGE
    if isinstance(exc, OSError):
        return describe_os_error(exc), None, EXIT_IOERR
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None, EXIT_INTERRUPTED
    where = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return (
        f"unexpected error (a bug in csext): {where}",
        "re-run with --debug (or CSEXT_DEBUG=1) and report the traceback",
        EXIT_SOFTWARE,
    )


def print_error(message: str, fix: str | None = None, *, json_out: bool | None = None) -> None:
    """The one error format: `csext: error: ...` (+ `  fix: ...`) on stderr; JSON on stdout
    too with --json."""
    if state.json if json_out is None else json_out:
        data = {"error": message, **({"fix": fix} if fix else {})}
        typer.echo(orjson.dumps(data).decode())
    console = stderr_console()
    if console is not None:
        from rich.markup import escape

        console.print(f"[bold red]csext: error:[/] {escape(message)}", highlight=False)
        if fix:
            console.print(f"  [cyan]fix:[/] {escape(fix)}", highlight=False)
        return
    typer.echo(f"csext: error: {message}", err=True)
    if fix:
        typer.echo(f"  fix: {fix}", err=True)


def report(exc: BaseException) -> int:
    """Print `exc` in the error format (its traceback too with --debug); the exit code."""
    message, fix, code = explain(exc)
    if state.debug and not isinstance(exc, CliError):
        traceback.print_exception(exc, file=sys.stderr)
    print_error(message, fix)
    return code


def warn(message: str) -> None:
    """`warning: ...` on stderr (yellow on a terminal)."""
    console = stderr_console()
    if console is not None:
        from rich.markup import escape

        console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)
    else:
        typer.echo(f"warning: {message}", err=True)


def fail_json(message: str, json_out: bool, fix: str | None = None) -> NoReturn:
    """Kept for the commands written before `fail`: the same error, exit 1."""
    _remember_json(json_out)
    fail(message, fix)


_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, typer.TyperException)
"""click's own flow (exit, abort, usage errors): reported by `CsextGroup.main`."""


def handled(func: Callable[P, R]) -> Callable[P, R]:
    """Report what `func` raises in the error format and exit with its code (no traceback).
    The root app (`CsextGroup`) does this for every command; this decorator is for code that
    is called on its own (and harmless twice)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if "json_out" in kwargs:
            _remember_json(bool(kwargs["json_out"]))
        try:
            return func(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(report(exc)) from None

    return wrapper


class CsextGroup(TyperGroup):
    """The root command: every subcommand's failure and click's usage errors in one format."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(report(exc)) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        state.reset()
        try:
            result = super().main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )
        except typer.TyperException as exc:
            result = _usage_error(exc)
        except typer.Abort:
            print_error("aborted", None)
            result = EXIT_FAILURE
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else EXIT_OK)


def _usage_error(exc: Any) -> int:
    """click's `Error: No such option` as `csext: error: ...` with the help command as fix."""
    context = getattr(exc, "ctx", None)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    fix = f"see '{context.command_path} --help'" if context is not None else None
    if "No such option: --debug" in message:
        fix = "--debug goes before the command: csext --debug COMMAND ... (or CSEXT_DEBUG=1)"
    print_error(message, fix)
    return int(getattr(exc, "exit_code", EXIT_USAGE))


# --- output -------------------------------------------------------------------------------


def _hide_flag_placeholders() -> None:
    """typer 0.29's rich help prints a type after every option, `<bool>` for flags too
    (`--json <bool>`), though a flag takes no value. Flags show none, as in click's plain help
    (TyperOption.display_type_rich has no flag case; this adds it)."""
    original = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else original(self, ctx)

    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010


_hide_flag_placeholders()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def stderr_console() -> Console | None:
    """A rich console on stderr when it is a terminal (colour), else None (plain text)."""
    if not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        return None
    from rich.console import Console

    return Console(stderr=True)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Aligned columns: a rich table on a terminal, plain text (last column unpadded) when
    piped, so `csext list | awk` keeps working."""
    if not rows:
        return "(none)"
    if stdout_is_terminal():
        return _rich_table(rows, header)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def _rich_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for name in header:
        grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    console = Console(force_terminal=True)
    with console.capture() as captured:
        console.print(grid)
    return captured.get().rstrip("\n")


def emit(json_out: bool, data: Any, text: str | Callable[[], str]) -> None:
    """`data` as indented JSON with --json, else the text (computed only when printed)."""
    if json_out:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        typer.echo(text() if callable(text) else text)


class Step:
    """A progress display handle: a no-op when stderr is not a terminal."""

    def __init__(self, progress: Progress | None = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    def update(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, amount: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def stop(self) -> None:
        """Take the display off the screen (before a prompt)."""
        if self._progress is not None:
            self._progress.stop()

    def echo(self, text: str) -> None:
        """A line of output, above the progress display when both share the terminal (else
        plainly on stdout, where a pipe or file expects it)."""
        if self._progress is not None and stdout_is_terminal():
            from rich.text import Text

            self._progress.console.print(Text.from_ansi(text))
        else:
            typer.echo(text)


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Step]:
    """A spinner (or a bar when `total` is known) on stderr while long work runs; it vanishes
    when done. Nothing at all when stderr is not a terminal (logs and pipes stay clean)."""
    if not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield Step()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as shown:
        yield Step(shown, shown.add_task(description, total=total))


def notify(
    settings: Settings, name: str, change: str, commit: str | None, *, force: bool = False
) -> None:
    """Broadcast `registry-changed` after a commit (best-effort, a warning when it fails)."""
    if commit is None and not force:
        return
    from csext.worker.control import notify_best_effort  # aio-pika: only when broadcasting

    problem = notify_best_effort(settings.amqp_url, name, change, commit)
    if problem:
        warn(problem.removeprefix("warning: "))
