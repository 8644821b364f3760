"""The model's answer taken apart and checked before anything of it is written or run.

Accepted: exactly one fenced block of the requested language holding the whole entry point
(a `#!` line naming that language, within ENTRY_CAP), at most one ```markdown README section
and one ```yaml list of test cases (each a valid csext test case with an inline payload).
Refused, with reasons the loop sends back: no code at all, code of another language, several
files, a missing or foreign `#!`, anything over its size cap. Text outside the blocks is kept
as the model's notes for the CHANGELOG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from csext.schemas.errors import describe_validation_error
from csext.schemas.testcase import TestCase
from csext.store.scaffold import Language

from .errors import DraftProblem

ENTRY_CAP = 64 * 1024
README_CAP = 8 * 1024
CASES_CAP = 64 * 1024
NOTES_CAP = 2 * 1024
MAX_CASES = 20

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
_CASE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LANG_TAGS = {
    Language.BASH: {"bash", "sh", "shell", "zsh"},
    Language.PYTHON: {"python", "python3", "py"},
}
_TEXT_TAGS = {"markdown", "md", "yaml", "yml", "json", "text", "txt", "console", "output"}
_SHEBANG = {Language.BASH: re.compile(r"\b(bash|sh)\b"), Language.PYTHON: re.compile(r"python")}


@dataclass(frozen=True, slots=True)
class Draft:
    """One accepted answer: what gets written into the scratch folder."""

    entry_text: str
    readme_section: str
    cases: dict[str, dict[str, Any]]
    """Case name → the case as written to tests/<name>.yaml."""
    notes: str = ""
    warnings: list[str] = field(default_factory=list)


def parse_answer(text: str, lang: Language) -> Draft:
    """The Draft in `text`, or DraftProblem listing everything wrong with it."""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    entry = _entry_block(blocks, lang)
    problems = entry_problems(entry, lang)
    readme = _one(blocks, {"markdown", "md"}, "README section")
    tests = _one(blocks, {"yaml", "yml"}, "test cases")
    if len(readme) > README_CAP:
        problems.append(f"the README section is {len(readme)} bytes; keep it under {README_CAP}")
    cases: dict[str, dict[str, Any]] = {}
    try:
        cases = parse_cases(tests)
    except DraftProblem as exc:
        problems += exc.problems
    if problems:
        raise DraftProblem(problems)
    notes = _FENCE.sub("", text).strip()
    if len(notes) > NOTES_CAP:
        notes = notes[:NOTES_CAP] + " ... (cut)"
    return Draft(entry, readme.strip(), cases, notes)


def _entry_block(blocks: list[tuple[str, str]], lang: Language) -> str:
    name = lang.value
    ours = [body for tag, body in blocks if tag in LANG_TAGS[lang]]
    ours += [body for tag, body in blocks if not tag and body.startswith("#!")]
    foreign = sorted({tag for tag, _ in blocks if tag and tag not in LANG_TAGS[lang] | _TEXT_TAGS})
    if foreign:
        raise DraftProblem(
            [
                f"the answer holds code that is not {name} (```{', ```'.join(foreign)}): "
                f"give the whole extension as one {name} file"
            ]
        )
    if not ours:
        raise DraftProblem(
            [f"the answer is not code: it holds no ```{name} block with the entry point"]
        )
    if len(ours) > 1:
        raise DraftProblem(
            [f"the answer holds {len(ours)} {name} blocks: give the entry point as one file"]
        )
    return ours[0]


def entry_problems(entry: str, lang: Language) -> list[str]:
    problems = []
    size = len(entry.encode("utf-8"))
    if size > ENTRY_CAP:
        problems.append(f"the entry point is {size} bytes; the cap is {ENTRY_CAP}")
    if "\x00" in entry:
        problems.append("the entry point holds NUL bytes: it must be a text file")
    first = entry.split("\n", 1)[0]
    if not first.startswith("#!") or not _SHEBANG[lang].search(first):
        wanted = "#!/usr/bin/env bash" if lang is Language.BASH else "#!/usr/bin/env python3"
        problems.append(f"the entry point must start with {wanted} (it starts with {first[:60]!r})")
    return problems


def _one(blocks: list[tuple[str, str]], tags: set[str], what: str) -> str:
    found = [body for tag, body in blocks if tag in tags]
    if len(found) > 1:
        raise DraftProblem([f"the answer holds {len(found)} {what} blocks; give one"])
    return found[0] if found else ""


def parse_cases(text: str) -> dict[str, dict[str, Any]]:
    """The ```yaml block as {name: case}; every case validated like `csext test` would."""
    if not text.strip():
        raise DraftProblem(["the answer has no ```yaml block of test cases; give at least one"])
    if len(text.encode("utf-8")) > CASES_CAP:
        raise DraftProblem([f"the test cases are over {CASES_CAP} bytes; give fewer, smaller"])
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DraftProblem([f"the test cases are not valid YAML: {exc}"]) from None
    if isinstance(raw, dict) and isinstance(raw.get("cases"), list):
        raw = raw["cases"]
    if not isinstance(raw, list) or not raw or not all(isinstance(c, dict) for c in raw):
        raise DraftProblem(["the test cases must be a non-empty YAML list of mappings"])
    if len(raw) > MAX_CASES:
        raise DraftProblem([f"{len(raw)} test cases; give at most {MAX_CASES}"])
    cases: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for index, item in enumerate(raw, 1):
        name, problem = _checked_case(index, dict(item), cases)
        if problem:
            problems += problem
        else:
            cases[name] = {k: v for k, v in item.items() if k != "name"}
    if problems:
        raise DraftProblem(problems)
    return cases


def _checked_case(index: int, item: dict[str, Any], seen: dict[str, Any]) -> tuple[str, list[str]]:
    name = str(item.pop("name", f"case-{index}")).strip().lower()
    where = f"test case {index} ({name})"
    if not _CASE_NAME.match(name) or name in seen:
        return name, [f"{where}: name must be unique, lower case letters, digits, - and _"]
    if "payloadFile" in item or "payload_file" in item:
        return name, [f"{where}: give the payload inline (payload:), not payloadFile"]
    try:
        TestCase.model_validate(item)
    except ValidationError as exc:
        return name, [f"{where}: {p}" for p in describe_validation_error(exc)]
    return name, []
