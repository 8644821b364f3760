"""Draft → validate → test → repair, then save the first draft that passes (disabled).

Each round writes the model's answer over a fresh copy of the scaffold in a scratch folder
outside the registry, checks it as `csext validate` does (manifest, entry point syntax, test
case format) and runs its test cases through the injected `run_tests` (the CLI passes one
built on csext.worker.testrun: `csext test`'s deadline, clean environment and run dir). Any
problem goes back to the model for the next round. Nothing reaches the registry until a draft
passes; then it is copied in and committed as one change, like `csext new`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from csext.handlers.base import scrub
from csext.schemas.errors import CsextError, ManifestError
from csext.schemas.manifest import HookType
from csext.store.files import content_problems
from csext.store.ops import Change, Store, StoreError, check_loadable, check_name, commit, locked
from csext.store.query import validate_folder
from csext.store.registry import MANIFEST_FILE
from csext.store.scaffold import SUFFIX, Language, write_extension
from csext.store.scaffold_hooks import HOOKS
from csext.store.testcases import TESTS_DIR, case_files

from . import prompt
from .answer import Draft, parse_answer
from .client import Chat, Message
from .errors import AssistError, DraftProblem, NoPassingDraft
from .record import changelog, readme

MAX_ROUNDS = 10
DESCRIPTION_CAP = 4_000


@dataclass(frozen=True, slots=True, kw_only=True)
class DraftRequest:
    name: str
    hook: HookType
    lang: Language
    description: str
    rounds: int = 3


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """What `run_tests` found: passed, and the report to show (and send back on failure)."""

    __test__ = False  # not a pytest class

    passed: bool
    report: str


TestRunner = Callable[[Path], TestOutcome]
"""Runs the test cases of the extension folder it is given, within `csext test`'s limits."""


@dataclass(frozen=True, slots=True)
class RoundReport:
    round: int
    of: int
    verdict: str
    """refused (not a usable answer), invalid (csext validate), failed (csext test), passed."""
    summary: str
    """One line for the operator."""
    problems: list[str] = field(default_factory=list)
    """What goes back to the model (the whole test report on a failure)."""

    def line(self) -> str:
        more = self.verdict != "passed" and self.round < self.of
        return f"round {self.round}/{self.of}: {self.verdict}: {self.summary}" + (
            "; sending the errors back" if more else ""
        )

    def to_dict(self) -> dict[str, object]:
        return {"round": self.round, "verdict": self.verdict, "summary": self.summary}


@dataclass(frozen=True, slots=True)
class Drafted:
    change: Change
    rounds: list[RoundReport]
    model: str


def draft_extension(
    store: Store,
    request: DraftRequest,
    *,
    chat: Chat,
    run_tests: TestRunner,
    on_round: Callable[[RoundReport], None] | None = None,
) -> Drafted:
    """Ask `chat` for the extension, up to `request.rounds` times; save the first that passes."""
    description = _checked(store, request)
    secret_values = known_secrets(store)
    with tempfile.TemporaryDirectory(prefix="csext-draft-") as scratch:
        base = Path(scratch) / "scaffold" / request.name
        messages = _first_messages(base, request, description)
        reports: list[RoundReport] = []
        for number in range(1, request.rounds + 1):
            answer = chat.complete(messages)
            folder = Path(scratch) / f"round-{number}" / request.name
            report, draft = _one_round(number, request, base, folder, answer, run_tests)
            reports.append(report)
            if on_round is not None:
                on_round(report)
            if draft is not None:
                entry = changelog(description, chat.describe, draft.notes, reports)
                (folder / "CHANGELOG.md").write_text(entry, encoding="utf-8")
                change = _save(store, request, folder, chat.model, number)
                return Drafted(change, reports, chat.describe)
            # Only the last draft and its errors (secret values masked, in case a draft printed
            # a file it could read): the prompt stays within a small local model's context.
            problems = [scrub(p, secret_values) for p in report.problems]
            messages[2:] = [
                {"role": "assistant", "content": answer},
                prompt.repair_message(number, problems),
            ]
    raise NoPassingDraft(
        f"no draft passed in {request.rounds} round(s); nothing saved. Last round "
        f"({reports[-1].verdict}): {'; '.join(reports[-1].problems)[:1500]}",
        fix="give more --rounds, a more precise --describe or a larger model; or "
        "csext new without --describe and fill the scaffold in yourself",
    )


def _first_messages(base: Path, request: DraftRequest, description: str) -> list[Message]:
    """Scaffold into `base` (the draft's starting point) and ask for the first draft."""
    write_extension(base, request.name, request.hook, request.lang)
    scaffold = prompt.Scaffold(base, f"{request.name}{SUFFIX[request.lang]}")
    return [
        prompt.system_message(request.lang),
        prompt.first_message(request.hook, request.lang, scaffold, description),
    ]


def known_secrets(store: Store) -> list[str]:
    """Every value in the secrets file: masked in what goes back to the model, in case a
    draft prints a file it could read (drafts run as the operator's user)."""
    try:
        return [v for values in store.load_secrets().values() for v in values.values()]
    except CsextError:
        return []


