"""The contract between the worker and a hook type, and the machinery typed hooks share.

The worker knows nothing hook-specific: for every run it asks the extension's hook handler
to turn the caller's payload into the payload file, and to turn the raw
`{stdout, stderr, exit code}` into an outcome, a retry decision and a typed result.

`TypedHandler` does the common part for every hook in the catalog:

1. input: validate the caller's payload against the hook's input model (`ValueError` with the
   fields that are wrong, never their values when they are secret);
2. verdict: the exit code's meaning (`Meaning`) from the hook's defaults, the manifest's
   `spec.retry.retryableExitCodes` and `spec.exitCodes` (a list given there replaces the
   default list for that meaning), or timeout / crash / spawn failure;
3. result: the hook module parses stdout into its result model, or raises `Fallback`;
4. failure policy: on timeout, crash, invalid output or a `Fallback`, the caller gets the
   hook's fallback result (fail-closed: deny; fail-open: neutral) or an error (policy `error`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import orjson
from pydantic import BaseModel, ValidationError

from csext.schemas.hooks.common import (
    ExitCodes,
    FailurePolicy,
    HookInput,
    HookResult,
    Meaning,
)
from csext.schemas.manifest import HookType, Spec
from csext.schemas.rpc import RpcError
from csext.schemas.run import Outcome, RunResult

log = logging.getLogger(__name__)

CIRCUIT_OPEN = "circuit-open"
"""The error kind (and `fallback` mark) of answers given while a circuit breaker is open."""


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What a run means for its hook."""

    outcome: Outcome
    retry: bool = False
    """The run failed in a way the retry policy says to try again."""
    result: Any = None
    """The hook's typed result as JSON-able data (RPC reply `result`); None if none."""
    error: RpcError | None = None
    secrets: tuple[str, ...] = ()
    """Values found in the output that must be masked wherever the run is recorded or logged
    (e.g. the secret a two-factor `setup` returns)."""


@dataclass(frozen=True, slots=True)
class HookDefaults:
    """A hook's defaults, used when the manifest does not say otherwise."""

    timeout: float
    """Seconds (the manifest's `spec.timeout` wins when it is set)."""
    attempts: int
    """Total runs for events / retryable outcomes (the manifest's `spec.retry.attempts` wins)."""
    failure_policies: tuple[FailurePolicy, ...]
    """The policies this hook supports; the first is its default."""
    exit_codes: Mapping[int, Meaning] = field(default_factory=lambda: {0: Meaning.SUCCESS})
    unlisted: Meaning = Meaning.FAILURE
    """What an exit code no one lists means (events: retry, as DESIGN §4 says)."""


class HookHandler(Protocol):
    hook: HookType
    defaults: HookDefaults
    input_model: type[BaseModel]
    result_model: type[BaseModel] | None

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        """The content of the payload file the extension reads (argv[2])."""
        ...

    def interpret(
        self, action: str, run: RunResult, spec: Spec, payload: Any = None
    ) -> Interpretation:
        """`payload` is the caller's payload (as given to `payload_bytes`); domain-xml needs it
        to compare against, and to fall back to, the original XML."""
        ...

    def secret_values(self, action: str, payload: Any) -> tuple[str, ...]:
        """The credentials inside this payload: the worker masks them in records and logs."""
        ...

    @property
    def read_only_actions(self) -> frozenset[str]:
        """Actions that change nothing (status): a redelivered call may get its recorded reply
        (worker/replies.py) without the manifest asking for `idempotentReplies`."""
        ...

    def circuit_open(self, action: str, payload: Any, spec: Spec, message: str) -> Interpretation:
        """The answer while the extension's circuit breaker is open: the failure policy's
        (deny, no preference, the original XML) or an error, without running anything."""
        ...


def counts_against_breaker(interpretation: Interpretation) -> bool:
    """A run the circuit breaker counts as a failure: a timeout, a spawn failure, or an error
    the hook reports (crash, invalid output, an exit code that means the extension failed).
    A "no" (2FA code wrong, login refused) is an answer, not a failure."""
    return interpretation.error is not None or interpretation.outcome in _BREAKER_OUTCOMES


