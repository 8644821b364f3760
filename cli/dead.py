"""`csext dead`: the operator's dead-letter toolkit over csext.dead (worker/amqp/dlq.py).

`list` and `show` only look; `replay` and `purge` change csext.dead, ask for confirmation
(or `--yes`), and write every dead letter they touch to the run history (`csext runs`).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import asdict

import orjson
import typer

from csext.cli.context import EXIT_USAGE, AmqpOpt, JsonOpt, command_settings, emit, fail

ExtensionOpt = typer.Option(None, "--extension", help="Only this extension's dead letters.")
ReasonOpt = typer.Option(None, "--reason", help="Only this reason, e.g. retries-exhausted.")
YesOpt = typer.Option(False, "--yes", help="Do not ask for confirmation.")


def register(app: typer.Typer) -> None:
    """Add `csext dead list|show|replay|purge` to the main app."""
    dead_app = typer.Typer(help="Dead letters in csext.dead: list, show, replay, purge.")
    dead_app.command("list")(dead_list)
    dead_app.command("show")(dead_show)
    dead_app.command("replay")(dead_replay)
    dead_app.command("purge")(dead_purge)
    app.add_typer(dead_app, name="dead")


def dead_list(
    extension: str | None = ExtensionOpt,
    reason: str | None = ReasonOpt,
    limit: int = typer.Option(50, help="At most this many."),
    json_output: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """List dead letters, their ids and why they died (nothing is removed)."""
    from csext.worker.amqp.dlq import format_dead, list_dead, matcher

    settings = command_settings(amqp_url=amqp_url)
    found = asyncio.run(list_dead(settings.amqp_url, matcher(extension, reason), limit))
    emit(json_output, found, lambda: format_dead(found))


def dead_show(
    dead_id: str = typer.Argument(..., metavar="ID", help="Id from `csext dead list` (a prefix)."),
    json_output: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """One dead letter in full: headers, reason, attempts, exit code, stderr tail and the body,
    pretty-printed with credentials masked (nothing is removed)."""
    from csext.worker.amqp.dlq import format_dead_letter, show_dead

    settings = command_settings(amqp_url=amqp_url)
    found = asyncio.run(show_dead(settings.amqp_url, dead_id))
    emit(json_output, found, lambda: format_dead_letter(found))


def dead_replay(
    extension: str | None = ExtensionOpt,
    reason: str | None = ReasonOpt,
    limit: int | None = typer.Option(None, help="At most this many."),
    yes: bool = YesOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Put dead letters back into the queue they came from, to be run again."""
    from csext.worker.amqp.dlq import matcher, replay_dead

    _confirm(yes, "Replay the matching dead letters?", "nothing replayed")
    settings = command_settings(amqp_url=amqp_url)
    report = asyncio.run(replay_dead(settings.amqp_url, matcher(extension, reason), limit))
    typer.echo(orjson.dumps(asdict(report)).decode())


def dead_purge(
    extension: str | None = ExtensionOpt,
    reason: str | None = ReasonOpt,
    older_than: str | None = typer.Option(
        None, "--older-than", help="Only those dead for longer than this: 90s, 15m, 24h, 7d."
    ),
    yes: bool = YesOpt,
    json_output: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Remove dead letters for good (all of them unless filtered); each goes to the run
    history first."""
    from csext.worker.amqp.dlq import matcher, purge_dead
    from csext.worker.amqp.runlog import parse_duration

    age = None
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError:
            fail(
                f"--older-than {older_than!r} is not a duration",
                "e.g. 90s, 15m, 24h or 7d",
                EXIT_USAGE,
            )
    what = (
        "every dead letter"
        if extension is None and reason is None and age is None
        else "the matching dead letters"
    )
    _confirm(yes, f"Purge {what}? This cannot be undone.", "nothing purged")
    settings = command_settings(amqp_url=amqp_url)
    report = asyncio.run(purge_dead(settings.amqp_url, matcher(extension, reason), older_than=age))

    def text() -> str:
        line = f"purged {report.purged} dead letter(s)"
        if report.kept_age_unknown:
            line += f"; kept {report.kept_age_unknown} whose age is unknown (no time recorded)"
        return line

    emit(json_output, asdict(report), text)


def _confirm(yes: bool, question: str, refused: str) -> None:
    if not yes and not (sys.stdin.isatty() and typer.confirm(question)):
        fail(refused, "confirm with 'y', or pass --yes")
