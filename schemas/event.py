"""CloudStack's event bus as it appears on RabbitMQ: routing keys and bodies.

CloudStack (RabbitMQEventBus.createRoutingKey) builds
`<source>.<category>.<type>.<resourceType>.<resourceUUID>`, replacing `.` by `-` inside each
part and an empty or null part by a literal `*`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

CATEGORIES = ("ActionEvent", "AlertEvent", "UsageEvent", "ResourceStateEvent", "AsyncJobEvent")


def escape_part(part: str | None) -> str:
    """One routing-key part exactly as CloudStack writes it."""
    if not part:
        return "*"
    return part.replace(".", "-")


def build_routing_key(
    category: str,
    event_type: str | None,
    resource_type: str | None = None,
    resource_uuid: str | None = None,
    source: str = "management-server",
) -> str:
    parts = (source, category, event_type, resource_type, resource_uuid)
    return ".".join(escape_part(p) for p in parts)


class CloudStackEvent(BaseModel):
    """The payload an `event` extension receives: routing-key parts plus the parsed body."""

    model_config = ConfigDict(frozen=True)

    routing_key: str
    source: str | None
    category: str | None
    type: str | None
    resource_type: str | None
    resource_uuid: str | None
    body: dict[str, Any]

    @classmethod
    def from_delivery(cls, routing_key: str, body: dict[str, Any]) -> CloudStackEvent:
        return cls(**event_fields(routing_key, body))


def event_fields(routing_key: str, body: dict[str, Any]) -> dict[str, Any]:
    """The fields of `CloudStackEvent` as a plain dict (the event hot path skips the model):
    routing-key parts, `*` read back as None, all None when the key has not 5 parts."""
    parts: list[str | None] = [None if p == "*" else p for p in routing_key.split(".")]
    if len(parts) != 5:
        parts = [None] * 5
    return {
        "routing_key": routing_key,
        "source": parts[0],
        "category": parts[1],
        "type": parts[2],
        "resource_type": parts[3],
        "resource_uuid": parts[4],
        "body": body,
    }


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more words."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])
