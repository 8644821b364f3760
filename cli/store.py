"""CLI commands of the extension store: a thin layer over csext.store (registered by cli.py).

Every command builds Settings, calls one store function, and prints a table (or `--json`).
Changes are committed by the store; afterwards the CLI broadcasts `registry-changed` on
csext.control, best-effort: a broker that is down costs a warning on stderr, not the change.
Errors are reported by cli/context.py (`csext: error: ...`, exit codes in docs/cli.md).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from csext.cli import assist as cli_assist
from csext.cli.context import (
    HOOK_HELP,
    AmqpOpt,
    AuthorOpt,
    Ctx,
    JsonOpt,
    RegistryOpt,
    fail_json,
    handled,
    hook_option,
    progress,
    stdout_is_terminal,
    table,
    warn,
)
from csext.schemas.errors import CsextError
from csext.schemas.manifest import HookType, Runtime
from csext.store import ops, query, scaffold


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main `csext` app."""
    commands: list[Callable[..., None]] = [
        list_cmd,
        show_cmd,
        validate_cmd,
        new_cmd,
        edit_cmd,
        set_cmd,
        enable_cmd,
        disable_cmd,
        remove_cmd,
        history_cmd,
        diff_cmd,
        rollback_cmd,
    ]
    for command in commands:
        app.command(command.__name__.removesuffix("_cmd"))(command)
    app.command("test")(test_cmd)
    secret_app = typer.Typer(help="Secret values of extensions (never printed).")
    secret_app.command("set")(secret_set_cmd)
    secret_app.command("unset")(secret_unset_cmd)
    secret_app.command("list")(secret_list_cmd)
    app.add_typer(secret_app, name="secret")


# --- reading -----------------------------------------------------------------------------


