"""`csext new NAME --hook H --lang L --describe "..." [--rounds N]`: a model drafts it.

The options are declared here and `csext new` (cli/store.py) hands over to `new_described`
when `--describe` is given. This module builds the model client from the environment / the
secrets file, and the test runner from csext.worker.testrun (store/ must not import worker/),
then calls csext.store.assist.draft_extension, printing one line per round.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from csext.cli.context import Ctx, notify
from csext.schemas.errors import CsextError
from csext.schemas.manifest import HookType, Runtime
from csext.store.scaffold import Language

if TYPE_CHECKING:
    from csext.store.assist import TestOutcome, TestRunner
    from csext.worker.settings import Settings

DRAFT_CASE_TIMEOUT = 30.0
"""Seconds a drafted test case may run at most, whatever the draft's case or spec says."""

DescribeOpt = typer.Option(
    None,
    "--describe",
    help="Draft the extension with a language model from this description; saved disabled "
    "only if it passes its tests (docs/assist.md).",
)
RoundsOpt = typer.Option(
    3, "--rounds", min=1, max=10, help="With --describe: drafts to try, each failure sent back."
)


def new_described(
    ctx: Ctx,
    name: str,
    hook: HookType,
    lang: Language,
    runtime: Runtime,
    description: str,
    rounds: int,
) -> None:
    """Draft, test and save; print each round (on stderr with --json)."""
    from csext.store import assist
    from csext.store.assist.client import import_httpx

    if runtime is not Runtime.EXEC:
        raise CsextError(
            "--describe drafts exec extensions only",
            fix="drop --runtime; convert the saved draft later (docs/coprocess.md)",
        )
    config = assist.load_llm_config(ctx.store.secrets_path)
    config.require()
    import_httpx()
    chat = assist.ChatClient(config)
    typer.echo(f"drafting {name} with {chat.describe} (up to {rounds} rounds)", err=ctx.json)
    request = assist.DraftRequest(
        name=name, hook=hook, lang=lang, description=description, rounds=rounds
    )
    drafted = assist.draft_extension(
        ctx.store,
        request,
        chat=chat,
        run_tests=folder_runner(ctx.settings),
        on_round=lambda report: typer.echo(report.line(), err=ctx.json),
    )
    change = drafted.change
    notify(ctx.settings, change.extension, change.change, change.commit)
    data = {
        **change.to_dict(),
        "model": drafted.model,
        "rounds": [r.to_dict() for r in drafted.rounds],
    }
    short = f" ({change.commit[:10]})" if change.commit else ""
    ctx.emit(
        data, lambda: f"{change.message}{short}; disabled: review it, then csext enable {name}"
    )


def folder_runner(settings: Settings) -> TestRunner:
    """Runs a draft folder's test cases as `csext test` does (executor, deadline, clean
    environment, private run dir), each case capped at DRAFT_CASE_TIMEOUT seconds."""
    from csext.store.assist import TestOutcome
    from csext.store.registry import load_extension
    from csext.store.testcases import load_cases
    from csext.worker import testrun

    def run(folder: Path) -> TestOutcome:
        ext = load_extension(folder, {})
        cases, problems = load_cases(folder)
        if problems or not cases:
            return TestOutcome(False, "invalid test cases: " + ("; ".join(problems) or "none"))
        bounded = [
            dataclasses.replace(
                c,
                case=c.case.model_copy(
                    update={"timeout": min(c.case.timeout or ext.spec.timeout, DRAFT_CASE_TIMEOUT)}
                ),
            )
            for c in cases
        ]
        results = testrun.run_cases_sync(settings, ext, bounded)
        return TestOutcome(all(r.passed for r in results), testrun.render(results))

    return run
