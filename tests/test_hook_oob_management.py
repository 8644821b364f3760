"""The oob-management hook: power operations, power states, auth failures, secrets."""

from __future__ import annotations

import orjson
import pytest

from csext.handlers import get_handler
from csext.schemas.manifest import HookType, Spec
from csext.schemas.run import Outcome, RunResult

HANDLER = get_handler(HookType.OOB_MANAGEMENT)
SPEC = Spec.model_validate({"hook": "oob-management", "entrypoint": "x"})


def interpret(action, stdout="", code=0, stderr="", spec=SPEC):
    run = RunResult(exit_code=code, stdout=stdout.encode(), stderr=stderr.encode())
    return HANDLER.interpret(action, run, spec)


def test_cloudstack_option_names_are_accepted_and_the_password_is_secret():
    payload = {
        "options": {
            "ADDRESS": "10.0.0.5",
            "PORT": "623",
            "USERNAME": "root",
            "PASSWORD": "calvin-pw",
        }
    }
    written = orjson.loads(HANDLER.payload_bytes("STATUS", payload, SPEC))
    assert written["address"] == "10.0.0.5" and written["port"] == 623
    assert "calvin-pw" in HANDLER.secret_values("status", payload)
    with pytest.raises(ValueError, match="address"):
        HANDLER.payload_bytes("on", {"username": "root"}, SPEC)


@pytest.mark.parametrize(
    ("action", "stdout", "state"),
    [
        ("status", "Chassis Power is on", "On"),
        ("status", "Chassis Power is off\n", "Off"),
        ("status", '{"power_state":"on"}', "On"),
        ("status", '{"status":"success","power_state":"Disabled"}', "Disabled"),
        ("status", '{"power_state":"weird"}', "Unknown"),
        ("status", "", "Unknown"),
        ("on", "", "On"),
        ("cycle", "Chassis Power Control: Cycle", "On"),
        ("soft", '{"status":"success"}', "Off"),
        ("off", '{"power_state":"Off"}', "Off"),
    ],
)
def test_power_states(action, stdout, state):
    out = interpret(action, stdout)
    assert out.outcome == Outcome.SUCCESS
    assert out.result["power_state"] == state and out.result["success"] is True


@pytest.mark.parametrize(
    ("stdout", "code", "stderr"),
    [
        ("", 77, ""),
        ('{"status":"error","auth_failure":true}', 1, ""),
        ("", 1, "Error: Unable to establish IPMI v2 / RMCP+ session\nRAKP 2 HMAC is invalid"),
    ],
)
def test_auth_failure_is_told_apart(stdout, code, stderr):
    out = interpret("status", stdout, code, stderr)
    assert out.outcome == Outcome.FAILED
    assert out.result["auth_failure"] is True and out.result["success"] is False
    assert out.result["power_state"] == "Unknown" and out.error is None


def test_auth_failure_exit_code_is_overridable():
    spec = Spec.model_validate(
        {"hook": "oob-management", "entrypoint": "x", "exitCodes": {"authFailure": [5]}}
    )
    assert interpret("on", "", 5, spec=spec).result["auth_failure"] is True
    assert interpret("on", "", 77, spec=spec).result is not None  # 77 is now a plain failure
    assert interpret("on", "", 77, spec=spec).result["auth_failure"] is False


def test_other_failures_are_unknown_fail_open():
    out = interpret("on", '{"status":"error","error":"BMC busy"}', 1)
    assert out.result == {"fallback": "failed", "warnings": [], "success": False,
                          "power_state": "Unknown", "auth_failure": False, "result": None, "error": None}  # fmt: skip  # noqa: E501
    assert "BMC busy" in out.error.message
    timeout = HANDLER.interpret("status", RunResult(exit_code=None, timed_out=True), SPEC)
    assert timeout.result["power_state"] == "Unknown" and timeout.outcome == Outcome.TIMEOUT
