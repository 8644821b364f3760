"""The `oob-management` hook: power a host through its BMC (on|off|cycle|reset|soft|status).

Answer, in order of preference: JSON `{"power_state": "On", "auth_failure": false}` or the
ipmitool text CloudStack's own driver parses (`Chassis Power is on`). An auth failure is told
apart from other failures by the exit code 77 (EX_NOPERM; overridable as `auth-failure` in
`spec.exitCodes`), by `"auth_failure": true`, or by ipmitool's `RAKP 2 HMAC is invalid`.
A successful power operation that prints no state is taken to reach the state it implies
(on/cycle/reset → On, off/soft → Off).

`user-list` answers `{"users": [{"id": "2", "name": "admin"}, ...]}` or ipmitool's own
`user list` table (a header line with `ID` and `Name`); `user-set-password` answers like a
power operation (exit 0 = done). Both leave the power state Unknown.

Failure policy: fail-open — the neutral answer is power state Unknown with success false
(what CloudStack's driver reports when ipmitool fails); `error` is also allowed.
"""

from __future__ import annotations

from typing import Any

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.oob_management import (
    ACTIONS,
    OobInput,
    OobPowerState,
    OobResult,
    OobUser,
)
from csext.schemas.manifest import HookType
from csext.schemas.run import RunResult

from .base import (
    Fallback,
    HookDefaults,
    TypedHandler,
    failed,
    stdout_object,
    stdout_text,
    truthy,
)

AUTH_FAILURE_TEXT = "RAKP 2 HMAC is invalid"
IMPLIED_STATE: dict[str, OobPowerState] = {
    "on": "On",
    "cycle": "On",
    "reset": "On",
    "off": "Off",
    "soft": "Off",
}
_STATES: dict[str, OobPowerState] = {
    "on": "On",
    "off": "Off",
    "disabled": "Disabled",
    "unknown": "Unknown",
    "chassis power is on": "On",
    "chassis power is off": "Off",
}


class OobManagementHandler(TypedHandler):
    hook = HookType.OOB_MANAGEMENT
    defaults = HookDefaults(
        timeout=60.0,
        attempts=1,
        failure_policies=(FailurePolicy.FAIL_OPEN, FailurePolicy.ERROR),
        exit_codes={0: Meaning.SUCCESS, 77: Meaning.AUTH_FAILURE},
    )
    input_model = OobInput
    result_model = OobResult
    actions = ACTIONS
    read_only_actions = frozenset({"status"})

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        answer = stdout_object(run)
        text = stdout_text(run)
        auth = meaning == Meaning.AUTH_FAILURE or (answer and truthy(answer.get("auth_failure")))
        if auth or AUTH_FAILURE_TEXT in text or AUTH_FAILURE_TEXT in run.stderr_tail(4096):
            reason = (answer or {}).get("error") or text or "authentication failed"
            return OobResult(success=False, auth_failure=True, error=str(reason)[-300:])
        if meaning != Meaning.SUCCESS:
            raise failed(meaning, run, answer)
        if action == "user-list":
            return OobResult(users=users_of(answer, text))
        if action == "user-set-password":
            message = (answer or {}).get("message") if answer else text
            return OobResult(result=str(message) if message else None)
        state = state_of(answer, text)
        if state is None:
            state = IMPLIED_STATE.get(action, "Unknown")
        message = (answer or {}).get("message") if answer else text
        return OobResult(power_state=state, result=str(message) if message else None)

    def fallback_result(
        self, action: str, payload: Any, policy: FailurePolicy
    ) -> HookResult | None:
        return OobResult(success=False, power_state="Unknown")


def state_of(answer: dict[str, Any] | None, text: str) -> OobPowerState | None:
    """The power state printed, or None when none was."""
    if answer is not None:
        value = answer.get("power_state", answer.get("powerstate", answer.get("state")))
        if value is None:
            return None
        return _STATES.get(str(value).strip().lower(), "Unknown")
    if not text:
        return None
    return _STATES.get(text.splitlines()[-1].strip().lower())


HANDLER = OobManagementHandler()


def users_of(answer: dict[str, Any] | None, text: str) -> list[OobUser]:
    """`user-list` output: JSON `users`, or ipmitool's table; Fallback when neither."""
    if answer is not None and isinstance(answer.get("users"), list):
        try:
            return [OobUser.model_validate(_user_fields(u)) for u in answer["users"]]
        except (ValueError, TypeError) as exc:
            raise Fallback("invalid-output", f"user-list: bad `users` entry: {exc}") from None
    users = users_from_table(text)
    if users is None:
        raise Fallback(
            "invalid-output",
            'user-list must print {"users": [{"id": "2", "name": "admin"}]} or an ipmitool '
            "`user list` table (header line with ID and Name)",
        )
    return users


def _user_fields(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    fields = {str(k).lower(): v for k, v in entry.items()}
    if isinstance(fields.get("id"), int):
        fields["id"] = str(fields["id"])
    return {k: fields[k] for k in ("id", "name", "privilege", "enabled") if k in fields}


def users_from_table(text: str) -> list[OobUser] | None:
    """ipmitool's table, read as CloudStack reads it: columns split on spaces."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    legends = lines[0].split()
    if "ID" not in legends or "Name" not in legends:
        return None
    id_index, name_index = legends.index("ID"), legends.index("Name")
    users = []
    for line in lines[1:]:
        words = line.split()
        if len(words) > max(id_index, name_index):
            users.append(OobUser(id=words[id_index], name=words[name_index]))
    return users
