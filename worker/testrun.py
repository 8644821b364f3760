"""`csext test`: run an extension's test cases through the worker's own execution path.

No broker: the same `Executor` the worker uses (hook handler → runtime → interpretation) runs
each case, with a run recorder that publishes nothing. So a case passes here exactly when the
worker would get that outcome from the same payload. Case format: schemas/testcase.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from csext.schemas.errors import CsextError
from csext.schemas.event import CloudStackEvent
from csext.schemas.manifest import HookType
from csext.schemas.testcase import Expect, TestCase
from csext.store.ops import Store, extension_dir
from csext.store.registry import MANIFEST_FILE, Extension, load_extension, parse_manifest
from csext.store.testcases import LoadedCase, load_cases, load_payload
from csext.worker.amqp.records import RunRecorder
from csext.worker.runtimes.choice import Runtimes
from csext.worker.runtimes.environment import event_key
from csext.worker.runtimes.execution import Executor, RunContext, RunOutcome
from csext.worker.runtimes.runner import ExecRunner
from csext.worker.settings import Settings


@dataclass(slots=True)
class CaseResult:
    __test__ = False  # not a pytest class

    name: str
    action: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_ms: int = 0
    outcome: str = ""
    result: Any = None
    retry: bool = False
    error: str | None = None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def event_payload(routing_key: str, body: Any) -> dict[str, Any]:
    """What the worker hands an event extension for a delivery with this key and body."""
    body = body if isinstance(body, dict) else {}
    return CloudStackEvent.from_delivery(routing_key, body).model_dump()


def case_input(ext: Extension, case: TestCase, payload: Any) -> tuple[str, Any]:
    """(action, payload as the handler receives it) for one case."""
    if case.routing_key is not None and ext.hook is HookType.EVENT:
        event = event_payload(case.routing_key, payload)
        return case.action or event["category"] or "event", event
    return case.action or "event", payload


OnResult = Callable[["CaseResult"], None]
"""Called after each case (progress display, streamed output)."""


async def run_cases(
    settings: Settings, ext: Extension, cases: list[LoadedCase], on_result: OnResult | None = None
) -> list[CaseResult]:
    runner = ExecRunner(
        run_dir=settings.run_dir, output_cap=settings.output_cap, kill_grace=settings.kill_grace
    )
    runtimes = Runtimes(settings, runner)
    executor = Executor(settings, runtimes, RunRecorder(None))
    results = []
    try:
        for loaded in cases:
            results.append(await run_case(executor, ext, loaded))
            if on_result is not None:
                on_result(results[-1])
        return results
    finally:
        await runtimes.aclose()


async def run_case(executor: Executor, ext: Extension, loaded: LoadedCase) -> CaseResult:
    case = loaded.case
    action, payload = case_input(ext, case, loaded.payload)
    if case.env:
        spec = ext.spec.model_copy(update={"env": {**ext.spec.env, **case.env}})
        ext = dataclasses.replace(ext, manifest=ext.manifest.model_copy(update={"spec": spec}))
    ctx = RunContext(
        action=action,
        payload=payload,
        kind="test",
        attempt=1,
        event_key=event_key(action, orjson.dumps(payload)),
        timeout=case.timeout or ext.spec.timeout,
    )
    try:
        outcome = await executor.execute(ext, ctx)
    except ValueError as exc:
        return CaseResult(loaded.name, action, False, [f"payload refused: {exc}"], error=str(exc))
    return judge(loaded.name, action, case.expect, outcome)


def judge(name: str, action: str, expect: Expect, outcome: RunOutcome) -> CaseResult:
    run, meaning = outcome.run, outcome.interpretation
    result = CaseResult(
        name=name,
        action=action,
        passed=True,
        exit_code=run.exit_code,
        stdout=run.stdout.decode("utf-8", "replace"),
        stderr=run.stderr.decode("utf-8", "replace"),
        duration_ms=run.duration_ms,
        outcome=meaning.outcome.value,
        result=meaning.result,
        retry=meaning.retry,
        error=meaning.error.message if meaning.error else run.error,
        truncated=run.stdout_truncated or run.stderr_truncated,
    )
    result.failures = expectation_failures(expect, result)
    result.passed = not result.failures
    return result


def expectation_failures(expect: Expect, got: CaseResult) -> list[str]:
    """One line per expectation that does not hold."""
    failures = []
    if expect.outcome is not None and got.outcome != expect.outcome.value:
        failures.append(f"outcome: expected {expect.outcome.value}, got {got.outcome}")
    if expect.exit_code is not None and got.exit_code != expect.exit_code:
        failures.append(f"exitCode: expected {expect.exit_code}, got {got.exit_code}")
    if expect.retry is not None and got.retry != expect.retry:
        failures.append(f"retry: expected {expect.retry}, got {got.retry}")
    failures += [
        f"stdoutContains: {text!r} not in stdout"
        for text in expect.stdout_contains
        if text not in got.stdout
    ]
    failures += [
        f"stderrContains: {text!r} not in stderr"
        for text in expect.stderr_contains
        if text not in got.stderr
    ]
    if expect.stdout_json is not None:
        failures += _json_failures(expect.stdout_json, got.stdout)
    if expect.result is not None:
        failures += [f"result{where}" for where in subset_mismatches(expect.result, got.result)]
    return failures


def _json_failures(expected: Any, stdout: str) -> list[str]:
    try:
        actual = orjson.loads(stdout)
    except orjson.JSONDecodeError:
        return ["stdoutJson: stdout is not JSON"]
    return [f"stdoutJson{where}" for where in subset_mismatches(expected, actual)]


def subset_mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` does not contain `expected` (mappings: subset; anything else: equal)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or ''}: expected an object, got {_short(actual)}"]
        problems = []
        for key, value in expected.items():
            where = f"{path}.{key}"
            if key not in actual:
                problems.append(f"{where}: missing")
            else:
                problems += subset_mismatches(value, actual[key], where)
        return problems
    if expected != actual:
        return [f"{path}: expected {_short(expected)}, got {_short(actual)}"]
    return []


def _short(value: Any) -> str:
    return orjson.dumps(value).decode()[:120]


def adhoc_case(action: str, payload_file: Path | None, payload: Any) -> LoadedCase:
    """A case for `csext test NAME --action A --payload FILE`: no expectation but success."""
    case = TestCase(action=action, expect=Expect())
    return LoadedCase("adhoc", payload_file or Path("-"), case, payload)


def run_cases_sync(
    settings: Settings, ext: Extension, cases: list[LoadedCase], on_result: OnResult | None = None
) -> list[CaseResult]:
    return asyncio.run(run_cases(settings, ext, cases, on_result))


def load_for_test(store: Store, name: str) -> tuple[Extension, list[str]]:
    """The extension as the worker would load it; secrets that are not set run as empty
    values (with a warning), so test suites run in CI without the production secrets."""
    folder = extension_dir(store, name)
    manifest = parse_manifest(folder / MANIFEST_FILE)
    values = dict(store.load_secrets().get(name, {}))
    missing = [key for key in manifest.spec.secrets if key not in values]
    values.update({key: "" for key in missing})
    warnings = [f"secret {key} is not set; the test runs with an empty value" for key in missing]
    return load_extension(folder, {name: values}), warnings


def select_cases(
    store: Store,
    name: str,
    only: list[str],
    action: str | None,
    payload_file: Path | None,
) -> tuple[Extension, list[LoadedCase], list[str]]:
    """The extension and the cases to run: its tests/ (or `only` of them), or one ad-hoc."""
    ext, warnings = load_for_test(store, name)
    if action is not None or payload_file is not None:
        if action is None:
            raise CsextError("--payload needs --action (e.g. --action start --payload p.json)")
        payload = load_payload(payload_file) if payload_file else {}
        return ext, [adhoc_case(action, payload_file, payload)], warnings
    cases, problems = load_cases(ext.directory)
    if problems:
        raise CsextError("invalid test cases: " + "; ".join(problems))
    if only:
        unknown = sorted(set(only) - {c.name for c in cases})
        if unknown:
            names = ", ".join(c.name for c in cases) or "none"
            raise CsextError(f"no test case {', '.join(unknown)} in {name} (cases: {names})")
        cases = [c for c in cases if c.name in only]
    if not cases:
        raise CsextError(
            f"{name} has no test cases: add tests/<case>.yaml (see docs/store.md), "
            "or run one payload with --action A --payload FILE"
        )
    return ext, cases, warnings


def render(results: list[CaseResult]) -> str:
    """Human-readable report: one block per case (`render_case`), then the counts."""
    return "\n".join([*(render_case(r) for r in results), summary(results)])


def render_case(r: CaseResult) -> str:
    """`PASS  name  action  outcome (exit N)  12 ms`; a failure adds each expectation that did
    not hold (expected vs got), the error, and what the extension printed."""
    exit_code = "no exit code" if r.exit_code is None else f"exit {r.exit_code}"
    outcome = r.outcome or "not run"
    head = f"{'PASS' if r.passed else 'FAIL'}  {r.name}  {r.action}  {outcome} ({exit_code})"
    lines = [f"{head}  {r.duration_ms} ms"]
    if r.passed:
        return lines[0]
    lines += [f"      {failure}" for failure in r.failures]
    if r.error and not any(r.error in failure for failure in r.failures):
        lines.append(f"      error: {r.error}")
    if r.result is not None:
        lines.append(f"      result: {_short(r.result)}")
    lines.append(f"      stdout: {_indent(r.stdout)}")
    lines.append(f"      stderr: {_indent(r.stderr)}")
    return "\n".join(lines)


def summary(results: list[CaseResult]) -> str:
    """`N passed, N failed` (a line test runners and CI read)."""
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"


def _indent(text: str) -> str:
    text = text.rstrip("\n")
    if not text:
        return "(empty)"
    return text.replace("\n", "\n              ")
