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


def readme(scaffold_readme: str, section: str, actions: Sequence[str]) -> str:
    """The scaffold's README with the model's section before `## Actions`, whose scaffold
    TODO notes are replaced by the action names (what each does is now the code's)."""
    if section and not section.startswith("#"):
        section = "## What it does\n\n" + section
    note = "_Drafted by a language model (`csext new --describe`): see CHANGELOG.md._"
    head, found, tail = scaffold_readme.partition("\n## Actions\n")
    if not found:
        return f"{scaffold_readme.rstrip()}\n\n{section}\n\n{note}\n"
    rest = tail[tail.find("\n## ") :] if "\n## " in tail else "\n"
    names = ", ".join(f"`{name}`" for name in actions)
    return f"{head.rstrip()}\n\n{section}\n\n{note}\n\n## Actions\n\n{names}\n{rest}"


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
