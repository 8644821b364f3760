"""`extension.yaml`: the manifest of one extension.

A superset of the manifest CloudStack proposed for importing extensions (apiVersion, kind,
metadata, source, spec), so a CloudStack-style manifest validates as is. Field names are
camelCase in YAML (as in CloudStack's proposal) and snake_case in Python.
"""

from __future__ import annotations

import difflib
import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .hooks.common import EventFilters, ExitCodes, FailurePolicy
from .versions import VersionRange

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)
SECRET_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"

API_VERSIONS = ("csext/v1", "cloudstack.apache.org/v1")

USER_KEY_PREFIX = "x-"
"""Keys of your own (notes, tooling) start with `x-`: csext ignores them at any level. Any
other key csext does not know is an error, so a typo (`retries`, `concurency`) is caught
instead of silently meaning the default."""


def known_keys(model: type[BaseModel]) -> list[str]:
    """The YAML spellings a model accepts: its camelCase aliases (and alias choices)."""
    keys = []
    for name, field in model.model_fields.items():
        choices = field.validation_alias
        if isinstance(choices, AliasChoices):
            keys += [c for c in choices.choices if isinstance(c, str)]
        keys.append(field.alias or name)
    return list(dict.fromkeys(keys))


def unknown_key_problem(key: str, known: list[str]) -> str:
    """`unknown key 'retries' (did you mean 'retry'?)`."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return f"unknown key {key!r}{hint}"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
    extra_keys: ClassVar[tuple[str, ...]] = ()
    """Keys accepted and kept as they are besides the fields (other formats' keys)."""

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        """Unknown keys are errors with a suggestion; `x-` keys are the user's and dropped."""
        if not isinstance(data, dict):
            return data
        known = [*known_keys(cls), *cls.extra_keys]
        accepted = {*known, *cls.model_fields}  # populate_by_name: snake_case works too
        unknown = [
            key
            for key in data
            if isinstance(key, str) and key not in accepted and not key.startswith(USER_KEY_PREFIX)
        ]
        if unknown:
            problems = [unknown_key_problem(key, known) for key in unknown]
            raise ValueError(
                "; ".join(problems) + f" (keys of your own start with {USER_KEY_PREFIX!r})"
            )
        return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}


class HookType(StrEnum):
    EVENT = "event"
    ORCHESTRATOR = "orchestrator"
    NETWORK_ORCHESTRATOR = "network-orchestrator"
    OOB_MANAGEMENT = "oob-management"
    USER_AUTHENTICATOR = "user-authenticator"
    TWO_FACTOR = "two-factor"
    DEPLOYMENT_PLANNER = "deployment-planner"
    DOMAIN_XML = "domain-xml"


# CloudStack's `kind` / `spec.type` values and the hook they mean: Extension.Type
# (api/src/main/java/org/apache/cloudstack/extension/Extension.java: Orchestrator, and
# NetworkOrchestrator since PR #13032) and the proposed manifest's `kind: OrchestratorExtension`
# (PR #12102, framework/extensions/src/test/resources/.../util/testmanifest.yaml).
CLOUDSTACK_KINDS = {
    "OrchestratorExtension": HookType.ORCHESTRATOR,
    "Orchestrator": HookType.ORCHESTRATOR,
    "NetworkOrchestratorExtension": HookType.NETWORK_ORCHESTRATOR,
    "NetworkOrchestrator": HookType.NETWORK_ORCHESTRATOR,
}

HOOK_NAMES = ", ".join(h.value for h in HookType)


