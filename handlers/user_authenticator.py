"""The `user-authenticator` hook: check a username and password (CloudStack's UserAuthenticator).

Authenticated only when both agree: the exit code means success, and a JSON answer (if any)
does not say `"authenticated": false`. A denial counts towards the account's lockout unless the
answer says `"count_failed_attempt": false` (or an `action_on_failure` other than
INCREMENT_INCORRECT_LOGIN_ATTEMPT_COUNT) — e.g. "no such user here, let the next
authenticator try".

Failure policy: fail-closed — on timeout, crash or garbage the answer is "not authenticated"
and the attempt is not counted (it is not the user's fault); `error` is also allowed.
"""

from __future__ import annotations

from typing import Any

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.user_authenticator import UserAuthenticatorInput, UserAuthenticatorResult
from csext.schemas.manifest import HookType
from csext.schemas.run import RunResult

from .base import HookDefaults, TypedHandler, failed, stdout_object, truthy

INCREMENT = "INCREMENT_INCORRECT_LOGIN_ATTEMPT_COUNT"


class UserAuthenticatorHandler(TypedHandler):
    hook = HookType.USER_AUTHENTICATOR
    defaults = HookDefaults(
        timeout=10.0,
        attempts=1,
        failure_policies=(FailurePolicy.FAIL_CLOSED, FailurePolicy.ERROR),
    )
    input_model = UserAuthenticatorInput
    result_model = UserAuthenticatorResult
    actions = ("authenticate",)

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        answer = stdout_object(run) or {}
        if meaning not in (Meaning.SUCCESS, Meaning.FAILURE):
            raise failed(meaning, run, answer)
        said_yes = truthy(answer.get("authenticated", True))
        message = answer.get("message") or answer.get("error")
        if meaning == Meaning.SUCCESS and said_yes:
            return UserAuthenticatorResult(authenticated=True, message=message)
        return UserAuthenticatorResult(
            authenticated=False, count_failed_attempt=count_attempt(answer), message=message
        )

    def fallback_result(
        self, action: str, payload: Any, policy: FailurePolicy
    ) -> HookResult | None:
        return UserAuthenticatorResult(authenticated=False, count_failed_attempt=False)


def count_attempt(answer: dict[str, Any]) -> bool:
    if "count_failed_attempt" in answer:
        return truthy(answer["count_failed_attempt"])
    if "action_on_failure" in answer:
        return str(answer["action_on_failure"]).upper() == INCREMENT
    return True


HANDLER = UserAuthenticatorHandler()
