"""The `two-factor` hook: CloudStack's UserTwoFactorAuthenticator (check2FA, setup2FAKey)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from .common import HookInput, HookResult

ACTIONS = ("check", "setup")


class UserAccount(BaseModel):
    """The fields of CloudStack's UserAccount a 2FA provider uses; others are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)

    id: str | None = None
    uuid: str | None = None
    username: str
    account_name: str | None = None
    domain_id: str | None = None
    email: str | None = None
    user_2fa_key: str | None = Field(default=None, alias="key")
    """The secret stored by `setup` (CloudStack's `key2FA`), given back on every `check`."""
    user_2fa_provider: str | None = Field(default=None, alias="provider")


class TwoFactorInput(HookInput):
    secret_fields = frozenset({"code", "key", "user_2fa_key", "secret"})

    user_account: UserAccount
    code: str | None = None
    """`check`: the code the user typed."""

    @model_validator(mode="after")
    def _code_for_check(self, info: ValidationInfo) -> TwoFactorInput:
        if (info.context or {}).get("action") == "check" and not self.code:
            raise ValueError("check needs `code`: the code the user typed")
        return self


class TwoFactorResult(HookResult):
    passed: bool | None = None
    """`check`: the code is valid."""
    secret: str | None = None
    """`setup`: the secret or provisioning string shown to the user (masked in records)."""
    message: str | None = None
