"""The `user-authenticator` hook: CloudStack's UserAuthenticator.authenticate().

CloudStack tries its authenticators in order; each answers (authenticated?, whether to count
the failed attempt towards the account's lockout: INCREMENT_INCORRECT_LOGIN_ATTEMPT_COUNT).
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from .common import HookInput, HookResult


class UserAuthenticatorInput(HookInput):
    secret_fields = frozenset({"password"})

    username: str
    password: str
    domain_id: int | str | None = None
    """CloudStack's domain id (a number in the Java API, a UUID in some callers)."""
    domain: str | None = None
    """The domain path, e.g. `/` or `/ROOT/customers`, when the caller knows it."""
    request_parameters: dict[str, list[str]] = {}
    """The login request's parameters (CloudStack: Map<String, Object[]>), values as lists."""

    @field_validator("request_parameters", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): [str(i) for i in v] if isinstance(v, list | tuple) else [str(v)]
                for k, v in value.items()
            }
        return value


class UserAuthenticatorResult(HookResult):
    authenticated: bool
    count_failed_attempt: bool = False
    """True: CloudStack counts this failure towards the account's lockout."""
    message: str | None = None
