"""user-authenticator and two-factor: fail-closed answers, exit-code maps (exit 1 = 2FA passed)."""

from __future__ import annotations

import orjson
import pytest

from csext.handlers import get_handler
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult

AUTH = get_handler(HookType.USER_AUTHENTICATOR)
TWO_FA = get_handler(HookType.TWO_FACTOR)
AUTH_SPEC = Spec.model_validate({"hook": "user-authenticator", "entrypoint": "x"})
POSIX_2FA = Spec.model_validate({"hook": "two-factor", "entrypoint": "x"})
INVERTED_2FA = Spec.model_validate(
    {"hook": "two-factor", "entrypoint": "x", "exitCodes": {"success": [1], "failure": [0]}}
)
ACCOUNT = {"username": "alice", "id": 5, "key": "JBSWY3DPEHPK3PXP"}


def run(code, stdout=""):
    return RunResult(exit_code=code, stdout=stdout.encode())


# --- user-authenticator ----------------------------------------------------------------------


def test_auth_payload_normalises_request_parameters_and_hides_the_password():
    payload = {"username": "alice", "password": "wonderland", "domain_id": 1,
               "request_parameters": {"command": "login", "domain": ["/"]}}  # fmt: skip
    written = orjson.loads(AUTH.payload_bytes("authenticate", payload, AUTH_SPEC))
    assert written["request_parameters"] == {"command": ["login"], "domain": ["/"]}
    assert "wonderland" in AUTH.secret_values("authenticate", payload)


@pytest.mark.parametrize(
    ("code", "stdout", "authenticated", "count"),
    [
        (0, "", True, False),
        (0, '{"authenticated": true}', True, False),
        (0, '{"authenticated": false}', False, True),  # both must agree: fail closed
        (1, "", False, True),
        (1, '{"authenticated": false, "count_failed_attempt": false}', False, False),
        (1, '{"action_on_failure": "INCREMENT_INCORRECT_LOGIN_ATTEMPT_COUNT"}', False, True),
        (1, '{"action_on_failure": null}', False, False),
        (1, '{"authenticated": true}', False, True),
    ],
)
def test_authenticate_answers(code, stdout, authenticated, count):
    out = AUTH.interpret("authenticate", run(code, stdout), AUTH_SPEC)
    assert out.result["authenticated"] is authenticated
    assert out.result["count_failed_attempt"] is count
    assert out.outcome == (Outcome.SUCCESS if code == 0 else Outcome.FAILED)


@pytest.mark.parametrize(
    "raw",
    [
        RunResult(exit_code=None, timed_out=True),
        RunResult(exit_code=-9),
        RunResult(exit_code=None, error="No such file or directory"),
        RunResult(exit_code=75),
    ],
)
def test_auth_fails_closed_on_timeout_crash_and_retry(raw):
    out = AUTH.interpret("authenticate", raw, AUTH_SPEC)
    assert out.result["authenticated"] is False
    assert out.result["count_failed_attempt"] is False  # not the user's fault
    assert out.result["fallback"] is not None and out.error is not None


# --- two-factor ------------------------------------------------------------------------------


def test_check_needs_a_code_and_the_code_is_secret():
    with pytest.raises(ValueError, match="check needs `code`"):
        TWO_FA.payload_bytes("check", {"user_account": ACCOUNT}, POSIX_2FA)
    payload = {"code": "287082", "user_account": ACCOUNT}
    TWO_FA.payload_bytes("check", payload, POSIX_2FA)
    assert {"287082", "JBSWY3DPEHPK3PXP"} <= set(TWO_FA.secret_values("check", payload))
    assert TWO_FA.payload_bytes("setup", {"user_account": ACCOUNT}, POSIX_2FA)


@pytest.mark.parametrize(
    ("spec", "code", "passed"),
    [
        (POSIX_2FA, 0, True),
        (POSIX_2FA, 1, False),
        (INVERTED_2FA, 1, True),  # the talk's convention, declared in the manifest
        (INVERTED_2FA, 0, False),
        (INVERTED_2FA, 2, False),  # unlisted: failure
    ],
)
def test_check_exit_code_maps(spec, code, passed):
    out = TWO_FA.interpret("check", run(code), spec)
    assert out.result["passed"] is passed
    assert out.outcome == (Outcome.SUCCESS if passed else Outcome.FAILED)


def test_check_json_can_only_deny():
    assert (
        TWO_FA.interpret("check", run(0, '{"passed": false}'), POSIX_2FA).result["passed"] is False
    )
    assert (
        TWO_FA.interpret("check", run(1, '{"passed": true}'), POSIX_2FA).result["passed"] is False
    )


@pytest.mark.parametrize(
    "raw",
    [RunResult(exit_code=None, timed_out=True), RunResult(exit_code=-15), RunResult(exit_code=75)],
)
def test_check_fails_closed(raw):
    for spec in (POSIX_2FA, INVERTED_2FA):
        out = TWO_FA.interpret("check", raw, spec)
        assert out.result["passed"] is False and out.error is not None


def test_setup_returns_the_secret_and_marks_it_secret():
    json_out = TWO_FA.interpret(
        "setup", run(1, '{"secret":"JBSWY3DPEHPK3PXP","uri":"otpauth://x"}'), INVERTED_2FA
    )
    assert json_out.result["secret"] == "JBSWY3DPEHPK3PXP"
    assert json_out.secrets == ("JBSWY3DPEHPK3PXP",)
    text_out = TWO_FA.interpret("setup", run(0, "KRSXG5CTMVRXEZLU\n"), POSIX_2FA)
    assert text_out.result["secret"] == "KRSXG5CTMVRXEZLU"
    empty = TWO_FA.interpret("setup", run(0, ""), POSIX_2FA)
    assert empty.result is None and empty.error.kind == "invalid-output"
    failed = TWO_FA.interpret("setup", run(0), INVERTED_2FA)  # 0 = failure for this extension
    assert failed.result is None and failed.error.kind == "failed"
