"""The `two-factor` hook: check a 2FA code, or set up a user's 2FA secret.

`check`: passed only when the exit code means success and a JSON answer (if any) does not say
`"passed": false`. Exit codes are the extension's to declare: an extension written with exit
1 = "2FA passed" and 0 = "failed" works with `spec.exitCodes: {success: [1], failure: [0]}`
(the bundled totp-2fa does exactly that); the default is POSIX (0 = passed).

`setup`: the secret is `secret` (or `key`) of a JSON answer, else the first line of stdout. It
is returned in the result and masked in run records (`Interpretation.secrets`).

Failure policy: fail-closed — on timeout, crash or garbage `check` answers "not passed" and
`setup` answers an error; `error` is also allowed.
"""

from __future__ import annotations

from typing import Any

from csext.schemas.hooks.common import FailurePolicy, HookResult, Meaning
from csext.schemas.hooks.two_factor import ACTIONS, TwoFactorInput, TwoFactorResult
from csext.schemas.manifest import HookType
from csext.schemas.run import RunResult

from .base import Fallback, HookDefaults, TypedHandler, failed, stdout_object, stdout_text, truthy


class TwoFactorHandler(TypedHandler):
    hook = HookType.TWO_FACTOR
    defaults = HookDefaults(
        timeout=10.0,
        attempts=1,
        failure_policies=(FailurePolicy.FAIL_CLOSED, FailurePolicy.ERROR),
    )
    input_model = TwoFactorInput
    result_model = TwoFactorResult
    actions = ACTIONS

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        answer = stdout_object(run) or {}
        message = answer.get("message") or answer.get("error")
        if action == "setup":
            if meaning != Meaning.SUCCESS:
                raise failed(meaning, run, answer)
            return TwoFactorResult(secret=setup_secret(run, answer), message=message)
        if meaning not in (Meaning.SUCCESS, Meaning.FAILURE):
            raise failed(meaning, run, answer)
        passed = meaning == Meaning.SUCCESS and truthy(answer.get("passed", True))
        return TwoFactorResult(passed=passed, message=message)

    def fallback_result(
        self, action: str, payload: Any, policy: FailurePolicy
    ) -> HookResult | None:
        return TwoFactorResult(passed=False) if action == "check" else None

    def result_secrets(self, result: HookResult | None) -> tuple[str, ...]:
        secret = getattr(result, "secret", None)
        return (secret,) if secret else ()


def setup_secret(run: RunResult, answer: dict[str, Any]) -> str:
    secret = answer.get("secret") or answer.get("key")
    if secret is None and not answer:
        lines = stdout_text(run).splitlines()
        secret = lines[0].strip() if lines else None
    if not secret:
        raise Fallback("invalid-output", 'setup must print the secret, or {"secret": "..."}')
    return str(secret)


HANDLER = TwoFactorHandler()
