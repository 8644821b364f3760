"""Pieces every hook shares: exit-code meanings, failure policies, event filters, result base.

These live apart from the per-hook models because the manifest (`schemas/manifest.py`) uses
them too: `spec.exitCodes`, `spec.failurePolicy` and `spec.events.filters`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

ExitCode = Annotated[int, Field(ge=0, le=255)]


class Meaning(StrEnum):
    """What an exit code means to the hook."""

    SUCCESS = "success"
    """The extension answered yes / did it (2FA passed, authenticated, action done)."""
    FAILURE = "failure"
    """The extension answered no / could not do it."""
    RETRY = "retry"
    """A transient failure: the retry policy may run it again."""
    AUTH_FAILURE = "auth-failure"
    """oob-management: the BMC refused the credentials (CloudStack's `hasAuthFailure`)."""


class FailurePolicy(StrEnum):
    """What the caller gets when the extension times out, crashes or prints garbage."""

    FAIL_CLOSED = "fail-closed"
    """The hook's deny result (authentication, 2FA)."""
    FAIL_OPEN = "fail-open"
    """The hook's neutral result (planner: no preference; domain XML: the original XML)."""
    ERROR = "error"
    """No result, an error (orchestration: CloudStack shows the failure)."""


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ExitCodes(_Camel):
    """`spec.exitCodes`: which exit codes mean what, overriding the hook's defaults.

    Codes not listed keep the hook's default meaning; any code no one lists is a failure.
    `pass`/`fail` are accepted for `success`/`failure`. Example (a 2FA checker written the
    other way round): `exitCodes: {success: [1], failure: [0]}`.
    """

    success: list[ExitCode] = Field(default=[], validation_alias=AliasChoices("success", "pass"))
    failure: list[ExitCode] = Field(default=[], validation_alias=AliasChoices("failure", "fail"))
    retry: list[ExitCode] = []
    auth_failure: list[ExitCode] = Field(
        default=[], validation_alias=AliasChoices("authFailure", "auth_failure", "auth-failure")
    )

    @model_validator(mode="after")
    def _no_code_twice(self) -> ExitCodes:
        seen: dict[int, str] = {}
        for meaning, codes in self.as_lists().items():
            for code in codes:
                if code in seen:
                    raise ValueError(
                        f"exit code {code} is listed as both {seen[code]!r} and {meaning!r}: "
                        "give each code one meaning"
                    )
                seen[code] = meaning
        return self

    def as_lists(self) -> dict[Meaning, list[int]]:
        return {
            Meaning.SUCCESS: self.success,
            Meaning.FAILURE: self.failure,
            Meaning.RETRY: self.retry,
            Meaning.AUTH_FAILURE: self.auth_failure,
        }

    def as_map(self) -> dict[int, Meaning]:
        return {code: meaning for meaning, codes in self.as_lists().items() for code in codes}


class EventFilters(_Camel):
    """`spec.events.filters`: which CloudStack events an event extension wants.

    Categories, types and resource types become routing-key bindings (the broker filters);
    the rest is checked by the worker on each event (`csext.handlers.event.accepts`).
    Every list is "any of"; an empty list means "any". All given filters must match.
    """

    categories: list[str] = []
    """ActionEvent, AlertEvent, UsageEvent, ResourceStateEvent, AsyncJobEvent."""
    types: list[str] = []
    """Event types as CloudStack names them: `VM.START`, `ALERT.MEMORY`, FSM events such as
    `OperationSucceeded` (dots allowed; they are escaped to `-` in bindings)."""
    resource_types: list[str] = []
    """`VirtualMachine`, `Volume`, ... (UsageEvent uses Java class names such as
    `com.cloud.vm.VirtualMachine`)."""
    resource_uuids: list[str] = []
    old_states: list[str] = []
    """ResourceStateEvent `old-state` (case-insensitive)."""
    new_states: list[str] = []
    """ResourceStateEvent `new-state` (case-insensitive)."""
    phase: Literal["pre", "post"] | None = None
    """ResourceStateEvent: `pre` = preStateTransitionEvent, `post` = postStateTransitionEvent."""
    statuses: list[str] = []
    """The body's `status` (ActionEvent: Created/Scheduled/Started/Completed), case-insensitive."""
    body: dict[str, str] = {}
    """Body keys that must have exactly these (string) values, e.g. `{entity: VirtualMachine}`."""

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        known = ("ActionEvent", "AlertEvent", "UsageEvent", "ResourceStateEvent", "AsyncJobEvent")
        for category in value:
            if category not in known:
                raise ValueError(f"unknown category {category!r}: use one of {', '.join(known)}")
        return value

    @property
    def empty(self) -> bool:
        return self == EventFilters()


class HookInput(BaseModel):
    """Base of every hook's input model: unknown keys are kept (CloudStack adds fields)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    secret_fields: ClassVar[frozenset[str]] = frozenset()
    """Field names (by alias) whose values are credentials: never logged, scrubbed from records."""


class HookResult(BaseModel):
    """Base of every hook's result model."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    fallback: str | None = None
    """Set when this is not the extension's answer but the failure policy's: why
    (`timeout`, `crashed`, `spawn-failed`, `failed`, `invalid-output`)."""
    warnings: list[str] = []
    """Things the extension did that work but deserve a fix (logged, shown by `csext test`)."""


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True)
