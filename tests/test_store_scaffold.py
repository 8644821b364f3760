"""Every hook's scaffold, in both languages, passes `csext test` unmodified."""

from __future__ import annotations

from pathlib import Path

import pytest
from csext.schemas.manifest import HookType
from csext.store import ops, query, scaffold
from csext.store.testcases import load_cases
from csext.worker.extension_test import run_cases_sync, select_cases
from csext.worker.settings import load_settings


@pytest.mark.parametrize("lang", list(scaffold.Language))
@pytest.mark.parametrize("hook", list(HookType))
def test_fresh_scaffold_passes_its_own_tests(
    tmp_path: Path, hook: HookType, lang: scaffold.Language
) -> None:
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    name = f"x-{hook.value}"
    change = scaffold.new(store, name, hook, lang)
    assert change.commit is not None
    report = query.validate(store.root / name, store)[0]
    assert report.ok, report.errors
    cases, problems = load_cases(store.root / name)
    assert not problems and len(cases) == len(scaffold.HOOKS[hook].actions)
    settings = load_settings(registry=store.root, run_dir=tmp_path / "runs")
    ext, selected, _ = select_cases(store, name, [], None, None)
    results = run_cases_sync(settings, ext, selected)
    failed = [(r.name, r.failures, r.stdout, r.error) for r in results if not r.passed]
    assert not failed


def test_unknown_action_fails_in_both_languages(tmp_path: Path) -> None:
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    settings = load_settings(registry=store.root, run_dir=tmp_path / "runs")
    for lang in scaffold.Language:
        name = f"auth-{lang.value}"
        scaffold.new(store, name, HookType.TWO_FACTOR, lang)
        payload = tmp_path / "p.json"
        payload.write_text('{"user_account": {"username": "a"}}')
        ext, cases, _ = select_cases(store, name, [], "setup", payload)
        assert run_cases_sync(settings, ext, cases)[0].passed
        cases[0] = cases[0].__class__(
            "odd",
            payload,
            cases[0].case.model_copy(update={"action": "frobnicate"}),
            cases[0].payload,
        )
        result = run_cases_sync(settings, ext, cases)[0]
        assert not result.passed


def test_coprocess_runtime_scaffolds_exec_and_says_so(tmp_path: Path) -> None:
    store = ops.Store(tmp_path / "reg", tmp_path / "secrets.yaml")
    change = scaffold.new(
        store, "warm", HookType.USER_AUTHENTICATOR, runtime=scaffold.Runtime.COPROCESS
    )
    assert "coprocess" in change.warnings[0]
    assert "runtime: exec" in (store.root / "warm" / "extension.yaml").read_text()