_BREAKER_OUTCOMES = frozenset({Outcome.TIMEOUT, Outcome.ERROR})


def should_retry(run: RunResult, spec: Spec) -> bool:
    """The manifest's retry policy applied to a raw run."""
    policy = spec.retry
    if run.timed_out:
        return policy.retry_on_timeout
    if run.error is not None:
        return False
    return run.exit_code is not None and run.exit_code in policy.retryable_exit_codes


def run_error(run: RunResult) -> RpcError | None:
    if run.error is not None:
        return RpcError(kind="spawn-failed", message=run.error)
    if run.timed_out:
        return RpcError(kind="timeout", message=f"extension timed out after {run.duration_ms} ms")
    return None


# --- secrets ---------------------------------------------------------------------------------

_CREDENTIAL_KEY = re.compile(
    r"pass(word|wd)?$|passphrase|secret|token|api_?key|private_?key|credential|2fa_?key",
    re.IGNORECASE,
)
_MIN_SECRET_LEN = 4
"""Shorter values are not masked: masking "ab" everywhere hides more than it protects."""


def find_secrets(payload: Any, names: Iterable[str] = ()) -> tuple[str, ...]:
    """String values under keys that are named secret or look like credentials, at any depth."""
    named = {n.lower() for n in names}
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                secret = str(key).lower() in named or bool(_CREDENTIAL_KEY.search(str(key)))
                values = value if isinstance(value, list) else [value]
                if secret and all(isinstance(v, str | int) for v in values):
                    found.extend(str(v) for v in values if len(str(v)) >= _MIN_SECRET_LEN)
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(payload)
    return tuple(dict.fromkeys(found))


def scrub(text: str, secrets: Iterable[str], mask: str = "***") -> str:
    """`text` with every secret value replaced by `mask`, longest first."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, mask)
    return text


# --- input -----------------------------------------------------------------------------------


def describe_input_error(
    error: ValidationError, hook: str, action: str, secret_fields: Iterable[str]
) -> str:
    """One message naming each bad field; values are shown only for non-secret fields."""
    secret = {s.lower() for s in secret_fields}
    problems = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        where = ".".join(loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        hidden = any(p.lower() in secret or _CREDENTIAL_KEY.search(p) for p in loc)
        show = not hidden and item["type"] != "missing" and not isinstance(got, dict | list)
        problems.append(f"{where}: {message}" + (f" (got {got!r:.60})" if show else ""))
    return (
        f"payload for {hook} action {action!r} does not fit: "
        + "; ".join(problems)
        + f" (see `csext schema {hook}`)"
    )


# --- output ----------------------------------------------------------------------------------


class Fallback(Exception):
    """Raised by a hook's parser: no usable answer, apply the failure policy."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


def stdout_text(run: RunResult) -> str:
    return run.stdout.decode("utf-8", "replace").strip()


NO_JSON = object()


def parse_json(text: str) -> Any:
    """`text` as JSON, else its last non-empty line as JSON, else `NO_JSON`.

    The last-line rule tolerates scripts that print progress before their one JSON answer.
    """
    for candidate in (text, text.rsplit("\n", 1)[-1].strip()):
        if candidate:
            try:
                return orjson.loads(candidate)
            except orjson.JSONDecodeError:
                continue
    return NO_JSON


def stdout_object(run: RunResult) -> dict[str, Any] | None:
    """stdout as a JSON object, or None when it is empty or not one."""
    value = parse_json(stdout_text(run))
    return value if isinstance(value, dict) else None


def status_problem(answer: Mapping[str, Any] | None) -> str | None:
    """A message when the JSON answer's `status` says something other than success."""
    if answer is None or "status" not in answer:
        return None
    status = str(answer.get("status", "")).strip().lower()
    if status in ("success", "ok", "true"):
        return None
    reason = answer.get("error") or answer.get("message") or ""
    return f"status {answer.get('status')!r}" + (f": {reason}" if reason else "")


