"""The `oob-management` hook: CloudStack's OutOfBandManagementDriver power command.

CloudStack's command carries options DRIVER, ADDRESS, PORT, USERNAME, PASSWORD and a timeout;
the operation is the action (on, off, cycle, reset, soft, status). Option names are accepted
in either case, at the top level or under `options`. The password never leaves the payload
file: it is a secret field, masked in every record and log line.

Besides the power operations, two user actions let a bridge change the BMC password the way
CloudStack's ipmitool driver does (`user list`, then `user set password <id> <new>`):
`user-list` answers the BMC's users (`users`), `user-set-password` takes `user_id` and
`new_password` (also a secret field).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from .common import HookInput, HookResult

OPERATIONS = ("on", "off", "cycle", "reset", "soft", "status")
USER_ACTIONS = ("user-list", "user-set-password")
ACTIONS = OPERATIONS + USER_ACTIONS
OobPowerState = Literal["On", "Off", "Unknown", "Disabled"]


class OobInput(HookInput):
    secret_fields = frozenset({"password", "new_password"})

    address: str
    port: int | None = None
    username: str | None = None
    password: str | None = None
    driver: str | None = None
    timeout: int | None = None
    """Seconds CloudStack gives the operation."""
    user_id: str | None = None
    """`user-set-password`: the BMC user's id, as `user-list` answered it."""
    new_password: str | None = None
    """`user-set-password`: the password to set (secret)."""

    @field_validator("user_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _user_fields(self, info: ValidationInfo) -> OobInput:
        action = (info.context or {}).get("action") if isinstance(info.context, dict) else None
        if action == "user-set-password" and (not self.user_id or self.new_password is None):
            raise ValueError("user-set-password needs user_id and new_password")
        return self

    @model_validator(mode="before")
    @classmethod
    def _cloudstack_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        flat = dict(data)
        options = flat.pop("options", None)
        if isinstance(options, dict):
            flat = {**options, **flat}
        return {str(key).lower(): value for key, value in flat.items()}


class OobUser(BaseModel):
    """One BMC user, as `user-list` answers it (ipmitool's `user list` row)."""

    id: str
    name: str
    privilege: str | None = None
    """ipmitool's `Channel Priv Limit`, e.g. ADMINISTRATOR, OPERATOR, USER."""
    enabled: bool | None = None


class OobResult(HookResult):
    success: bool = True
    power_state: OobPowerState = "Unknown"
    auth_failure: bool = False
    """The BMC refused the credentials (CloudStack raises an AuthError event)."""
    result: str | None = None
    error: str | None = None
    users: list[OobUser] | None = None
    """`user-list`: the BMC's users (left out of power results)."""

    @model_serializer(mode="wrap")
    def _without_users(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("users") is None:
            data.pop("users", None)
        return data
