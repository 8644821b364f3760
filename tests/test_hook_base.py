"""Shared hook machinery: exit-code meanings, failure policies, secrets, registry, schemas."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from csext.cli.app import app
from csext.handlers import all_handlers, get_handler, json_schemas
from csext.handlers.base import exit_meanings, find_secrets, scrub
from csext.schemas.hooks.common import Meaning
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult


def spec(hook: str, **extra) -> Spec:
    return Spec.model_validate({"hook": hook, "entrypoint": "x", **extra})


def test_every_hook_has_its_own_module_handler():
    handlers = all_handlers()
    assert set(handlers) == set(HookType)
    for hook, handler in handlers.items():
        assert handler.hook == hook
        assert type(handler).__module__ == f"csext.handlers.{hook.value.replace('-', '_')}"


def test_default_exit_codes_are_posix():
    meanings = exit_meanings(spec("two-factor"), get_handler(HookType.TWO_FACTOR).defaults)
    assert meanings[0] == Meaning.SUCCESS
    assert meanings[75] == Meaning.RETRY
    assert 1 not in meanings  # anything unlisted is a failure


def test_a_given_success_list_replaces_the_default_one():
    meanings = exit_meanings(
        spec("two-factor", exitCodes={"success": [1]}), get_handler(HookType.TWO_FACTOR).defaults
    )
    assert meanings == {1: Meaning.SUCCESS, 75: Meaning.RETRY}  # 0 no longer means success


def test_pass_fail_spelling_and_retry_override():
    s = spec("event", exitCodes={"pass": [0, 3], "fail": [1], "retry": [9]})
    meanings = exit_meanings(s, get_handler(HookType.EVENT).defaults)
    assert meanings == {
        0: Meaning.SUCCESS,
        3: Meaning.SUCCESS,
        1: Meaning.FAILURE,
        9: Meaning.RETRY,
    }


def test_one_code_with_two_meanings_is_refused():
    with pytest.raises(ValueError, match="exit code 1 is listed as both"):
        spec("two-factor", exitCodes={"success": [1], "failure": [1]})


def test_retry_exit_code_sets_retry_and_keeps_policy_result():
    handler = get_handler(HookType.DEPLOYMENT_PLANNER)
    out = handler.interpret("order-clusters", RunResult(exit_code=75), spec("deployment-planner"))
    assert out.retry is True
    assert out.outcome == Outcome.FAILED
    assert out.result["no_preference"] is True and out.result["fallback"] == "retry"


def test_unsupported_policy_falls_back_to_the_hook_default():
    # fail-open is never allowed to let a login through
    handler = get_handler(HookType.USER_AUTHENTICATOR)
    s = spec("user-authenticator", failurePolicy="fail-open")
    out = handler.interpret("authenticate", RunResult(exit_code=None, timed_out=True), s)
    assert out.result["authenticated"] is False


def test_error_policy_gives_no_result():
    handler = get_handler(HookType.DEPLOYMENT_PLANNER)
    s = spec("deployment-planner", failurePolicy="error")
    out = handler.interpret("order-clusters", RunResult(exit_code=None, timed_out=True), s)
    assert out.result is None and out.error.kind == "timeout"


def test_find_secrets_and_scrub():
    payload = {
        "username": "alice",
        "password": "hunter22",
        "nested": {"apiKey": "abcd-1234", "items": [{"token": "tok-5678"}]},
        "request_parameters": {"password": ["hunter22"]},
        "short": {"secret": "ab"},
    }
    secrets = find_secrets(payload)
    assert set(secrets) == {"hunter22", "abcd-1234", "tok-5678"}
    assert scrub("user alice pw hunter22 key abcd-1234", secrets) == "user alice pw *** key ***"


def test_bad_input_error_names_the_field_but_never_a_secret_value():
    handler = get_handler(HookType.USER_AUTHENTICATOR)
    with pytest.raises(ValueError) as info:
        handler.payload_bytes("authenticate", {"username": 5, "password": ["hunter22"]}, None)
    message = str(info.value)
    assert "password" in message and "username" in message
    assert "hunter22" not in message


def test_unknown_action_is_a_bad_request():
    with pytest.raises(ValueError, match="no action 'frobnicate'"):
        get_handler(HookType.OOB_MANAGEMENT).payload_bytes("frobnicate", {"address": "a"}, None)


def test_hook_defaults_are_used_when_the_manifest_is_silent():
    from csext.handlers.base import effective_attempts, effective_timeout

    defaults = get_handler(HookType.TWO_FACTOR).defaults
    assert effective_timeout(spec("two-factor"), defaults) == defaults.timeout
    assert effective_timeout(spec("two-factor", timeout=3), defaults) == 3
    assert effective_attempts(spec("two-factor"), defaults) == 1
    assert effective_attempts(spec("two-factor", retry={"attempts": 4}), defaults) == 4


def test_json_schemas_cover_every_hook():
    for hook in HookType:
        schemas = json_schemas(hook)
        assert schemas["input"]["$schema"].startswith("https://json-schema.org/")
        assert (schemas["result"] is None) == (hook == HookType.EVENT)
    two_factor = json_schemas(HookType.TWO_FACTOR)
    assert "user_account" in two_factor["input"]["properties"]
    assert "passed" in two_factor["result"]["properties"]


def test_schema_cli_prints_one_hook_and_writes_all(tmp_path):
    runner = CliRunner()
    one = runner.invoke(app, ["schema", "oob-management"])
    assert one.exit_code == 0, one.output
    printed = orjson.loads(one.stdout)
    assert printed["hook"] == "oob-management"
    assert "power_state" in printed["result"]["properties"]

    written = runner.invoke(app, ["schema", "--all", "--output", str(tmp_path)])
    assert written.exit_code == 0, written.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "domain-xml.result.json" in names and "event.input.json" in names
    assert "event.result.json" not in names
    assert len(names) == 2 * len(HookType) - 1

    bad = runner.invoke(app, ["schema", "nope"])
    assert bad.exit_code == 2 and "unknown hook" in bad.output