def truthy(value: Any) -> bool:
    """JSON booleans, and the strings CloudStack scripts print for them."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "on")
    return bool(value)


# --- verdict ---------------------------------------------------------------------------------


def exit_meanings(spec: Spec, defaults: HookDefaults) -> dict[int, Meaning]:
    """Exit code → meaning: hook defaults, then the retry policy, then `spec.exitCodes`."""
    meanings = dict(defaults.exit_codes)
    for code in spec.retry.retryable_exit_codes:
        meanings.setdefault(code, Meaning.RETRY)
    overrides: ExitCodes | None = spec.exit_codes
    if overrides is not None:
        for meaning, codes in overrides.as_lists().items():
            if codes:  # a given list replaces the default list for that meaning
                meanings = {c: m for c, m in meanings.items() if m != meaning}
        meanings.update(overrides.as_map())
    return meanings


def crash_of(run: RunResult) -> Fallback | None:
    """A Fallback for runs with no exit code to interpret: spawn failure, timeout, signal."""
    if run.error is not None:
        return Fallback("spawn-failed", run.error)
    if run.timed_out:
        return Fallback("timeout", f"extension timed out after {run.duration_ms} ms")
    if run.exit_code is None or run.exit_code < 0:
        signal = -(run.exit_code or 0)
        return Fallback("crashed", f"extension was killed by signal {signal}")
    return None


# --- the shared handler ----------------------------------------------------------------------


class TypedHandler:
    """Base class of the hook modules; subclasses set the class attributes and `parse`."""

    hook: ClassVar[HookType]
    defaults: ClassVar[HookDefaults]
    input_model: ClassVar[type[HookInput]]
    result_model: ClassVar[type[HookResult] | None]
    actions: ClassVar[tuple[str, ...] | None] = None
    """Known actions, lowercase; None accepts any action."""
    read_only_actions: ClassVar[frozenset[str]] = frozenset()
    """Actions that change nothing (HookHandler.read_only_actions)."""

    # -- input

    def check_action(self, action: str) -> str:
        name = action.strip().lower()
        if self.actions is not None and name not in self.actions:
            raise ValueError(
                f"{self.hook.value} has no action {action!r}: use one of {', '.join(self.actions)}"
            )
        return name

    def validate(self, action: str, payload: Any) -> HookInput:
        name = self.check_action(action)
        if not isinstance(payload, Mapping):
            raise ValueError(
                f"payload for {self.hook.value} action {action!r} must be a JSON object, "
                f"got {type(payload).__name__} (see `csext schema {self.hook.value}`)"
            )
        try:
            return self.input_model.model_validate(dict(payload), context={"action": name})
        except ValidationError as error:
            raise ValueError(
                describe_input_error(error, self.hook.value, action, self.input_model.secret_fields)
            ) from None

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        model = self.validate(action, payload)
        return orjson.dumps(model.model_dump(mode="json", by_alias=True))

    def secret_values(self, action: str, payload: Any) -> tuple[str, ...]:
        return find_secrets(payload, self.input_model.secret_fields)

    # -- output

    def policy(self, spec: Spec) -> FailurePolicy:
        allowed = self.defaults.failure_policies
        wanted = spec.failure_policy
        if wanted is None or wanted in allowed:
            return wanted or allowed[0]
        log.warning(
            "failurePolicy %s is not supported by %s hooks; using %s",
            wanted,
            self.hook.value,
            allowed[0],
        )
        return allowed[0]

    def interpret(
        self, action: str, run: RunResult, spec: Spec, payload: Any = None
    ) -> Interpretation:
        name = action.strip().lower()
        crash = crash_of(run)
        if crash is not None:
            return self.fall_back(name, run, spec, payload, crash)
        meaning = exit_meanings(spec, self.defaults).get(run.exit_code or 0, self.unlisted(action))
        try:
            result = self.parse(name, meaning, run, payload)
        except Fallback as fallback:
            return self.fall_back(name, run, spec, payload, fallback, meaning)
        outcome = Outcome.SUCCESS if meaning == Meaning.SUCCESS else Outcome.FAILED
        return Interpretation(
            outcome=outcome,
            retry=meaning == Meaning.RETRY,
            result=result.model_dump(mode="json", by_alias=True) if result else None,
            secrets=self.result_secrets(result),
        )

    def unlisted(self, action: str) -> Meaning:
        """What an exit code no one lists means for this action."""
        return self.defaults.unlisted

    def fall_back(
        self,
        action: str,
        run: RunResult,
        spec: Spec,
        payload: Any,
        why: Fallback,
        meaning: Meaning | None = None,
    ) -> Interpretation:
        result = self.policy_result(action, payload, spec, why.kind)
        retry = spec.retry.retry_on_timeout if run.timed_out else meaning == Meaning.RETRY
        outcome = run.outcome if run.outcome != Outcome.SUCCESS else Outcome.FAILED
        return Interpretation(
            outcome=outcome,
            retry=retry,
            result=result,
            error=RpcError(kind=why.kind, message=why.message),
        )

    def policy_result(self, action: str, payload: Any, spec: Spec, kind: str) -> Any:
        """The failure policy's result (marked `fallback: <kind>`), or None under `error`."""
        policy = self.policy(spec)
        if policy == FailurePolicy.ERROR:
            return None
        neutral = self.fallback_result(action, payload, policy)
        if neutral is None:
            return None
        return neutral.model_copy(update={"fallback": kind}).model_dump(mode="json", by_alias=True)

    def circuit_open(self, action: str, payload: Any, spec: Spec, message: str) -> Interpretation:
        result = self.policy_result(action.strip().lower(), payload, spec, CIRCUIT_OPEN)
        return Interpretation(
            outcome=Outcome.CIRCUIT_OPEN,
            result=result,
            error=RpcError(kind=CIRCUIT_OPEN, message=message),
        )

    # -- per hook

    def parse(self, action: str, meaning: Meaning, run: RunResult, payload: Any) -> HookResult:
        """stdout + meaning → result; raise Fallback when there is no usable answer."""
        raise NotImplementedError

    def fallback_result(
        self, action: str, payload: Any, policy: FailurePolicy
    ) -> HookResult | None:
        """The result the caller gets under a fail-closed / fail-open policy."""
        return None

    def result_secrets(self, result: HookResult | None) -> tuple[str, ...]:
        return ()


