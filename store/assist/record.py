"""What a drafted extension says about its origin: README section and CHANGELOG entry.

A reviewer opening the extension sees where the code came from: the CHANGELOG's first entry
holds the operator's description verbatim, the model and endpoint (never a credential), each
round's verdict and the model's own notes (its text outside the code blocks; the code, README
section and test cases it wrote are the files themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class _Round(Protocol):
    def line(self) -> str: ...


def readme(scaffold_readme: str, section: str) -> str:
    """The scaffold's README with the model's section after the first paragraph block."""
    if not section:
        return scaffold_readme
    if not section.startswith("#"):
        section = "## What it does\n\n" + section
    marker = "\n## Actions"
    head, found, tail = scaffold_readme.partition(marker)
    note = "_Drafted by a language model (`csext new --describe`): see CHANGELOG.md._"
    if not found:
        return f"{scaffold_readme.rstrip()}\n\n{section}\n\n{note}\n"
    return f"{head.rstrip()}\n\n{section}\n\n{note}\n{found}{tail}"


def changelog(description: str, model: str, notes: str, rounds: Sequence[_Round]) -> str:
    lines = [
        "# Changelog",
        "",
        "## 0.1.0",
        "",
        "- First version, drafted by a language model with `csext new --describe` and saved",
        "  disabled after it passed `csext validate` and `csext test`. Review the code before",
        "  `csext enable`.",
        f"  - Model: {model}",
        "  - Description (the operator's words):",
        "",
        *_quoted(description),
        "",
        "  - Rounds:",
        *[f"    - {r.line()}" for r in rounds],
    ]
    if notes:
        lines += ["", "  - The model's notes on its answer:", "", *_quoted(notes)]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> list[str]:
    return [f"    > {line}".rstrip() for line in text.strip().splitlines()]
