"""`csext fleet`: every worker on one registry commit, and staged rollouts (worker/fleet.py).

`csext fleet` asks every worker of the vhost for its status and prints one row each, flags the
workers whose commit differs from the fleet's, and exits 1 when the fleet is inconsistent (for
monitoring; 69 when no worker answered). `sync`, `promote` and `rollback` move workers that
follow a registry remote (`csext worker --registry-remote URL[@BRANCH]`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from csext.cli.context import (
    EXIT_FAILURE,
    EXIT_UNAVAILABLE,
    AmqpOpt,
    JsonOpt,
    command_settings,
    emit,
    fail,
    table,
)
from csext.worker.control import FLEET_WAIT, ask_fleet
from csext.worker.fleet import STATUS_REQUEST, SYNC, FleetReport

WaitOpt = typer.Option(FLEET_WAIT, "--wait", help="Seconds to collect the workers' answers.")
SyncWaitOpt = typer.Option(
    60.0, "--wait", help="Seconds the workers get to fetch, validate and switch."
)


def register(app: typer.Typer) -> None:
    """Add `csext fleet [sync|promote|rollback]` to the main app."""
    fleet_app = typer.Typer(
        help="The workers of this broker: status, and staged registry rollouts.",
        invoke_without_command=True,
    )
    fleet_app.callback(invoke_without_command=True)(fleet_status)
    fleet_app.command("sync")(fleet_sync)
    fleet_app.command("promote")(fleet_promote)
    fleet_app.command("rollback")(fleet_rollback)
    app.add_typer(fleet_app, name="fleet")


def fleet_status(
    ctx: typer.Context,
    wait: float = WaitOpt,
    expect: int = typer.Option(
        0, "--expect", min=0, help="Workers that must answer (stops waiting once they have)."
    ),
    json_output: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Every worker's id, version, registry commit, extensions, runs in flight, uptime.

    Exits 1 when they do not all run the same commit and extensions."""
    if ctx.invoked_subcommand is not None:
        return
    report = _status(amqp_url, wait, expect)
    missing = max(0, expect - len(report.workers))
    data = {
        "consistent": report.consistent and not missing,
        "commit": report.commit,
        "missing": missing,
        "workers": report.workers,
    }
    emit(json_output, data, lambda: _status_text(report, missing))
    if not data["consistent"]:
        raise typer.Exit(EXIT_FAILURE)


def fleet_sync(
    canary: int = typer.Option(0, "--canary", min=0, help="Move only this many workers first."),
    commit: str | None = typer.Option(None, "--commit", help="Commit to move to (default: tip)."),
    wait: float = SyncWaitOpt,
    json_output: bool = JsonOpt,
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Move workers to the remote's tip (or --commit): fetch, validate, switch.

    With --canary N only N workers move; then `promote` or `rollback`."""
    report = _status(amqp_url, FLEET_WAIT)
    workers = report.workers[:canary] if canary else report.workers
    names = [str(w["worker"]) for w in workers] if canary else None
    _move(amqp_url, commit, names, canary > 0, len(workers), wait, json_output)


def fleet_promote(
    wait: float = SyncWaitOpt, json_output: bool = JsonOpt, amqp_url: str | None = AmqpOpt
) -> None:
    """Move every worker to the commit the canaries run."""
    report = _status(amqp_url, FLEET_WAIT)
    target = _target(report.promote_target)
    _move(amqp_url, target, None, False, len(report.workers), wait, json_output)


def fleet_rollback(
    wait: float = SyncWaitOpt, json_output: bool = JsonOpt, amqp_url: str | None = AmqpOpt
) -> None:
    """Return every worker to the commit before the latest rollout (canary or full)."""
    report = _status(amqp_url, FLEET_WAIT)
    target = _target(report.rollback_target)
    _move(amqp_url, target, None, False, len(report.workers), wait, json_output)


def _target(pick: Any) -> str:
    try:
        return str(pick())
    except ValueError as exc:
        fail(str(exc), "see `csext fleet` for each worker's commit", EXIT_FAILURE)


def _status(amqp_url: str | None, wait: float, expect: int = 0) -> FleetReport:
    settings = command_settings(amqp_url=amqp_url)
    request = {"event": STATUS_REQUEST}
    answers = asyncio.run(ask_fleet(settings.amqp_url, request, wait=wait, expect=expect or None))
    if not answers:
        fail(
            f"no csext worker answered within {wait:g}s on {settings.safe_amqp_url}",
            "start `csext worker` against this broker and vhost, or give --wait more seconds",
            EXIT_UNAVAILABLE,
        )
    return FleetReport(answers)


def _move(
    amqp_url: str | None,
    target: str | None,
    workers: list[str] | None,
    canary: bool,
    expect: int,
    wait: float,
    json_output: bool,
) -> None:
    settings = command_settings(amqp_url=amqp_url)
    request: dict[str, object] = {
        "event": SYNC,
        "target": target,
        "workers": workers,
        "canary": canary,
    }
    results = asyncio.run(ask_fleet(settings.amqp_url, request, wait=wait, expect=expect))
    results.sort(key=lambda r: str(r.get("worker")))
    emit(json_output, results, lambda: _sync_text(results, expect))
    if len(results) < expect or any(r.get("result") == "failed" for r in results):
        raise typer.Exit(EXIT_FAILURE)


def _short(commit: object) -> str:
    return str(commit)[:12] if commit else "-"


def _status_text(report: FleetReport, missing: int = 0) -> str:
    rows = []
    for w in report.workers:
        extensions = w.get("extensions") or {}
        flags = []
        if report.differs(w):
            flags.append("DIFFERS")
        if w.get("canary"):
            flags.append("canary")
        if w.get("update_error"):
            flags.append(f"cannot update: {w['update_error']}")
        rows.append(
            [
                str(w.get("worker")),
                str(w.get("version")),
                _short(w.get("commit")),
                ", ".join(f"{n} {v}" for n, v in sorted(extensions.items())) or "-",
                str(w.get("in_flight")),
                f"{float(w.get('uptime') or 0):.0f}s",
                "; ".join(flags) or "ok",
            ]
        )
    header = ["WORKER", "CSEXT", "COMMIT", "EXTENSIONS", "RUNS", "UPTIME", "STATE"]
    verdict = (
        f"consistent: {len(report.workers)} workers on {_short(report.commit)}"
        if report.consistent
        else "INCONSISTENT: workers run different registry commits or extensions"
    )
    if missing:
        verdict += f"\nMISSING: {missing} expected worker(s) did not answer"
    return table(rows, header) + "\n" + verdict


def _sync_text(results: list[dict[str, Any]], expect: int) -> str:
    rows = [
        [str(r.get("worker")), str(r.get("result")), _short(r.get("commit")), r.get("error") or ""]
        for r in results
    ]
    text = table(rows, ["WORKER", "RESULT", "COMMIT", "ERROR"])
    if len(results) < expect:
        text += f"\n{expect - len(results)} worker(s) did not answer in time"
    return text