def failed(meaning: Meaning, run: RunResult, answer: Mapping[str, Any] | None = None) -> Fallback:
    """The Fallback for a non-success exit, with the extension's own error text when given."""
    reason = ""
    if answer:
        reason = str(answer.get("error") or answer.get("message") or "")
    if not reason:
        reason = stdout_text(run)[-300:] or run.stderr_tail(300).strip()
    kind = "retry" if meaning == Meaning.RETRY else "failed"
    return Fallback(kind, f"exit code {run.exit_code}" + (f": {reason}" if reason else ""))


class GenericHandler:
    """Runs every extension the same way: JSON payload in, raw stdout/exit code out."""

    defaults = HookDefaults(timeout=60.0, attempts=3, failure_policies=(FailurePolicy.ERROR,))
    input_model: type[BaseModel] = HookInput
    result_model: type[BaseModel] | None = None

    read_only_actions: frozenset[str] = frozenset()

    def __init__(self, hook: HookType) -> None:
        self.hook = hook

    def circuit_open(self, action: str, payload: Any, spec: Spec, message: str) -> Interpretation:
        return Interpretation(
            outcome=Outcome.CIRCUIT_OPEN, error=RpcError(kind=CIRCUIT_OPEN, message=message)
        )

    def payload_bytes(self, action: str, payload: Any, spec: Spec) -> bytes:
        return orjson.dumps(payload)

    def interpret(
        self, action: str, run: RunResult, spec: Spec, payload: Any = None
    ) -> Interpretation:
        return Interpretation(
            outcome=run.outcome, retry=should_retry(run, spec), error=run_error(run)
        )

    def secret_values(self, action: str, payload: Any) -> tuple[str, ...]:
        return find_secrets(payload)


def effective_timeout(spec: Spec, defaults: HookDefaults) -> float:
    """The manifest's `spec.timeout` when it sets one, else the hook's default."""
    return spec.timeout if "timeout" in spec.model_fields_set else defaults.timeout


def effective_attempts(spec: Spec, defaults: HookDefaults) -> int:
    """The manifest's `spec.retry.attempts` when it sets one, else the hook's default."""
    if "retry" in spec.model_fields_set and "attempts" in spec.retry.model_fields_set:
        return spec.retry.attempts
    return defaults.attempts
