"""Unknown keys in extension.yaml are errors with a suggestion; `x-` keys are the user's;
hooks are accepted in CloudStack's spellings (schemas/manifest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from csext.schemas.errors import describe_validation_error, summarize_validation_error
from csext.schemas.hooks.event import EventInput
from csext.schemas.manifest import HookType, Manifest, parse_hook


def manifest(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "hello"}, "spec": {"hook": "event", "entrypoint": "run", **spec}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Manifest.model_validate(data)
    return describe_validation_error(caught.value)


TYPOS = [
    (manifest(retries=3), "spec", "retries", "retry"),
    (manifest(concurency=2), "spec", "concurency", "concurrency"),
    (manifest(retry={"attempt": 3}), "spec.retry", "attempt", "attempts"),
    (manifest(retry={"backoff": {"intial": 1}}), "spec.retry.backoff", "intial", "initial"),
    (manifest(timeOut=5), "spec", "timeOut", "timeout"),
    ({**manifest(), "metdata": {}}, "(top level)", "metdata", "metadata"),
    ({**manifest(), "metadata": {"name": "hello", "autor": "me"}}, "metadata", "autor", "author"),
]


@pytest.mark.parametrize(("data", "where", "typo", "meant"), TYPOS, ids=[t[2] for t in TYPOS])
def test_unknown_keys_are_errors_with_the_nearest_known_key(data, where, typo, meant) -> None:
    found = problems(data)
    expected = f"{where}: unknown key {typo!r} (did you mean {meant!r}?)"
    assert any(line.startswith(expected) for line in found), found
    assert all("keys of your own start with 'x-'" in line for line in found)


def test_a_key_like_nothing_known_lists_the_known_keys() -> None:
    [line] = problems(manifest(zzzz=1))
    assert "unknown key 'zzzz' (known keys: hook, type, entrypoint," in line


def test_x_keys_are_the_users_at_any_level_and_cloudstack_keys_are_kept() -> None:
    data = manifest(**{"x-owner": "ops", "details": {"a": "b"}, "customActions": []})
    data["x-notes"] = {"anything": [1, 2]}
    data["metadata"]["x-ticket"] = "OPS-1"
    data["spec"]["retry"] = {"attempts": 2, "x-why": "flaky BMC"}
    loaded = Manifest.model_validate(data)
    assert loaded.spec.retry.attempts == 2
    assert loaded.spec.model_extra == {"details": {"a": "b"}, "customActions": []}


def test_snake_case_names_still_work() -> None:
    loaded = Manifest.model_validate(manifest(failure_policy="fail-open", exit_codes=None))
    assert loaded.spec.failure_policy is not None


@pytest.mark.parametrize(
    ("text", "hook"),
    [
        ("Orchestrator", HookType.ORCHESTRATOR),
        ("OrchestratorExtension", HookType.ORCHESTRATOR),
        ("NetworkOrchestrator", HookType.NETWORK_ORCHESTRATOR),
        ("network-orchestrator", HookType.NETWORK_ORCHESTRATOR),
        ("networkorchestrator", HookType.NETWORK_ORCHESTRATOR),
        ("two_factor", HookType.TWO_FACTOR),
        ("Event", HookType.EVENT),
    ],
)
def test_hooks_in_csext_or_cloudstack_spelling(text: str, hook: HookType) -> None:
    assert parse_hook(text) is hook
    assert Manifest.model_validate(manifest(hook=text)).spec.hook_type is hook


def test_an_unknown_hook_names_the_nearest_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'orchestrator'\? use one of event,"):
        parse_hook("orchestrater")
    [line] = problems({**manifest(), "spec": {"type": "Orkestrator", "entrypoint": "run"}})
    assert line.startswith("spec: type: unknown hook 'Orkestrator'")


def test_a_payload_that_does_not_fit_names_each_field_and_its_path() -> None:
    with pytest.raises(ValidationError) as caught:
        EventInput.model_validate({"routing_key": 5, "category": ["x"], "body": {}, "type": {}})
    line = summarize_validation_error(caught.value, limit=2)
    assert line.startswith("routing_key: Input should be a valid string (got 5); category: ")
    assert line.endswith(" more")
