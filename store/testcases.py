"""Read an extension's test cases (`tests/<case>.yaml`; format in schemas/testcase.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from csext.schemas.errors import ManifestError, describe_validation_error
from csext.schemas.testcase import TestCase

TESTS_DIR = "tests"
CASE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class LoadedCase:
    name: str
    path: Path
    case: TestCase
    payload: Any
    """The inline payload, or the payload file's JSON."""


def case_files(folder: Path) -> list[Path]:
    tests = folder / TESTS_DIR
    if not tests.is_dir():
        return []
    return sorted(p for p in tests.iterdir() if p.suffix in CASE_SUFFIXES and p.is_file())


def load_case(path: Path) -> LoadedCase:
    """One case with its payload; ManifestError naming the file and field otherwise."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ManifestError(str(path), ["must be a mapping with action, payload and expect"])
    try:
        case = TestCase.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(str(path), describe_validation_error(exc)) from exc
    payload = case.payload
    if case.payload_file is not None:
        payload = load_payload(path.parent / case.payload_file, str(path))
    return LoadedCase(path.stem, path, case, {} if payload is None else payload)


def load_payload(path: Path, referrer: str = "") -> Any:
    """A JSON payload file."""
    where = f"{referrer}: payloadFile" if referrer else "payload"
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ManifestError(
            referrer or str(path), [f"{where}: cannot read {path}: {exc.strerror}"]
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise ManifestError(referrer or str(path), [f"{where}: {path} is not JSON: {exc}"]) from exc


def load_cases(folder: Path) -> tuple[list[LoadedCase], list[str]]:
    """Every valid case, and one problem line per invalid one."""
    cases: list[LoadedCase] = []
    problems: list[str] = []
    for path in case_files(folder):
        try:
            cases.append(load_case(path))
        except ManifestError as exc:
            problems.extend(f"{exc.path}: {problem}" for problem in exc.problems)
    return cases, problems