@handled
def list_cmd(
    hook: HookType | None = typer.Option(
        None, "--hook", parser=hook_option, metavar="HOOK", help=f"Only this hook. {HOOK_HELP}"
    ),
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", help="Only these."),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List the extensions in the registry."""
    ctx = Ctx(registry, json_out)
    rows, warnings = query.list_extensions(ctx.store, hook.value if hook else None, enabled)
    for warning in warnings:
        warn(warning)
    cells = [[r.name, r.status, r.hook, r.version, r.runtime, r.description] for r in rows]
    header = ["NAME", "STATUS", "HOOK", "VERSION", "RUNTIME", "DESCRIPTION"]
    ctx.emit([r.to_dict() for r in rows], lambda: table(cells, header))


@handled
def show_cmd(
    name: str,
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Show one extension: manifest, README, status, problems, history, last runs."""
    ctx = Ctx(registry, json_out, amqp_url=amqp_url)
    info = query.show(ctx.store, name)
    runs = _last_runs(ctx.settings.amqp_url, name)
    info["last_runs"] = runs[-5:] if isinstance(runs, list) else runs
    info["circuit_breaker"] = _breaker_state(info["manifest"], runs)
    ctx.emit(info, lambda: _show_text(info))


def _last_runs(amqp_url: str, name: str) -> list[dict[str, Any]] | str:
    """The extension's last runs from the csext.runs.log stream; a reason when unknown."""
    import asyncio

    from csext.worker.amqp.runlog import recent_runs

    try:
        return asyncio.run(recent_runs(amqp_url, name, limit=50, since=7 * 86400, timeout=5))
    except CsextError as exc:
        return f"unknown ({exc})"


def _breaker_state(manifest: dict[str, Any], runs: list[dict[str, Any]] | str) -> str | None:
    """None without `spec.circuitBreaker`; else `closed`, or where it is open (from the run
    records: each worker process keeps its own breaker, worker/breaker.py)."""
    from csext.worker.breaker import breaker_report

    spec = manifest.get("spec")
    if not isinstance(spec, dict) or spec.get("circuitBreaker") in (None, False):
        return None
    if isinstance(runs, str):
        return runs
    return "; ".join(breaker_report(runs)) or "closed"


def _runs_text(runs: list[dict[str, Any]] | str) -> str:
    from csext.worker.amqp.runlog import format_runs

    return f"  {runs}" if isinstance(runs, str) else format_runs(runs)


def _show_text(info: dict[str, Any]) -> str:
    import yaml

    secrets = info["secrets"]
    lines = [
        f"{info['name']}  ({info['status']})  {info['path']}",
        *[f"  problem: {p}" for p in info["problems"]],
        f"entrypoint: {info['entrypoint']}",
        f"secrets: declared {', '.join(secrets['declared']) or '-'}; "
        f"set {', '.join(secrets['set']) or '-'}",
        *([f"circuit breaker: {info['circuit_breaker']}"] if info.get("circuit_breaker") else []),
        "last runs:",
        _runs_text(info["last_runs"]),
        "",
        "--- extension.yaml",
        yaml.safe_dump(info["manifest"], sort_keys=False).rstrip(),
        "",
        "--- history",
        *[f"{c['sha'][:10]}  {c['date']}  {c['author']}  {c['subject']}" for c in info["history"]],
    ]
    if info["readme"]:
        lines += ["", "--- README.md", info["readme"].rstrip()]
    return "\n".join(lines)


@handled
def validate_cmd(
    path: Path | None = typer.Argument(None, help="Extension folder or registry."),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Check one extension folder or the whole registry; exit 1 on any error."""
    ctx = Ctx(registry, json_out)
    reports = query.validate(path or ctx.store.root, ctx.store)
    ctx.emit([r.to_dict() for r in reports], lambda: _validate_text(reports))
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


def _validate_text(reports: list[query.Report]) -> str:
    lines = []
    for report in reports:
        lines.append(f"{'ok' if report.ok else 'FAIL':4}  {report.name}")
        lines += [f"      error: {e}" for e in report.errors]
        lines += [f"      warning: {w}" for w in report.warnings]
    bad = sum(not r.ok for r in reports)
    lines.append(f"{len(reports)} checked, {bad} with errors")
    return "\n".join(lines)


@handled
def history_cmd(
    name: str | None = typer.Argument(None, help="Extension (default: the whole registry)."),
    limit: int = typer.Option(50, "--limit", min=1),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Commits that changed one extension (or the registry), newest first."""
    ctx = Ctx(registry, json_out)
    commits = query.history(ctx.store, name, limit)
    cells = [[c.short, c.date, f"{c.author} <{c.email}>", c.subject] for c in commits]
    ctx.emit(
        [
            {
                "sha": c.sha,
                "author": c.author,
                "email": c.email,
                "date": c.date,
                "subject": c.subject,
            }
            for c in commits
        ],
        lambda: table(cells, ["COMMIT", "DATE", "AUTHOR", "SUBJECT"]),
    )


@handled
def diff_cmd(
    name: str,
    rev: str | None = typer.Argument(
        None, help="Compare with this commit (default: the last change)."
    ),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show what changed in an extension since REV (default: its last change)."""
    ctx = Ctx(registry, json_out)
    result = query.diff(ctx.store, name, rev)
    ctx.emit(result, lambda: result["diff"].rstrip() or "(no differences)")


# --- changing ----------------------------------------------------------------------------


@handled
def new_cmd(
    name: str,
    hook: HookType = typer.Option(
        ..., "--hook", parser=hook_option, metavar="HOOK", help=HOOK_HELP
    ),
    lang: scaffold.Language = typer.Option(scaffold.Language.BASH, "--lang"),
    runtime: Runtime = typer.Option(Runtime.EXEC, "--runtime"),
    describe: str | None = cli_assist.DescribeOpt,
    rounds: int = cli_assist.RoundsOpt,
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Scaffold a working extension for a hook type (entry point, manifest, README, tests)."""
    ctx = Ctx(registry, json_out, author, amqp_url)
    if describe is not None:  # drafted by a model, saved only if it passes: cli/assist.py
        cli_assist.new_described(ctx, name, hook, lang, runtime, describe, rounds)
        return
    ctx.changed(scaffold.new(ctx.store, name, hook, lang, runtime))


@handled
def edit_cmd(
    name: str,
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Open the entry point in $EDITOR; commit on save if it is valid."""
    ctx = Ctx(registry, json_out, author, amqp_url)
    ctx.changed(ops.edit(ctx.store, name, run_editor))


def run_editor(path: Path) -> None:
    """$VISUAL or $EDITOR (may carry arguments, e.g. 'code -w'), else vi; no shell."""
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    argv = [*shlex.split(command), str(path)]
    try:
        done = subprocess.run(argv, check=False)
    except OSError as exc:
        raise ops.StoreError(f"cannot start the editor {argv[0]!r}: {exc.strerror}") from exc
    if done.returncode != 0:
        raise ops.EditRejected(
            f"the editor exited with {done.returncode}; not saved (your copy: {path})", path
        )


@handled
def set_cmd(
    name: str,
    content: Path | None = typer.Option(None, "--content", help="New entry point content."),
    path: Path | None = typer.Option(None, "--path", help="Run this executable instead."),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Replace the entry point's content (--content FILE) or point at an executable (--path)."""
    if (content is None) == (path is None):
        fail_json("give exactly one of --content FILE or --path /abs/executable", json_out)
    ctx = Ctx(registry, json_out, author, amqp_url)
    if content is not None:
        ctx.changed(ops.set_content(ctx.store, name, content))
    else:
        assert path is not None
        ctx.changed(ops.set_path(ctx.store, name, path))


def _simple(operation: Callable[[ops.Store, str], ops.Change], doc: str) -> Callable[..., None]:
    @handled
    def command(
        name: str,
        registry: Path | None = RegistryOpt,
        json_out: bool = JsonOpt,
        author: str | None = AuthorOpt,
        amqp_url: str | None = AmqpOpt,
    ) -> None:
        ctx = Ctx(registry, json_out, author, amqp_url)
        ctx.changed(operation(ctx.store, name))

    command.__doc__ = doc
    return command


enable_cmd = _simple(ops.enable, "Enable an extension (checked: valid, compatible, secrets set).")
enable_cmd.__name__ = "enable_cmd"
disable_cmd = _simple(ops.disable, "Disable an extension (workers stop taking new work for it).")
disable_cmd.__name__ = "disable_cmd"


@handled
def remove_cmd(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Remove an extension (one commit; csext rollback brings it back)."""
    ctx = Ctx(registry, json_out, author, amqp_url)
    ops.extension_dir(ctx.store, name)
    if not yes and not _confirm(f"Remove extension {name} from {ctx.store.root}?"):
        fail_json(
            f"not removed: confirm with 'y', or pass --yes (csext remove {name} --yes)", json_out
        )
    ctx.changed(ops.remove(ctx.store, name))


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return typer.confirm(question, default=False)


@handled
def rollback_cmd(
    name: str,
    rev: str = typer.Argument(..., help="Commit to restore the extension to (csext history)."),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    author: str | None = AuthorOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Restore an extension as it was at REV, as a new commit."""
    ctx = Ctx(registry, json_out, author, amqp_url)
    ctx.changed(ops.rollback(ctx.store, name, rev))


# --- secrets -----------------------------------------------------------------------------


@handled
def secret_set_cmd(
    name: str,
    key: str,
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Set secret KEY of extension NAME; the value is read from stdin or a hidden prompt."""
    ctx = Ctx(registry, json_out, None, amqp_url)
    ops.extension_dir(ctx.store, name)
    if sys.stdin.isatty():
        value = typer.prompt(f"Value of {key} for {name}", hide_input=True)
    else:
        value = sys.stdin.read().removesuffix("\n")
    ctx.changed(ops.set_secret(ctx.store, name, key, value))


@handled
def secret_unset_cmd(
    name: str,
    key: str,
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Forget secret KEY of extension NAME."""
    ctx = Ctx(registry, json_out, None, amqp_url)
    ctx.changed(ops.unset_secret(ctx.store, name, key))


@handled
def secret_list_cmd(
    name: str, registry: Path | None = RegistryOpt, json_out: bool = JsonOpt
) -> None:
    """Secret names of an extension: declared in the manifest and set in the file (no values)."""
    ctx = Ctx(registry, json_out)
    status = query.show(ctx.store, name)["secrets"]
    if status["error"]:
        raise ops.StoreError(status["error"])
    names = sorted({*status["declared"], *status["set"]})
    cells = [
        [n, "yes" if n in status["declared"] else "no", "yes" if n in status["set"] else "NO"]
        for n in names
    ]
    ctx.emit(status, lambda: table(cells, ["NAME", "DECLARED", "SET"]))


# --- test --------------------------------------------------------------------------------


@handled
def test_cmd(
    name: str,
    case: list[str] = typer.Option([], "--case", help="Run only this case (repeatable)."),
    action: str | None = typer.Option(None, "--action", help="Ad-hoc run: the action."),
    payload: Path | None = typer.Option(None, "--payload", help="Ad-hoc run: JSON payload file."),
    registry: Path | None = RegistryOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run the extension's test cases (or one ad-hoc payload) as the worker would; no broker."""
    from csext.worker import testrun as extension_test

    ctx = Ctx(registry, json_out)
    ext, cases, warnings = extension_test.select_cases(ctx.store, name, case, action, payload)
    for warning in warnings:
        warn(warning)
    with progress(f"testing {name}", total=len(cases)) as step:

        def show(result: extension_test.CaseResult) -> None:
            step.advance()
            if not json_out:  # each case as it finishes; the counts come last
                step.echo(_coloured(extension_test.render_case(result)))

        results = extension_test.run_cases_sync(ctx.settings, ext, cases, show)
    ctx.emit([r.to_dict() for r in results], lambda: extension_test.summary(results))
    if not results or any(not r.passed for r in results):
        raise typer.Exit(1)


def _coloured(block: str) -> str:
    """PASS in green, FAIL in red on a terminal."""
    if not stdout_is_terminal() or os.environ.get("NO_COLOR"):
        return block
    verdict, rest = block[:4], block[4:]
    return typer.style(verdict, fg="green" if verdict == "PASS" else "red", bold=True) + rest
