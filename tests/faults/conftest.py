"""Fault suite switches and the results table.

`CSEXT_FAULTS_FULL=1` (what `make faults` sets) selects the full sizes; without it every
scenario runs at CI size inside `make test`. Each scenario test states its load and what it
checked through the `report` fixture; the outcome comes from pytest. The table is printed at
the end of the session and, in full runs only, written into docs/reliability.md between its
markers (rows of scenarios not run this time are kept).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FULL = os.environ.get("CSEXT_FAULTS_FULL") == "1"
DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN = "<!-- faults:results:begin -->"
END = "<!-- faults:results:end -->"
HEADER = "| scenario | test | load | what was checked | result |\n|---|---|---|---|---|\n"


def size(ci: int, full: int) -> int:
    """The load of a scenario: `full` under `make faults`, else `ci`."""
    return full if FULL else ci


@dataclass
class Row:
    scenario: str
    test: str
    load: str = ""
    checked: list[str] = field(default_factory=list)
    result: str = "not run"
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        checked = "; ".join(self.checked).replace("|", "\\|")
        return f"| {self.scenario} | `{self.test}` | {self.load} | {checked} | {self.result} |"


@dataclass
class Report:
    """What one scenario test tells the table."""

    row: Row

    def load(self, text: str) -> None:
        self.row.load = text

    def check(self, text: str) -> None:
        """Call right after the assertion(s) it describes passed."""
        self.row.checked.append(text)


_ROWS: dict[str, Row] = {}


@pytest.fixture(autouse=True)
async def _clean_dead_letters(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a broker scenario, take its dead letters out of the shared csext.dead."""
    wanted = "unique" in request.fixturenames and "amqp_url" in request.fixturenames
    token = request.getfixturevalue("unique") if wanted else None
    url = request.getfixturevalue("amqp_url") if wanted else None
    yield
    if token and url:
        from ._kit import purge_dead_letters

        await purge_dead_letters(url, token)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Report]:
    module = request.node.module
    scenario = getattr(module, "SCENARIO", module.__name__)
    row = Row(scenario=scenario, test=request.node.name)
    _ROWS[request.node.nodeid] = row
    yield Report(row)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    result = yield
    row = _ROWS.get(item.nodeid)
    if row is None:
        return result
    if result.when == "call" or (result.when == "setup" and not result.passed):
        seconds = time.monotonic() - row.started
        if result.passed:
            row.result = f"pass ({seconds:.0f} s)"
        elif result.skipped:
            reason = result.longrepr[2] if isinstance(result.longrepr, tuple) else ""
            row.result = f"skipped: {str(reason).removeprefix('Skipped: ')}"
        else:
            row.result = f"**FAIL** ({seconds:.0f} s)"
    return result


def table(rows: list[Row]) -> str:
    return HEADER + "\n".join(row.line() for row in rows) + "\n"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not _ROWS:
        return
    rows = sorted(_ROWS.values(), key=lambda r: (r.scenario, r.test))
    size_name = "full" if FULL else "CI"
    terminalreporter.write_sep("=", f"csext fault suite ({size_name} size)")
    terminalreporter.write_line(table(rows))
    if FULL:
        _write_doc(rows)
        terminalreporter.write_line(f"results written to {DOC}")


def _row_order(line: str) -> tuple[int, str, str]:
    """Scenario number first (9 before 10), then scenario and test."""
    scenario, test = (cell.strip() for cell in line.split("|")[1:3])
    number = scenario.split(" ", 1)[0]
    return (int(number) if number.isdigit() else 1_000, scenario, test)


def _write_doc(rows: list[Row]) -> None:
    text = DOC.read_text() if DOC.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    kept = {}
    for line in old.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 5 and cells[1].startswith("`"):
            kept[cells[1].strip("`")] = line
    fresh = {row.test: row.line() for row in rows}
    merged = {**kept, **fresh}
    order = sorted(merged.values(), key=_row_order)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    body = f"\nLast full run: {stamp} (`make faults`).\n\n" + HEADER + "\n".join(order) + "\n"
    DOC.write_text(head + BEGIN + body + END + tail)
