"""The csext exception tree.

    CsextError
    ├── ConfigError            settings or CLI input that cannot work
    ├── ManifestError          an extension.yaml that does not validate (names file + field)
    ├── ExtensionNotFound      no such extension in the registry
    ├── BrokerUnavailable      RabbitMQ could not be reached
    └── CallFailed             an RPC call got no usable answer
        └── CallTimeout        ... within its deadline

Control flow inside the event path uses `RetryableRun` (tenacity retries it) and
`DeadLetter` (settle the delivery by dead-lettering it with a reason).
"""

from __future__ import annotations

from pydantic import ValidationError


class CsextError(Exception):
    """Root of every error csext raises on purpose. `fix`, when known, says what to do; the
    CLI prints it on a line of its own under the error."""

    fix: str | None = None

    def __init__(self, *args: object, fix: str | None = None) -> None:
        super().__init__(*args)
        if fix is not None:
            self.fix = fix


class ConfigError(CsextError):
    pass


class ManifestError(CsextError):
    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class ExtensionNotFound(CsextError):
    pass


class BrokerUnavailable(CsextError):
    pass


class CallFailed(CsextError):
    pass


class CallTimeout(CallFailed):
    pass


class RetryableRun(Exception):
    """An extension run failed in a way its retry policy says to try again."""


class DeadLetter(Exception):
    """Settle this delivery by dead-lettering it; `reason` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def describe_validation_error(error: ValidationError, *, prefix: str = "") -> list[str]:
    """One line per problem: `field: what is wrong (got X)`."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if prefix:
            field = f"{prefix}.{field}" if item["loc"] else prefix
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if item["type"] == "missing" or isinstance(got, dict) else f" (got {got!r:.60})"
        lines.append(f"{field}: {message}{shown}")
    return lines


def summarize_validation_error(error: ValidationError, *, prefix: str = "", limit: int = 3) -> str:
    """The first `limit` problems on one line, each with its field path (for dead-letter
    reasons and `bad-payload` errors, which travel in one header or log line)."""
    lines = describe_validation_error(error, prefix=prefix)
    more = len(lines) - limit
    return "; ".join(lines[:limit]) + (f"; and {more} more" if more > 0 else "")
