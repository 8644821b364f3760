"""The `oob-management` hook: CloudStack's OutOfBandManagementDriver power command.

CloudStack's command carries options DRIVER, ADDRESS, PORT, USERNAME, PASSWORD and a timeout;
the operation is the action (on, off, cycle, reset, soft, status). Option names are accepted
in either case, at the top level or under `options`. The password never leaves the payload
file: it is a secret field, masked in every record and log line.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from .common import HookInput, HookResult

OPERATIONS = ("on", "off", "cycle", "reset", "soft", "status")
OobPowerState = Literal["On", "Off", "Unknown", "Disabled"]


class OobInput(HookInput):
    secret_fields = frozenset({"password"})

    address: str
    port: int | None = None
    username: str | None = None
    password: str | None = None
    driver: str | None = None
    timeout: int | None = None
    """Seconds CloudStack gives the operation."""

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


class OobResult(HookResult):
    success: bool = True
    power_state: OobPowerState = "Unknown"
    auth_failure: bool = False
    """The BMC refused the credentials (CloudStack raises an AuthError event)."""
    result: str | None = None
    error: str | None = None