def parse_hook(text: str) -> HookType:
    """A hook in csext's spelling (`network-orchestrator`) or CloudStack's (`Orchestrator`,
    `NetworkOrchestratorExtension`), in any case; ValueError naming the choices otherwise."""
    if text in CLOUDSTACK_KINDS:
        return CLOUDSTACK_KINDS[text]
    folded = text.strip().lower().replace("_", "-")
    for hook in HookType:
        if folded in (hook.value, hook.value.replace("-", "")):
            return hook
    for kind, hook in CLOUDSTACK_KINDS.items():
        if folded == kind.lower():
            return hook
    close = difflib.get_close_matches(folded, [h.value for h in HookType], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown hook {text!r}: {hint}use one of {HOOK_NAMES}")


class Runtime(StrEnum):
    EXEC = "exec"
    """One process per run: `<entrypoint> <action> <payload-file> <timeout>`."""
    COPROCESS = "coprocess"
    """A warm process speaking one JSON line in, one JSON line out."""


def is_valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


class Metadata(_Model):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    display_name: str | None = None
    description: str = ""
    version: str = "0.1.0"
    maintainer: str | None = None
    author: str | None = None
    homepage: str | None = None
    license: str | None = None
    tags: list[str] = []


class Source(_Model):
    """Where the extension came from (written by `csext install`)."""

    type: str = "local"
    url: str | None = None
    ref: str | None = Field(default=None, validation_alias=AliasChoices("ref", "refs"))
    commit: str | None = None
    subdir: str | None = None


class Entrypoint(_Model):
    """CloudStack's proposal spells the entry point as an object."""

    path: str
    language: str | None = None
    target_dir: str | None = None


class Backoff(_Model):
    initial: Annotated[float, Field(ge=0, le=3600)] = 1.0
    max: Annotated[float, Field(ge=0, le=3600)] = 30.0
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    jitter: Annotated[float, Field(ge=0, le=3600)] = 1.0


class RetryPolicy(_Model):
    attempts: Annotated[int, Field(ge=1, le=100)] = 3
    """Total runs, the first included; 1 means no retry."""
    backoff: Backoff = Backoff()
    max_elapsed: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """Seconds from the first attempt after which no retry starts."""
    retryable_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = [75]
    """75 is EX_TEMPFAIL from sysexits.h."""
    retry_on_timeout: bool = True


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """`30s`, `500ms`, `2m`, `1h` or a number of seconds, as seconds; anything else is left to
    the field's own check (which names it)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration: use seconds (15) or a number with a unit "
                "(500ms, 30s, 2m, 1h)"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=86400)]
"""Seconds; YAML may say `30s`, `500ms`, `2m` or `1h`."""


class CircuitBreakerPolicy(_Model):
    """`spec.circuitBreaker`: stop calling an extension whose backend is down.

    After `failures` failed runs (timeouts, crashes, errors the hook reports) within `window`,
    the breaker opens: for `cooldown`, RPC calls are answered at once with the hook's failure
    policy and events wait in their queue; then one trial run decides (success closes it,
    failure opens it again). Off unless the manifest has this key (docs/reliability.md).
    """

    failures: Annotated[int, Field(ge=1, le=10000)] = 5
    window: Duration = 30.0
    cooldown: Duration = 15.0


class EventBinding(_Model):
    patterns: list[str] = []
    """AMQP topic patterns on CloudStack routing keys,
    e.g. `management-server.ResourceStateEvent.#`."""
    filters: EventFilters = EventFilters()
    """Field filters (category, type, resource type, states, phase...): the narrowest bindings
    are derived from them and the rest is checked per event (csext.handlers.event)."""

    @field_validator("patterns")
    @classmethod
    def _patterns_are_topic_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or any(not word for word in pattern.split(".")):
                raise ValueError(
                    f"{pattern!r} is not a topic pattern: use dot-separated words, "
                    "'*' for one word and '#' for any number, "
                    "e.g. 'management-server.ResourceStateEvent.#'"
                )
        return value

    @model_validator(mode="after")
    def _phase_only_for_vm_state_events(self) -> EventBinding:
        """`phase` needs filters that match VirtualMachine state events only: CloudStack's
        other state listeners put no pre/post `status` in the body (UserVmStateListener vs
        VolumeStateListener, server/src/main/java/com/cloud/storage/listener/
        VolumeStateListener.java @0d3489e), so a phase filter would silently drop them."""
        filters = self.filters
        if filters.phase is None:
            return self
        vm_only = filters.resource_types == ["VirtualMachine"]
        state_only = set(filters.categories) <= {"ResourceStateEvent"}
        if not (vm_only and state_only):
            raise ValueError(
                "filters.phase applies to VirtualMachine state events only (Volume, Snapshot "
                "and Network state events carry no pre/post status and arrive twice per "
                "transition): add `resourceTypes: [VirtualMachine]` (and no category other "
                "than ResourceStateEvent) next to `phase`, or remove `phase`"
            )
        return self


class Compatibility(_Model):
    model_config = ConfigDict(extra="allow")
    extra_keys = ("maxVersion",)

    cloudstack: str | None = None
    """A version range such as `>=4.21,<4.24` (syntax: schemas/versions.py)."""
    csext: str | None = None
    """The csext versions this extension works with; enforced on enable and load."""
    min_version: str | None = None
    """CloudStack's proposal: `compatibility.cloudstack.minVersion`."""

    @field_validator("cloudstack", mode="before")
    @classmethod
    def _cloudstack_proposal(cls, value: Any) -> Any:
        """CloudStack's proposal spells it `cloudstack: {minVersion: 4.20.0, maxVersion: ...}`."""
        if not isinstance(value, dict):
            return value
        unknown = set(value) - {"minVersion", "maxVersion"}
        if unknown:
            raise ValueError(
                f"unknown keys {sorted(unknown)}: use a range string like '>=4.20,<4.23' "
                "or {minVersion: 4.20, maxVersion: 4.22}"
            )
        clauses = [f">={value['minVersion']}"] if value.get("minVersion") else []
        clauses += [f"<={value['maxVersion']}"] if value.get("maxVersion") else []
        return ",".join(clauses) or None

    @field_validator("cloudstack", "csext")
    @classmethod
    def _range_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            VersionRange.parse(value)
        return value


class Spec(_Model):
    model_config = ConfigDict(extra="allow")
    extra_keys = ("details", "orchestrator", "customActions")
    """CloudStack's proposed manifest keys are kept as they are (PR #12102's
    util/ExtensionConfig.java: spec.details, spec.orchestrator.requiresPrepareVm,
    spec.customActions); any other unknown key is an error."""

    hook: HookType | None = None
    type: str | None = None
    """CloudStack's spelling of the hook (`Orchestrator`, `NetworkOrchestrator`)."""
    entrypoint: str | Entrypoint
    runtime: Runtime = Runtime.EXEC
    events: EventBinding = EventBinding()
    actions: list[str] = []
    timeout: Annotated[float, Field(gt=0, le=86400)] = 60.0
    retry: RetryPolicy = RetryPolicy()
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 4
    prefetch: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Deliveries a worker holds per queue, running or waiting for a run slot; at least
    `concurrency`. Default: `concurrency` (exec), 2 x `concurrency` (coprocess); see
    `effective_prefetch`."""
    enabled: bool = True
    env: dict[str, str] = {}
    secrets: list[Annotated[str, Field(pattern=SECRET_NAME_PATTERN)]] = []
    compatibility: Compatibility | None = None
    exit_codes: ExitCodes | None = None
    """What exit codes mean, over the hook's defaults (handlers/<hook>.py, docs/hooks/)."""
    failure_policy: FailurePolicy | None = None
    """On timeout, crash or invalid output: fail-closed, fail-open or error (default per hook)."""
    circuit_breaker: CircuitBreakerPolicy | None = None
    """Off by default; `circuitBreaker: {}` (or `true`) turns it on with 5 failures in 30 s
    opening it for 15 s (worker/breaker.py)."""
    idempotent_replies: bool = False
    """A call the broker redelivers (same correlation id, reply_to and body) after a lost
    channel gets the reply recorded for it instead of a second run (worker/replies.py).
    Read-only actions (status) get this without asking."""

    @field_validator("circuit_breaker", mode="before")
    @classmethod
    def _breaker_shorthand(cls, value: Any) -> Any:
        """`circuitBreaker: true` = the defaults; `false` = off."""
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("hook", mode="before")
    @classmethod
    def _hook_spelling(cls, value: Any) -> Any:
        """`hook: Orchestrator` means what `type: Orchestrator` means."""
        return parse_hook(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _hook_known(self) -> Spec:
        if self.hook is None:
            try:
                hook = parse_hook(self.type) if self.type else None
            except ValueError as exc:
                raise ValueError(f"type: {exc}") from None
            if hook is None:
                raise ValueError(f"spec.hook is required: one of {HOOK_NAMES}")
            object.__setattr__(self, "hook", hook)
        return self

    @model_validator(mode="after")
    def _prefetch_covers_concurrency(self) -> Spec:
        if self.prefetch is not None and self.prefetch < self.concurrency:
            raise ValueError(
                f"spec.prefetch ({self.prefetch}) is below spec.concurrency "
                f"({self.concurrency}): at most {self.prefetch} could ever run at once; "
                f"set it to at least {self.concurrency}, or leave it out"
            )
        return self

    @property
    def effective_prefetch(self) -> int:
        """The consumers' prefetch: `prefetch`, else `concurrency` for exec (a held delivery
        could wait minutes behind long runs while another worker idles) and 2 x `concurrency`
        for coprocess (short, high-rate runs: one spare delivery per slot keeps the warm
        processes busy between acks: +18 % events/s, bench/optimisations.md)."""
        if self.prefetch is not None:
            return self.prefetch
        if self.runtime is Runtime.COPROCESS:
            return min(2 * self.concurrency, 65535)
        return self.concurrency

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or "=" in key or "\0" in key or key.startswith("CSEXT_"):
                raise ValueError(
                    f"env name {key!r} is not allowed: use a plain name without '=' "
                    "that does not start with CSEXT_ (those are set by csext)"
                )
        return value

    @property
    def hook_type(self) -> HookType:
        assert self.hook is not None  # set by the validator
        return self.hook

    @property
    def entrypoint_path(self) -> str:
        return self.entrypoint if isinstance(self.entrypoint, str) else self.entrypoint.path


class Manifest(_Model):
    api_version: str = "csext/v1"
    kind: str = "Extension"
    metadata: Metadata
    source: Source = Source()
    spec: Spec

    @field_validator("api_version")
    @classmethod
    def _known_api(cls, value: str) -> str:
        if value not in API_VERSIONS:
            raise ValueError(f"apiVersion must be one of {', '.join(API_VERSIONS)}")
        return value

    @property
    def name(self) -> str:
        return self.metadata.name
