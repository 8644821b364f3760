"""One test case of an extension: `<extension>/tests/<case>.yaml`, run by `csext test`.

    description: a VM that started is logged
    action: ResourceStateEvent          # argv[1]
    payloadFile: payloads/start.json     # relative to tests/; or `payload:` inline
    routingKey: management-server.ResourceStateEvent.OperationSucceeded.VirtualMachine.x
                                         # event cases only: payload is then the raw body
    timeout: 10                          # optional, default spec.timeout
    env: {DRY_RUN: "1"}                  # optional, added to the run's environment
    expect:                              # every key optional; default {outcome: success}
      outcome: success                   # success | failed | timeout | error
      exitCode: 0
      stdoutContains: "ok"               # a string or a list of strings
      stderrContains: []
      stdoutJson: {status: success}      # stdout parsed as JSON contains this (subset)
      result: {powerState: "On"}         # the hook's typed result contains this (subset)
      retry: false                       # the hook's retry decision

"Contains (subset)": a mapping matches when every key it names matches recursively; lists and
scalars must be equal.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .run import Outcome


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Expect(_Model):
    outcome: Outcome | None = None
    exit_code: int | None = None
    stdout_contains: list[str] = []
    stderr_contains: list[str] = []
    stdout_json: Any = None
    result: Any = None
    retry: bool | None = None

    @field_validator("stdout_contains", "stderr_contains", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_success(self) -> Expect:
        if not self.model_fields_set:
            object.__setattr__(self, "outcome", Outcome.SUCCESS)
        return self


class TestCase(_Model):
    __test__ = False  # not a pytest class

    description: str = ""
    action: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """argv[1]; for an event case it defaults to the category of `routingKey`."""
    routing_key: str | None = None
    """Event cases: the CloudStack routing key; `payload` is then the event body as
    CloudStack publishes it, and the runner builds the event payload the worker would."""
    payload: Any = None
    payload_file: str | None = None
    timeout: Annotated[float, Field(gt=0, le=86400)] | None = None
    env: dict[str, str] = {}
    expect: Expect = Expect(outcome=Outcome.SUCCESS)

    @model_validator(mode="after")
    def _one_payload(self) -> TestCase:
        if self.payload is not None and self.payload_file is not None:
            raise ValueError("give either payload (inline) or payloadFile, not both")
        if self.action is None and self.routing_key is None:
            raise ValueError("action is required (or routingKey, for an event case)")
        return self

    @field_validator("payload_file")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError(
                "payloadFile must be a path relative to the tests/ folder, without '..', "
                "e.g. payloads/start.json"
            )
        return value