def _checked(store: Store, request: DraftRequest) -> str:
    check_name(request.name)
    if (store.root / request.name).exists():
        raise StoreError(
            f"{store.root / request.name} already exists: pick another name or "
            f"csext remove {request.name} first"
        )
    if not 1 <= request.rounds <= MAX_ROUNDS:
        raise AssistError(f"--rounds must be between 1 and {MAX_ROUNDS}, got {request.rounds}")
    description = request.description.strip()
    if not description:
        raise AssistError("--describe needs a sentence saying what the extension should do")
    if len(description) > DESCRIPTION_CAP:
        raise AssistError(
            f"the description is {len(description)} characters; keep it under {DESCRIPTION_CAP}"
        )
    return description


def _one_round(
    number: int,
    request: DraftRequest,
    base: Path,
    folder: Path,
    answer: str,
    run_tests: TestRunner,
) -> tuple[RoundReport, Draft | None]:
    """Write, validate and test one answer; (report, the draft if it passed)."""
    of = request.rounds
    try:
        draft = parse_answer(answer, request.lang)
    except DraftProblem as exc:
        return RoundReport(number, of, "refused", _short(exc.problems), exc.problems), None
    write_draft(base, folder, request, draft)
    problems = check_folder(folder, f"{request.name}{SUFFIX[request.lang]}")
    if problems:
        return RoundReport(number, of, "invalid", _short(problems), problems), None
    outcome = run_tests(folder)
    verdict = "passed" if outcome.passed else "failed"
    report = RoundReport(number, of, verdict, test_summary(outcome.report), [outcome.report])
    return report, draft if outcome.passed else None


def _short(problems: list[str]) -> str:
    text = "; ".join(problems)
    return text if len(text) <= 300 else text[:297] + "..."


def test_summary(report: str) -> str:
    """`csext test: 1 passed, 1 failed (FAIL case: expected ...)` from a test report."""
    lines = report.strip().splitlines()
    total = lines[-1] if lines else "no result"
    failing = [line.strip() for line in lines if line.startswith("FAIL") or "expected" in line]
    detail = f" ({_short(failing)})" if failing else ""
    return f"csext test: {total}{detail}"


def write_draft(base: Path, folder: Path, request: DraftRequest, draft: Draft) -> None:
    """The scaffold with the draft's entry point, README section and test cases."""
    shutil.copytree(base, folder)
    for scaffolded in case_files(folder):  # the sample payloads stay (README's "Try it")
        scaffolded.unlink()
    entry = folder / f"{request.name}{SUFFIX[request.lang]}"
    entry.write_text(draft.entry_text, encoding="utf-8")
    entry.chmod(0o755)
    scaffold_readme = (folder / "README.md").read_text(encoding="utf-8")
    actions = [n for action in HOOKS[request.hook].actions for n in action.names]
    text = readme(scaffold_readme, draft.readme_section, actions)
    (folder / "README.md").write_text(text, encoding="utf-8")
    (folder / TESTS_DIR).mkdir(exist_ok=True)
    for name, case in draft.cases.items():
        text = "# Drafted with csext new --describe (format: docs/store.md)\n"
        text += yaml.safe_dump(case, sort_keys=False, allow_unicode=True)
        (folder / TESTS_DIR / f"{name}.yaml").write_text(text, encoding="utf-8")
    describe_in_manifest(folder, request.hook, request.description)


def describe_in_manifest(folder: Path, hook: HookType, description: str) -> None:
    """metadata.description: the operator's words (one line, at most 200 characters)."""
    summary = " ".join(description.split())
    summary = summary if len(summary) <= 200 else summary[:197] + "..."
    path = folder / MANIFEST_FILE
    old = f"  description: {json.dumps(HOOKS[hook].summary)}\n"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(old, f"  description: {json.dumps(summary)}\n", 1), "utf-8")


def check_folder(folder: Path, entry: str) -> list[str]:
    """What `csext validate` reports, plus the entry point's syntax check."""
    problems = content_problems((folder / entry).read_bytes(), entry)
    report = validate_folder(folder, {}, [])
    return problems + report.errors


def _save(store: Store, request: DraftRequest, folder: Path, model: str, rounds: int) -> Change:
    """Copy the passing draft into the registry and commit it (one change, disabled)."""
    name = request.name
    with locked(store):
        target = store.root / name
        if target.exists():
            raise StoreError(f"{target} appeared while drafting; nothing saved (draft discarded)")
        try:
            shutil.copytree(folder, target)
            check_loadable(store, target)
        except (CsextError, OSError) as exc:
            shutil.rmtree(target, ignore_errors=True)
            detail = "; ".join(exc.problems) if isinstance(exc, ManifestError) else str(exc)
            raise StoreError(f"saving the draft of {name} failed: {detail}") from exc
        message = (
            f"new {name}: {request.hook.value} extension ({request.lang.value}), "
            f"drafted by {model} in {rounds} round(s)"
        )
        return commit(store, name, "new", message)
