"""`csext top`: a live view of what every worker runs, per extension, refreshed every second.

Runs/s, p50/p99 run time and failures come from the run history (`csext.runs.log`, fed by
every worker of the fleet) over a sliding window; runs in flight come from the workers'
/metrics when given (`--metrics URL`, repeatable; default: this host's `CSEXT_METRICS_PORT`).
`--once` prints one frame (the last `--window`) and exits, for scripts and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from csext.cli.context import EXIT_USAGE, AmqpOpt, command_settings, fail

FAILED = frozenset({"failed", "timeout", "error", "rejected"})
NOT_RUN = frozenset({"expired", "rejected"})
"""Outcomes without a run time (left out of the percentiles)."""


@dataclass(slots=True)
class Row:
    extension: str
    hook: str
    runs: int
    failed: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    in_flight: int | None


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None without values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(
    records: list[dict[str, Any]], *, now: float, window: float, in_flight: dict[str, int] | None
) -> list[Row]:
    """One row per extension seen in the window (or running now), busiest first."""
    since = now - window
    by_extension: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("kind") == "operator" or record.get("finished_at", 0) < since:
            continue
        by_extension.setdefault(str(record.get("extension", "")), []).append(record)
    for name, count in (in_flight or {}).items():
        if count:
            by_extension.setdefault(name, [])
    rows = []
    for name, found in by_extension.items():
        durations = sorted(
            int(r.get("duration_ms", 0)) for r in found if r.get("outcome") not in NOT_RUN
        )
        rows.append(
            Row(
                extension=name,
                hook=str(found[-1].get("hook", "")) if found else "",
                runs=len(found),
                failed=sum(1 for r in found if r.get("outcome") in FAILED),
                rate=len(found) / window,
                p50_ms=percentile(durations, 0.50),
                p99_ms=percentile(durations, 0.99),
                in_flight=None if in_flight is None else in_flight.get(name, 0),
            )
        )
    rows.sort(key=lambda r: (-r.runs, -(r.in_flight or 0), r.extension))
    return rows


def render(rows: list[Row], *, window: float, source: str) -> Table:
    table = Table(
        title=f"csext top: last {window:g}s, {source}",
        title_justify="left",
        expand=False,
    )
    for name, justify in (
        ("EXTENSION", "left"),
        ("HOOK", "left"),
        ("RUNS", "right"),
        ("RUNS/S", "right"),
        ("P50 MS", "right"),
        ("P99 MS", "right"),
        ("FAILED", "right"),
        ("IN-FLIGHT", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.extension,
            row.hook or "-",
            str(row.runs),
            f"{row.rate:.2f}",
            _ms(row.p50_ms),
            _ms(row.p99_ms),
            f"[red]{row.failed}[/red]" if row.failed else "0",
            "-" if row.in_flight is None else str(row.in_flight),
        )
    if not rows:
        table.add_row("(no runs in this window)", "", "", "", "", "", "", "")
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def in_flight_from(urls: list[str], timeout: float = 2.0) -> dict[str, int] | None:
    """`csext_in_flight` summed per extension over the given /metrics URLs; None when none
    was given or none answered."""
    if not urls:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, int] = {}
    answered = False
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                text = response.read().decode()
        except OSError:
            continue
        answered = True
        for family in text_string_to_metric_families(text):
            if family.name != "csext_in_flight":
                continue
            for sample in family.samples:
                name = sample.labels.get("extension", "")
                totals[name] = totals.get(name, 0) + int(sample.value)
    return totals if answered else None


def register(app: typer.Typer) -> None:
    app.command("top")(top)


def top(
    once: bool = typer.Option(False, "--once", help="Print one frame and exit."),
    window: str = typer.Option("60s", help="Sliding window of the rates: 30s, 5m, 1h."),
    metrics: list[str] = typer.Option(
        [], "--metrics", help="A worker's /metrics URL for runs in flight (repeatable)."
    ),
    amqp_url: str | None = AmqpOpt,
) -> None:
    """Live per-extension view: runs/s, p50/p99, failures and runs in flight."""
    from csext.worker.amqp.runlog import parse_duration

    settings = command_settings(amqp_url=amqp_url)
    try:
        seconds = parse_duration(window)
    except ValueError:
        fail(f"--window {window!r} is not a duration", "e.g. 30s, 5m or 1h", EXIT_USAGE)
    urls = list(metrics)
    if not urls and settings.metrics_port:
        urls = [f"http://127.0.0.1:{settings.metrics_port}/metrics"]
    source = "every worker's run records" + (" + /metrics" if urls else "")
    if once:
        _once(settings.amqp_url, seconds, urls, source)
    else:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the view
            asyncio.run(_live(settings.amqp_url, seconds, urls, source))


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _once(amqp_url: str, window: float, urls: list[str], source: str) -> None:
    from csext.worker.amqp.runlog import recent_runs

    records = asyncio.run(recent_runs(amqp_url, None, limit=10**9, since=window))
    rows = summarize(records, now=time.time(), window=window, in_flight=in_flight_from(urls))
    _console().print(render(rows, window=window, source=source))


async def _live(amqp_url: str, window: float, urls: list[str], source: str) -> None:
    """Redraw in place on a terminal; elsewhere (a pipe, a log) print one frame a second."""
    from rich.live import Live

    from csext.worker.amqp.runwatch import follow_runs

    records: deque[dict[str, Any]] = deque()
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_runs(amqp_url, window, records.extend, stop))
    console = _console()
    try:
        with (
            Live(console=console, auto_refresh=False)
            if console.is_terminal
            else _Printer(console) as live
        ):
            while not follower.done():
                now = time.time()
                while records and records[0].get("finished_at", 0) < now - window:
                    records.popleft()
                flying = await asyncio.to_thread(in_flight_from, urls)
                rows = summarize(list(records), now=now, window=window, in_flight=flying)
                live.update(render(rows, window=window, source=source), refresh=True)
                await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(follower, return_exceptions=False)


class _Printer:
    """Live's interface for a console that is not a terminal: print every frame."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def __enter__(self) -> _Printer:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, table: Table, refresh: bool = False) -> None:
        self._console.print(table)
        self._console.file.flush()
